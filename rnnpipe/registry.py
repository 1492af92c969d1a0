"""The model as MLflow records it: a raw-text pyfunc, registered, and a promotion gate.

Every evaluated model becomes a new version of `register.model_name` with alias `candidate`.
The gate moves alias `champion` to it only when its test macro-F1 is at least the current
champion's (the first model and ties promote), and records the decision on the version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from rnnpipe.config import Params
from rnnpipe.ingest import read_split
from rnnpipe.tracking import StepRun, retry_locked
from rnnpipe.train import MODEL_PATH
from rnnpipe.vocab import VOCAB_PATH, Vocabulary

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models import ModelSignature


PACKAGE_DIR = Path(__file__).resolve().parent
TRAIN_PATH = Path("data/train.tsv")
CANDIDATE, CHAMPION = "candidate", "champion"
GATE_METRIC = "test_macro_f1"


def file_md5(path: Path) -> str:
    """MD5 of a file's bytes: the hash DVC records in `dvc.lock` for it."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def signature_for(labels: list[str]) -> ModelSignature:
    """Input: one unnamed string column; output: `label` and a `prob_<label>` per class (what
    `TextClassifier.predict` returns).

    Unnamed (what MLflow infers from a list), because MLflow's schema enforcement turns a list
    of strings into a DataFrame with column `0`, which a signature naming the column `text`
    rejects; a DataFrame with a `text` column passes either way. Written out rather than
    inferred by running the model: that would load it a second time in the evaluate step.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from rnnpipe.classifier import probability_column

    outputs = [ColSpec("string", "label"),
               *(ColSpec("double", probability_column(label)) for label in labels)]
    return ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema(outputs))


def log_model(run: StepRun, hashes: dict[str, str]) -> str:
    """Log the training data as a dataset input and the classifier as a pyfunc on `run`;
    return the model URI. Ends the run's fluent context (the evaluate step is the last step).

    The dataset's digest is the MD5 DVC records for `data/train.tsv`, computed from the file
    itself: the bytes actually read, even when `rnnpipe evaluate` ran outside DVC and
    `dvc.lock` is behind (then the run is tagged `dvc.lock_stale`).
    """
    import mlflow
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json

    from rnnpipe.classifier import pip_requirements

    labels, texts = read_split(TRAIN_PATH)
    train_frame = pd.DataFrame({"text": texts, "label": labels})
    digest = file_md5(TRAIN_PATH)
    locked = hashes.get(str(TRAIN_PATH))
    if locked is not None and locked != digest:
        run.set_tags({"dvc.lock_stale": str(TRAIN_PATH)})
    example = pd.DataFrame({"text": texts[:2]})
    signature = signature_for(Vocabulary.load(VOCAB_PATH).labels)
    # Every local path matches two registered "local" source classes, so resolving a plain path
    # warns; naming the source type builds the same source without the guess. The path is
    # relative to the repository root: with the git commit and the digest it names the data.
    source = get_dataset_source_from_json(json.dumps({"uri": str(TRAIN_PATH)}), "local")
    with mlflow.start_run(run_id=run.run_id):
        dataset = mlflow.data.from_pandas(train_frame, source=source, name="train",
                                          targets="label", digest=digest)
        retry_locked(lambda: mlflow.log_input(dataset, context="training"))
        info = retry_locked(lambda: mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PACKAGE_DIR / "pyfunc_model.py"),
            code_paths=[str(PACKAGE_DIR)],
            artifacts={"model": str(MODEL_PATH), "vocab": str(VOCAB_PATH)},
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
        ))
    return info.model_uri


def current_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version holding alias `champion`, or None when there is none yet.

    Only "not found" means no champion: any other error (a store that stays locked) must not
    let the gate promote as if this were the first model.
    """
    from mlflow.exceptions import MlflowException

    try:
        return retry_locked(lambda: client.get_model_version_by_alias(name, CHAMPION))
    except MlflowException as exc:
        # The SQL store answers a missing alias with INVALID_PARAMETER_VALUE, a missing model
        # with RESOURCE_DOES_NOT_EXIST.
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def promote(client: MlflowClient, name: str, version: str,
            macro_f1: float) -> tuple[bool, str]:
    """The promotion gate: alias `candidate` always, `champion` if macro-F1 >= the champion's.

    The champion's score is read from its version tag `test_macro_f1` (set by `register`), so
    the gate needs nothing but the registry. Returns (promoted, reason); the reason is also
    recorded on the version as tags `promotion`/`promotion_reason` and as its description.
    """
    retry_locked(lambda: client.set_registered_model_alias(name, CANDIDATE, version))
    champion = current_champion(client, name)
    if champion is None:
        promoted, reason = True, f"first model: {GATE_METRIC} {macro_f1:g}"
    else:
        best = float(champion.tags.get(GATE_METRIC, "-inf"))
        promoted = macro_f1 >= best
        relation = ">=" if promoted else "<"
        reason = (f"{GATE_METRIC} {macro_f1:g} {relation} champion v{champion.version}'s "
                  f"{best:g}")
    if promoted:
        retry_locked(lambda: client.set_registered_model_alias(name, CHAMPION, version))
    decision = "promoted to champion" if promoted else "kept as candidate"
    for key, value in {"promotion": CHAMPION if promoted else CANDIDATE,
                       "promotion_reason": reason}.items():
        retry_locked(lambda k=key, v=value: client.set_model_version_tag(name, version, k, v))
    retry_locked(lambda: client.update_model_version(name, version,
                                                     description=f"{decision}: {reason}"))
    return promoted, reason


def register(client: MlflowClient, model_uri: str, name: str, run_id: str, macro_f1: float,
             accuracy: float) -> tuple[str, bool, str]:
    """Register `model_uri` as a new version of `name`, tag it with its test scores and run,
    and run the gate on it. Uses the fluent registry URI (`tracking.client` sets it)."""
    import mlflow

    version = str(retry_locked(lambda: mlflow.register_model(model_uri, name)).version)
    for key, value in {GATE_METRIC: macro_f1, "test_accuracy": accuracy, "run_id": run_id}.items():
        retry_locked(lambda k=key, v=value: client.set_model_version_tag(name, version, k, str(v)))
    promoted, reason = promote(client, name, version, macro_f1)
    return version, promoted, reason


@contextlib.contextmanager
def gate_lock(uri: str) -> Iterator[None]:
    """Serialise the gate between processes sharing a SQLite store (a parallel sweep).

    Without it two evaluations can both read the old champion and the worse one can take the
    alias last. Other stores (a tracking server) are left to their own consistency.
    """
    prefix = "sqlite:///"
    try:
        import fcntl
    except ImportError:  # not POSIX: no inter-process lock
        fcntl = None
    if fcntl is None or not uri.startswith(prefix):
        yield
        return
    lock_path = Path(uri[len(prefix):]).with_name("registry-gate.lock")
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def register_logged(run: StepRun, params: Params, metrics: dict, model_uri: str) -> None:
    """Register the model logged on `run` (`log_model`) and apply the gate, unless
    `register.enabled` is off."""
    from rnnpipe.tracking import tracking_uri

    run.set_tags({"rnnpipe.model_uri": model_uri})
    if not params.register.enabled:
        return
    name = params.register.model_name
    with gate_lock(tracking_uri(params)):
        version, promoted, reason = register(run.client, model_uri, name, run.run_id,
                                             metrics["macro_f1"], metrics["accuracy"])
    role = CHAMPION if promoted else CANDIDATE
    run.set_tags({"rnnpipe.registered_model": name, "rnnpipe.registered_version": version,
                  "rnnpipe.promotion": role, "rnnpipe.promotion_reason": reason})
    print(f"register: {name} v{version} is {role} ({reason})")
