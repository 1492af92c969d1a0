"""Prediction from the registry's champion, any MLflow model URI, or the workspace's model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from rnnpipe.config import load_params
from rnnpipe.errors import RnnpipeError


def load_predictor(model_uri: str | None = None) -> tuple[Callable[[list[str]], pd.DataFrame], str]:
    """A function texts → DataFrame (`label`, `prob_<label>`...) and a description of its source.

    Without `model_uri`: `models:/<register.model_name>@champion` if the registry has one, else
    the workspace's `models/model.keras` with `data/vocab.json`.
    """
    params = load_params() if Path("params.yaml").exists() else None
    if model_uri in (None, "local"):
        if model_uri is None and params is not None:
            from rnnpipe import tracking

            client = tracking.client(params)
            name = params.register.model_name
            try:
                client.get_model_version_by_alias(name, "champion")
                model_uri = f"models:/{name}@champion"
            except Exception:  # no registry entry yet: fall back to the workspace model
                model_uri = None
        if model_uri is None or model_uri == "local":
            from rnnpipe.classifier import TextClassifier
            from rnnpipe.train import MODEL_PATH
            from rnnpipe.vocab import VOCAB_PATH

            classifier = TextClassifier.load(MODEL_PATH, VOCAB_PATH)
            return classifier.predict, f"{MODEL_PATH} (workspace)"
    import mlflow

    if params is not None:
        from rnnpipe import tracking

        tracking.client(params)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:
        raise RnnpipeError(f"{model_uri}: cannot load the model: {exc}") from None
    return (lambda texts: model.predict(pd.DataFrame({"text": texts}))), model_uri
