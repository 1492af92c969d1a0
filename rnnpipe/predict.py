"""Prediction with the registry's champion (or any model URI), for a few texts or a stream.

`rnnpipe predict TEXT...` labels texts given on the command line. `rnnpipe predict -i FILE`
streams a file (or `-` for stdin) in batches, so memory stays flat on millions of lines:
`label<TAB>text` or one text a line, CSV with a `text` column, or JSONL with a `text` field.
Each output row keeps the input's columns and adds `predicted`, `probability` and a
`prob_<label>` per class, as CSV or JSONL (`-o FILE`, by suffix; JSONL on stdout). When the input
has a `label` column, accuracy and macro-F1 on it are printed at the end.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any

import numpy as np

from rnnpipe.config import Params, load_params, model_name
from rnnpipe.console import Progress
from rnnpipe.errors import DataError, RnnpipeError
from rnnpipe.metrics import scores
from rnnpipe.paths import MODEL_FILE, PARAMS_FILE, PREPROCESSING_FILE, VOCAB_FILE

BATCH = 1024
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")


@dataclass
class Predictor:
    """A loaded classifier and where it came from (`models:/name@champion (v3)`)."""

    classifier: Any  # rnnpipe.model.classifier.TextClassifier
    source: str

    @property
    def labels(self) -> list[str]:
        """The classes, in probability-column order."""
        return self.classifier.vocab.labels

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """`[n, classes]` probabilities for raw texts."""
        return self.classifier.predict_proba(texts, batch_size=BATCH)


def find_params(project: Path | None,
                overrides: dict[str, Any] | None = None) -> Params | None:
    """The project's params (`--project`, else the working directory) with `-S` overrides, or
    None outside a project."""
    path = (project or Path(".")) / PARAMS_FILE
    if project is not None and not path.exists():
        raise RnnpipeError(f"{path}: no such file: --project must be an rnnpipe project")
    return load_params(path, overrides) if path.exists() else None


def champion_uri(params: Params | None, project: Path | None) -> str:
    """`models:/<name>@champion` for the project's lineage (or the store's only model)."""
    from rnnpipe.tracking.registry import LOCK_SUFFIX, champion
    from rnnpipe.tracking.store import client

    store = client(params, create=False, root=project) if params is not None else _env_client()
    if params is not None:
        name = model_name(params)
    else:
        names = sorted(m.name for m in store.search_registered_models()
                       if not m.name.endswith(LOCK_SUFFIX))
        if len(names) != 1:
            raise RnnpipeError(
                f"no project here (no {PARAMS_FILE}) and the store has "
                f"{len(names)} registered models ({', '.join(names) or 'none'}); give "
                f"--project DIR or -m models:/NAME@champion")
        name = names[0]
    version = champion(store, name)
    if version is None:
        raise RnnpipeError(f"{name} has no champion yet; run the pipeline (make run), or give "
                           f"-m local for the workspace's model")
    return f"models:/{name}@champion (v{version.version})"


def _env_client():
    """A client for `MLFLOW_TRACKING_URI` (outside a project), never creating a store."""
    from rnnpipe.tracking.store import RetryingClient, sqlite_file

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise RnnpipeError(f"no project here (no {PARAMS_FILE}) and MLFLOW_TRACKING_URI is not "
                           f"set; give --project DIR, or set MLFLOW_TRACKING_URI and -m")
    database = sqlite_file(uri)
    if database is not None and not database.exists():
        raise RnnpipeError(f"{database}: no MLflow store there (MLFLOW_TRACKING_URI)")
    from mlflow.tracking import MlflowClient

    return RetryingClient(MlflowClient(uri), uri)


def load_predictor(model_uri: str | None = None, project: Path | None = None,
                   overrides: dict[str, Any] | None = None) -> Predictor:
    """The classifier behind `model_uri` (any MLflow model URI, or `local` for the workspace's
    `models/model.keras`); by default the champion of the project's lineage."""
    from rnnpipe.model.classifier import TextClassifier

    params = find_params(project, overrides)
    root = project or Path(".")
    if model_uri == "local":
        return Predictor(TextClassifier.load(root / MODEL_FILE, root / VOCAB_FILE,
                                             root / PREPROCESSING_FILE),
                         f"{root / MODEL_FILE} (workspace)")
    source = model_uri or champion_uri(params, project)
    uri = source.split(" ")[0]
    import mlflow

    from rnnpipe.tracking.store import client, fluent

    if params is not None:  # models:/ and runs:/ resolve in the project's store
        store = client(params, create=False, root=project)
    elif uri.startswith(("models:/", "runs:/")) or os.environ.get("MLFLOW_TRACKING_URI"):
        store = _env_client()  # never MLflow's default store, which it would create here
    else:
        store = None  # a path or file: URI needs no store
    try:
        with fluent(store) if store is not None else contextlib.nullcontext():
            model = mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # MLflow raises many types; the user needs the URI and the reason
        raise RnnpipeError(f"{uri}: cannot load the model: {exc}") from None
    return Predictor(model.unwrap_python_model().classifier, source)


# --- reading and writing streams --------------------------------------------------------------

def input_format(name: str, first_line: str) -> str:
    """`csv`, `jsonl`, `tsv` (label<TAB>text) or `text` (one text a line)."""
    suffix = Path(name).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in JSON_SUFFIXES or (name == "-" and first_line.lstrip().startswith("{")):
        return "jsonl"
    return "tsv" if "\t" in first_line else "text"


def read_rows(stream: IO[str], name: str) -> Iterator[dict[str, Any]]:
    """Rows with a `text` (and maybe `label`, `id`, ...) from an input stream; a malformed line
    is a `DataError` naming it."""
    first = stream.readline()
    if not first:
        return
    fmt = input_format(name, first)
    lines = _chain(first, stream)
    if fmt == "csv":
        reader = csv.DictReader(lines)
        if "text" not in (reader.fieldnames or []):
            raise DataError(f"{name}:1: a CSV input needs a 'text' column, found "
                            f"{reader.fieldnames}")
        try:
            for row in reader:
                if row.get("text") is None:
                    raise DataError(f"{name}:{reader.line_num}: missing the text column")
                yield row
        except csv.Error as exc:
            raise DataError(f"{name}:{reader.line_num}: malformed CSV: {exc}") from None
        return
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if fmt == "jsonl":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{name}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise DataError(f"{name}:{number}: a JSONL line needs a string 'text' field")
            yield row
        elif fmt == "tsv":
            label, sep, text = line.partition("\t")
            if not sep:
                raise DataError(f"{name}:{number}: expected label<TAB>text (the first line had "
                                f"a tab, so every line needs one)")
            yield {"label": label, "text": text}
        else:
            yield {"text": line}


def _chain(first: str, stream: IO[str]) -> Iterator[str]:
    yield first
    yield from stream


class RowWriter:
    """Writes prediction rows as CSV (header from the first row) or JSON lines."""

    def __init__(self, stream: IO[str], as_csv: bool) -> None:
        self.stream, self.as_csv = stream, as_csv
        self.writer: csv.DictWriter | None = None

    def write(self, row: dict[str, Any]) -> None:
        """One output row."""
        if not self.as_csv:
            self.stream.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        if self.writer is None:
            self.writer = csv.DictWriter(self.stream, fieldnames=list(row), lineterminator="\n",
                                         extrasaction="ignore")
            self.writer.writeheader()
        self.writer.writerow(row)


def predict_stream(predictor: Predictor, rows: Iterator[dict[str, Any]], writer: RowWriter,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Predict `rows` in batches, writing each output row; returns counts and, when the rows
    carry labels, accuracy and macro-F1 on them."""
    from rnnpipe.model.classifier import probability_column

    labels = predictor.labels
    ids = {label: i for i, label in enumerate(labels)}
    y_true: list[int] = []
    y_pred: list[int] = []
    unknown: set[str] = set()
    total = 0
    while batch := list(islice(rows, BATCH)):
        probs = predictor.probabilities([str(row["text"]) for row in batch])
        picked = probs.argmax(axis=1)
        for row, p, i in zip(batch, probs, picked, strict=True):
            out = {**row, "predicted": labels[i], "probability": round(float(p[i]), 4),
                   **{probability_column(label): round(float(p[j]), 4)
                      for j, label in enumerate(labels)}}
            writer.write(out)
            if "label" in row:
                y_true.append(ids.get(str(row["label"]), -1))
                y_pred.append(int(i))
                if str(row["label"]) not in ids:
                    unknown.add(str(row["label"]))
        total += len(batch)
        if progress is not None:
            progress.update(len(batch))
    result: dict[str, Any] = {"documents": total}
    if y_true:
        result.update(scores(np.array(y_true), np.array(y_pred), len(labels)),
                      labelled=len(y_true), unknown_labels=sorted(unknown))
    return result


def predict_file(predictor: Predictor, source: str, destination: str | None) -> dict[str, Any]:
    """`rnnpipe predict -i SOURCE [-o DESTINATION]`: stream a file or stdin (`-`) through the
    model; the output file is written to a temporary name and renamed when complete."""
    if source != "-" and not Path(source).is_file():
        raise DataError(f"{source}: no such file")
    progress = Progress("predict")
    with contextlib.ExitStack() as stack:
        in_stream = sys.stdin if source == "-" else stack.enter_context(
            open(source, encoding="utf-8-sig", newline=""))
        result = _predict_rows(predictor, read_rows(in_stream, source), source, destination,
                               progress)
    progress.close()
    return result


def _predict_rows(predictor: Predictor, rows: Iterator[dict[str, Any]], source: str,
                  destination: str | None, progress: Progress) -> dict[str, Any]:
    from rnnpipe.io import atomic_open

    try:
        if destination is None:
            result = predict_stream(predictor, rows, RowWriter(sys.stdout, as_csv=False),
                                    progress)
        else:
            as_csv = Path(destination).suffix.lower() == ".csv"
            with atomic_open(destination, newline="" if as_csv else "\n") as out:
                result = predict_stream(predictor, rows, RowWriter(out, as_csv), progress)
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text ({exc.reason})") from None
    return result
