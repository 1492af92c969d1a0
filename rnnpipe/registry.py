"""The model as MLflow records it: a raw-text pyfunc, registered, and a promotion gate.

Every evaluated model becomes a new version of `register.model_name` with alias `candidate`.
The gate moves alias `champion` to it only when its test macro-F1 is at least the current
champion's (the first model and ties promote), and records the decision on the version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from rnnpipe.config import Params
from rnnpipe.ingest import read_split
from rnnpipe.tracking import StepRun, retry_locked
from rnnpipe.train import MODEL_PATH
from rnnpipe.vocab import VOCAB_PATH

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


def log_model(run: StepRun, hashes: dict[str, str]) -> str:
    """Log the training data as a dataset input and the classifier as a pyfunc on `run`;
    return the model URI. Ends the run's fluent context (the evaluate step is the last step)."""
    import mlflow
    from mlflow.models import infer_signature

    from rnnpipe.classifier import TextClassifier, pip_requirements

    labels, texts = read_split(TRAIN_PATH)
    train_frame = pd.DataFrame({"text": texts, "label": labels})
    digest = hashes.get(str(TRAIN_PATH)) or file_md5(TRAIN_PATH)
    example = pd.DataFrame({"text": texts[:2]})
    classifier = TextClassifier.load(MODEL_PATH, VOCAB_PATH)
    signature = infer_signature(example, classifier.predict(example["text"].tolist()))
    with mlflow.start_run(run_id=run.run_id):
        dataset = mlflow.data.from_pandas(train_frame, source=str(TRAIN_PATH), name="train",
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


def promote(client, name: str, version: str, macro_f1: float) -> tuple[bool, str]:
    """The promotion gate: alias `candidate` always, `champion` if macro-F1 >= the champion's."""
    retry_locked(lambda: client.set_registered_model_alias(name, CANDIDATE, version))
    try:
        champion = retry_locked(lambda: client.get_model_version_by_alias(name, CHAMPION))
    except Exception:  # no champion yet
        champion = None
    if champion is None:
        promoted, reason = True, f"first model: {GATE_METRIC} {macro_f1:.4f}"
    else:
        best = float(champion.tags.get(GATE_METRIC, "-inf"))
        promoted = macro_f1 >= best
        relation = ">=" if promoted else "<"
        reason = (f"{GATE_METRIC} {macro_f1:.4f} {relation} champion v{champion.version}'s "
                  f"{best:.4f}")
    if promoted:
        retry_locked(lambda: client.set_registered_model_alias(name, CHAMPION, version))
    decision = "promoted" if promoted else "kept as candidate"
    for key, value in {"promotion": "champion" if promoted else "candidate",
                       "promotion_reason": reason}.items():
        retry_locked(lambda k=key, v=value: client.set_model_version_tag(name, version, k, v))
    retry_locked(lambda: client.update_model_version(name, version,
                                                     description=f"{decision}: {reason}"))
    return promoted, reason


def register(client, model_uri: str, name: str, run_id: str, macro_f1: float,
             accuracy: float) -> tuple[str, bool, str]:
    """Register `model_uri` as a new version of `name` and run the gate on it."""
    import mlflow

    version = retry_locked(lambda: mlflow.register_model(model_uri, name)).version
    for key, value in {GATE_METRIC: macro_f1, "test_accuracy": accuracy, "run_id": run_id}.items():
        retry_locked(lambda k=key, v=value: client.set_model_version_tag(name, version, k, str(v)))
    promoted, reason = promote(client, name, version, macro_f1)
    return version, promoted, reason


def log_and_register(run: StepRun, params: Params, metrics: dict, hashes: dict[str, str]) -> None:
    """Log the model on the run; register it and apply the gate unless `register.enabled` is off."""
    model_uri = log_model(run, hashes)
    run.set_tags({"rnnpipe.model_uri": model_uri})
    if not params.register.enabled:
        return
    name = params.register.model_name
    version, promoted, reason = register(run.client, model_uri, name, run.run_id,
                                         metrics["macro_f1"], metrics["accuracy"])
    run.set_tags({"rnnpipe.registered_version": version,
                  "rnnpipe.promotion": "champion" if promoted else "candidate"})
    print(f"register: {name} v{version} is {'champion' if promoted else 'candidate'} ({reason})")
