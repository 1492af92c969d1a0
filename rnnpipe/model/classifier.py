"""The trained classifier as one object that takes raw text: tokenizer + vocabulary + Keras model.

`TextClassifier` is what `rnnpipe predict` and the evaluate step use; `PyfuncClassifier` wraps it
as an MLflow pyfunc so the logged model (and `mlflow models serve`) answers raw text too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rnnpipe.errors import DataError
from rnnpipe.model.text import encode, tokenize
from rnnpipe.model.vocabulary import Vocabulary

# What the model's code imports; pinned to the versions here.
PIP_REQUIREMENTS_PACKAGES = ("tensorflow-cpu", "keras", "jieba", "numpy", "pandas", "mlflow")


PROBABILITY_PREFIX = "prob_"  # output column `prob_<label>`: one per class


def probability_column(label: str) -> str:
    """The output column holding the probability of `label`."""
    return f"{PROBABILITY_PREFIX}{label}"


class TextClassifier:
    """Predict labels and class probabilities for raw texts."""

    def __init__(self, model: Any, vocab: Vocabulary, max_len: int | None = None,
                 truncate: str = "head") -> None:
        self.model = model
        self.vocab = vocab
        # Models take any length; the length they were trained to keep is in preprocessing.json
        # (older models had a fixed input length instead).
        self.max_len = int(max_len or model.input_shape[1])
        self.truncate = truncate
        self._token_ids = vocab.token_ids

    @classmethod
    def load(cls, model_path: str | Path, vocab_path: str | Path,
             preprocessing_path: str | Path | None = None) -> TextClassifier:
        """Load a `.keras` model (safe mode: no arbitrary code), its vocabulary, and how it cuts
        long texts (`preprocessing.json`, written beside the model by training)."""
        from rnnpipe.model.network import load_model

        preprocessing = {}
        if preprocessing_path is not None and Path(preprocessing_path).exists():
            with open(preprocessing_path, encoding="utf-8") as fh:
                preprocessing = json.load(fh)
        model = load_model(model_path)
        if preprocessing.get("max_len") is None and model.input_shape[1] is None:
            where = preprocessing_path or Path(model_path).with_name("preprocessing.json")
            raise DataError(f"{where}: missing or without max_len; a model that takes any length "
                            f"needs it to know how long texts are cut (train writes it beside "
                            f"the model)")
        return cls(model, Vocabulary.load(vocab_path), preprocessing.get("max_len"),
                   preprocessing.get("truncate", "head"))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids `[n, max_len]` for raw texts."""
        token_lists = [tokenize(str(t), self.vocab.tokenizer) for t in texts]
        return encode(token_lists, self._token_ids, self.max_len, self.truncate)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Class probabilities `[n, num_labels]`, columns in `vocab.labels` order."""
        if len(texts) == 0:
            return np.zeros((0, len(self.vocab.labels)), dtype=np.float32)
        from rnnpipe.model.network import predict_proba

        return predict_proba(self.model, self.encode(texts), batch_size)

    def predict(self, texts: Sequence[str]) -> pd.DataFrame:
        """One row per text: `label` and one `prob_<label>` column per class."""
        probs = self.predict_proba(texts)
        frame = pd.DataFrame({"label": [self.vocab.labels[i] for i in probs.argmax(axis=1)]})
        for i, label in enumerate(self.vocab.labels):
            frame[probability_column(label)] = probs[:, i].astype(float)
        return frame


def texts_from_input(model_input: Any) -> list[str]:
    """Raw texts from what a caller or MLflow hands the model.

    Accepts a DataFrame with a `text` column (or a single column, as MLflow builds from a list
    of strings), a Series or array, a list of strings, one string, or `{"text": [...]}`. MLflow
    turns a dict of lists into a one-row DataFrame whose cell holds the whole list, so list-valued
    cells are flattened back into one text each.
    """
    if isinstance(model_input, pd.DataFrame):
        if "text" in model_input.columns:
            values = model_input["text"].tolist()
        elif len(model_input.columns) == 1:
            values = model_input.iloc[:, 0].tolist()
        else:
            raise DataError(f"input needs a 'text' column, got columns {list(model_input.columns)}")
    elif isinstance(model_input, pd.Series | np.ndarray):
        values = model_input.tolist()
    elif isinstance(model_input, str):
        values = [model_input]
    elif isinstance(model_input, dict) and "text" in model_input:
        values = [model_input["text"]]
    else:
        values = list(model_input)
    texts: list[str] = []
    for value in values:
        if isinstance(value, list | tuple | np.ndarray | pd.Series):
            texts.extend(str(t) for t in value)
        else:
            texts.append(str(value))
    return texts


try:
    import mlflow.pyfunc

    class PyfuncClassifier(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc over `TextClassifier`: artifacts `model` (.keras) and `vocab` (.json).

        The logged signature is one unnamed string column, so MLflow's schema enforcement
        accepts both a DataFrame with a `text` column and a plain list of strings (a named
        `text` column would reject lists), and always hands `predict` a DataFrame.
        """

        def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
            """Load the Keras model and vocabulary from the model's own artifacts."""
            self.classifier = TextClassifier.load(context.artifacts["model"],
                                                  context.artifacts["vocab"],
                                                  context.artifacts.get("preprocessing"))

        # `pd.DataFrame` is what MLflow passes after enforcing a column signature. It is also a
        # hint MLflow does not infer a signature from, so the explicit signature (with the
        # label and probability columns) stays; `list[str]` would replace it with an untyped
        # output schema and load the Keras model once more while logging.
        def predict(self, context: mlflow.pyfunc.PythonModelContext | None,
                    model_input: pd.DataFrame,
                    params: dict[str, Any] | None = None) -> pd.DataFrame:
            """`label` and one `prob_<label>` column per class, one row per input text."""
            return self.classifier.predict(texts_from_input(model_input))
except ImportError:  # mlflow is optional for plain prediction
    PyfuncClassifier = None  # type: ignore[assignment,misc]


def pip_requirements() -> list[str]:
    """Pinned requirements of the served model (explicit: inferring them costs ~5 s a model)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in PIP_REQUIREMENTS_PACKAGES:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            if package == "tensorflow-cpu":
                pins.append(f"tensorflow=={version('tensorflow')}")
    return pins
