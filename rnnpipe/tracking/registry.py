"""The model as MLflow keeps it: a raw-text pyfunc, registered, and a promotion gate that
compares like with like.

Every evaluated model becomes a new version of its registered model (`register.model_name`;
`auto` names one lineage per dataset) with alias `candidate`. The gate then re-scores the current
`champion` on the candidate's own test split (both take raw text) and moves `champion` to the
candidate only if it scores at least as well, plus `register.min_improvement`, on
`register.metric`. A candidate whose labels differ from the champion's is another task: it is not
registered under that name, and the reason names both label sets. Every decision (both scores,
the data's DVC hash, the reason) is recorded on the version. Gates are serialised by a lock kept
in the registry itself, so it holds for a SQLite store and a tracking server alike.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rnnpipe.errors import RnnpipeError
from rnnpipe.metrics import scores
from rnnpipe.tracking.runs import RunLog
from rnnpipe.tracking.store import RetryingClient, fluent

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models import ModelSignature

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # rnnpipe/
CANDIDATE, CHAMPION = "candidate", "champion"
LOCK_SUFFIX = "--gate-lock"
LOCK_STALE_S = 1800.0  # a gate lock older than this was left by a process that died
SCORE_BATCH = 512
# What loading the logged model imports (model/training.py and embeddings.py are training-only).
SERVED_MODULES = ("__init__", "backend", "lstm", "network", "text", "vocabulary", "classifier",
                  "pyfunc_model")


@dataclass(frozen=True)
class Decision:
    """What the gate decided for one candidate."""

    name: str
    version: str | None  # None when the candidate was refused (another task)
    promoted: bool
    reason: str

    @property
    def role(self) -> str:
        """The alias the candidate holds now (`refused`: not registered under `name`)."""
        return "refused" if self.version is None else CHAMPION if self.promoted else CANDIDATE


def signature_for(labels: list[str]) -> ModelSignature:
    """Input: one unnamed string column; output: `label` and a `prob_<label>` per class (what
    `TextClassifier.predict` returns).

    Unnamed (what MLflow infers from a list), because MLflow's schema enforcement turns a list
    of strings into a DataFrame with column `0`, which a signature naming the column `text`
    rejects; a DataFrame with a `text` column passes either way. Written out rather than
    inferred by running the model, which would load it a second time.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from rnnpipe.model.classifier import probability_column

    outputs = [ColSpec("string", "label"),
               *(ColSpec("double", probability_column(label)) for label in labels)]
    return ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema(outputs))


def model_code(folder: Path) -> Path:
    """A copy of the code the served model runs (`rnnpipe/` with only `errors.py` and the
    `model` package) in `folder`: the pyfunc never carries the steps, Prefect or DVC."""
    code = folder / "rnnpipe"
    (code / "model").mkdir(parents=True)
    (code / "__init__.py").write_text('"""rnnpipe\'s model code, as logged with a model."""\n',
                                      encoding="utf-8")
    shutil.copy2(PACKAGE_DIR / "errors.py", code / "errors.py")
    for module in SERVED_MODULES:
        shutil.copy2(PACKAGE_DIR / "model" / f"{module}.py", code / "model" / f"{module}.py")
    return code


def log_model(run: RunLog, labels: list[str], texts_example: list[str],
              artifacts: dict[str, Path], train_digest: str) -> str:
    """Log the training data as a dataset input (its source, DVC hash and schema: a reference,
    not a copy, so a corpus of any size costs nothing here) and the classifier as a raw-text
    pyfunc on `run` (artifacts: `model`, `vocab`, `preprocessing`); return the model URI."""
    import mlflow
    import pandas as pd
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    from rnnpipe.model.classifier import pip_requirements

    # Every local path matches two registered "local" source classes, so resolving a plain path
    # warns; naming the source type builds the same source without the guess.
    source = get_dataset_source_from_json(json.dumps({"uri": "data/train.tsv"}), "local")
    with tempfile.TemporaryDirectory(prefix="rnnpipe-model-code-") as tmp, \
            fluent(run.client), mlflow.start_run(run_id=run.run_id):
        columns = Schema([ColSpec("string", "text"), ColSpec("string", "label")])
        dataset = MetaDataset(source, name="train", digest=train_digest, schema=columns)
        mlflow.log_input(dataset, context="training")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PACKAGE_DIR / "model" / "pyfunc_model.py"),
            code_paths=[str(model_code(Path(tmp)))],
            artifacts={k: str(v) for k, v in artifacts.items() if Path(v).exists()},
            signature=signature_for(labels),
            input_example=pd.DataFrame({"text": texts_example}),
            pip_requirements=pip_requirements(),
        )
    return info.model_uri


@contextlib.contextmanager
def gate_lock(client: RetryingClient, name: str, timeout_s: float = 3600.0) -> Iterator[None]:
    """Hold the promotion gate of `name` exclusively, across processes and machines.

    The lock is a registered model `<name>--gate-lock`: creating a registered model is atomic in
    every MLflow store (a unique name), so whoever creates it holds the gate; it is deleted when
    the gate is done. One left by a process that died is taken over after `LOCK_STALE_S`, or at
    once when its holder was a process on this machine that no longer exists.
    """
    from mlflow.exceptions import MlflowException

    lock = f"{name}{LOCK_SUFFIX}"
    holder = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + timeout_s
    said = 0.0
    while True:
        try:
            client.create_registered_model(lock, tags={
                "rnnpipe.lock": "gate", "rnnpipe.lock.holder": holder,
                "rnnpipe.lock.acquired": f"{time.time():.3f}"},
                description=f"rnnpipe's promotion gate of {name} is in use by {holder}; "
                            f"deleted when it is done")
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        if _stale(client, lock):
            with contextlib.suppress(MlflowException):
                client.delete_registered_model(lock)
            continue
        if time.monotonic() > deadline:
            raise RnnpipeError(f"register: the promotion gate of {name} stayed locked for "
                               f"{timeout_s:.0f} s (registered model {lock}); delete it if its "
                               f"holder is gone")
        if time.monotonic() - said > 30:
            print(f"register: waiting for the promotion gate of {name} (another run is "
                  f"gating a model)", flush=True)
            said = time.monotonic()
        time.sleep(0.2 + 0.3 * np.random.random())
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(lock)


def _stale(client: RetryingClient, lock: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(lock).tags
    except MlflowException:
        return False  # released meanwhile: try again
    host, _, pid = tags.get("rnnpipe.lock.holder", "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
        return True
    return time.time() - float(tags.get("rnnpipe.lock.acquired", 0)) > LOCK_STALE_S


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def champion(client: RetryingClient, name: str) -> ModelVersion | None:
    """The version holding alias `champion`, or None when there is none yet.

    Only "not found" means no champion: any other error (a store that stays locked) must not
    let the gate promote as if this were the first model.
    """
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        # The SQL store answers a missing alias with INVALID_PARAMETER_VALUE, a missing model
        # with RESOURCE_DOES_NOT_EXIST.
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def version_labels(version: ModelVersion) -> list[str]:
    """The labels a registered version predicts (its tag, else its signature's outputs)."""
    if "rnnpipe.labels" in version.tags:
        return json.loads(version.tags["rnnpipe.labels"])
    from mlflow.models import get_model_info

    from rnnpipe.model.classifier import PROBABILITY_PREFIX

    outputs = get_model_info(f"models:/{version.name}/{version.version}").signature.outputs
    return [c.name.removeprefix(PROBABILITY_PREFIX) for c in outputs.inputs
            if c.name and c.name.startswith(PROBABILITY_PREFIX)]


def score_version(name: str, version: str, texts: list[str], labels: list[str],
                  classes: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 of a registered version on raw `texts` with true `labels`."""
    import mlflow

    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    predicted = []
    for start in range(0, len(texts), SCORE_BATCH):
        predicted += list(model.predict(texts[start:start + SCORE_BATCH])["label"])
    ids = {label: i for i, label in enumerate(classes)}
    return scores(np.array([ids[x] for x in labels]),
                  np.array([ids.get(x, -1) for x in predicted]), len(classes))


def _version_tags(client: RetryingClient, name: str, version: str, tags: dict) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def gate(client: RetryingClient, run: RunLog, name: str, model_uri: str, metric: str,
         min_improvement: float, candidate: dict[str, float], labels: list[str],
         test: tuple[list[str], list[str]], data_md5: str) -> Decision:
    """Register `model_uri` under `name` and decide whether it becomes champion (see the module
    docstring). `candidate` holds its test `accuracy` and `macro_f1`; `test` is the (texts,
    labels) they were computed on, whose DVC hash is `data_md5`."""
    import mlflow

    with gate_lock(client, name):
        current = champion(client, name)
        if current is not None:
            with fluent(client):
                theirs = version_labels(current)
            if sorted(theirs) != sorted(labels):
                return Decision(name, None, False, (
                    f"refused: {name}'s champion v{current.version} predicts {sorted(theirs)}, "
                    f"this model predicts {sorted(labels)}: another task; use "
                    f"register.model_name: auto (a lineage per dataset) or another name"))
        # register_model prints "Successfully registered ..." straight to stderr; the gate's
        # decision is reported in one line instead.
        with contextlib.redirect_stderr(io.StringIO()), fluent(client):
            version = str(mlflow.register_model(model_uri, name).version)
        client.set_registered_model_alias(name, CANDIDATE, version)
        ours = candidate[metric]
        shown = f"test {metric} on data md5 {data_md5[:8]} ({len(test[0])} documents)"
        if current is None:
            promoted, theirs_score = True, None
            reason = f"first model: {shown} {ours:.4f}"
        else:
            with fluent(client):
                theirs_score = score_version(name, current.version, test[0], test[1],
                                             labels)[metric]
            needed = theirs_score + min_improvement
            promoted = ours >= needed
            margin = f" + min_improvement {min_improvement:g}" if min_improvement else ""
            reason = (f"{shown}: this model {ours:.4f} {'>=' if promoted else '<'} champion "
                      f"v{current.version}'s {theirs_score:.4f}{margin} (re-scored on the "
                      f"same data)")
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, version)
        decision = Decision(name, version, promoted, reason)
        _version_tags(client, name, version, {
            "rnnpipe.labels": json.dumps(labels, ensure_ascii=False), "run_id": run.run_id,
            "test_accuracy": candidate["accuracy"], "test_macro_f1": candidate["macro_f1"],
            "rnnpipe.data_md5": data_md5, "rnnpipe.gate.metric": metric,
            "rnnpipe.gate.candidate_score": ours,
            "rnnpipe.gate.champion_score": "" if theirs_score is None else theirs_score,
            "rnnpipe.gate.champion_version": "" if current is None else current.version,
            "promotion": decision.role, "promotion_reason": reason})
        client.update_model_version(name, version, description=(
            f"{'promoted to champion' if promoted else 'kept as candidate'}: {reason}"))
    return decision


def promote_by_hand(client: RetryingClient, name: str, version: str, reason: str) -> str:
    """Move `champion` to `version` of `name`, recording who did it and why on both versions."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise RnnpipeError(f"{name} v{version}: no such registered model version") from None
    who = os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"
    note = f"promoted by hand by {who}: {reason}"
    with gate_lock(client, name):
        previous = champion(client, name)
        client.set_registered_model_alias(name, CHAMPION, version)
        _version_tags(client, name, version, {"promotion": CHAMPION, "promotion_reason": note,
                                              "rnnpipe.promoted_by": who})
        if previous is not None and str(previous.version) != version:
            _version_tags(client, name, previous.version, {
                "promotion": "replaced", "promotion_reason": f"replaced by v{version} by hand "
                f"by {who}: {reason}"})
    return note


def registry_rows(client: RetryingClient, names: list[str] | None = None) -> list[dict]:
    """Every version of rnnpipe's registered models (or of `names`), newest first, with its
    aliases, test scores, data hash and the gate's decision."""
    models = [m.name for m in client.search_registered_models()
              if not m.name.endswith(LOCK_SUFFIX)] if names is None else names
    rows = []
    for model in sorted(models):
        # Versions found by search carry no aliases; the registered model maps them.
        aliases = client.get_registered_model(model).aliases or {}
        for v in client.search_model_versions(f"name = '{model}'"):
            rows.append({"name": model, "version": int(v.version),
                         "aliases": sorted(a for a, n in aliases.items()
                                           if str(n) == str(v.version)),
                         "created": v.creation_timestamp, "run_id": v.run_id,
                         "test_accuracy": v.tags.get("test_accuracy"),
                         "test_macro_f1": v.tags.get("test_macro_f1"),
                         "data_md5": v.tags.get("rnnpipe.data_md5", ""),
                         "decision": v.tags.get("promotion", ""),
                         "reason": v.tags.get("promotion_reason", "")})
    return sorted(rows, key=lambda r: (r["name"], -r["version"]))
