"""Prediction from the registry's champion, any MLflow model URI, or the workspace's model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from rnnpipe.config import Params, load_params
from rnnpipe.errors import RnnpipeError

Predictor = Callable[[list[str]], pd.DataFrame]
DEFAULT_MODEL_NAME = "rnnpipe"


def champion_uri(params: Params | None) -> str | None:
    """`models:/<register.model_name>@champion` if the registry has a champion, else None."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from rnnpipe import tracking

    if params is not None:
        client = tracking.client(params)
        name = params.register.model_name
    else:  # outside a project: MLFLOW_TRACKING_URI (or MLflow's default) names the store
        client, name = MlflowClient(), DEFAULT_MODEL_NAME
    try:
        tracking.retry_locked(lambda: client.get_model_version_by_alias(name, "champion"))
    except MlflowException:  # no such model or alias yet
        return None
    return f"models:/{name}@champion"


def load_predictor(model_uri: str | None = None) -> tuple[Predictor, str]:
    """A function texts → DataFrame (`label`, `prob_<label>`...) and a description of its source.

    `model_uri` is any MLflow model URI (`models:/name@alias`, `runs:/id/model`, a path), or
    `local` for the workspace's `models/model.keras` with `data/vocab.json`. Without it:
    `models:/<register.model_name>@champion` if the registry has one, else the workspace model.
    """
    params = load_params() if Path("params.yaml").exists() else None
    if model_uri is None:
        model_uri = champion_uri(params)
    if model_uri in (None, "local"):
        from rnnpipe.classifier import TextClassifier
        from rnnpipe.train import MODEL_PATH
        from rnnpipe.vocab import VOCAB_PATH

        classifier = TextClassifier.load(MODEL_PATH, VOCAB_PATH)
        return classifier.predict, f"{MODEL_PATH} (workspace)"
    import mlflow

    if params is not None:
        from rnnpipe import tracking

        tracking.client(params)  # models:/ and runs:/ URIs resolve in the project's store
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:  # MLflow raises many types; the user needs the URI and the reason
        raise RnnpipeError(f"{model_uri}: cannot load the model: {exc}") from None
    return (lambda texts: model.predict(list(texts))), model_uri
