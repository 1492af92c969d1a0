"""The trained classifier as one object that takes raw text: tokenizer + vocabulary + Keras model.

`TextClassifier` is what `rnnpipe predict` and the evaluate step use; `PyfuncClassifier` wraps it
as an MLflow pyfunc so the logged model (and `mlflow models serve`) answers raw text too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import rnnpipe  # noqa: F401  (environment defaults before TensorFlow loads)
from rnnpipe.errors import DataError
from rnnpipe.text import encode, tokenize
from rnnpipe.vocab import Vocabulary

PIP_REQUIREMENTS_PACKAGES = ("tensorflow-cpu", "keras", "jieba", "numpy", "pandas", "mlflow")


class TextClassifier:
    """Predict labels and class probabilities for raw texts."""

    def __init__(self, model: Any, vocab: Vocabulary) -> None:
        self.model = model
        self.vocab = vocab
        self.max_len = int(model.input_shape[1])
        self._token_ids = vocab.token_ids

    @classmethod
    def load(cls, model_path: str | Path, vocab_path: str | Path) -> TextClassifier:
        """Load a `.keras` model (safe mode: no arbitrary code) and its vocabulary."""
        import keras

        import rnnpipe.lstm  # noqa: F401  (registers the manual cell for deserialisation)

        if not Path(model_path).exists():
            raise DataError(f"{model_path}: no trained model; run the pipeline first (make run)")
        model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
        return cls(model, Vocabulary.load(vocab_path))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids `[n, max_len]` for raw texts."""
        token_lists = [tokenize(str(t), self.vocab.tokenizer) for t in texts]
        return encode(token_lists, self._token_ids, self.max_len)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Class probabilities `[n, num_labels]`, columns in `vocab.labels` order."""
        if len(texts) == 0:
            return np.zeros((0, len(self.vocab.labels)), dtype=np.float32)
        return np.asarray(self.model.predict(self.encode(texts), batch_size=batch_size,
                                             verbose=0))

    def predict(self, texts: Sequence[str]) -> pd.DataFrame:
        """One row per text: `label` and one `prob_<label>` column per class."""
        probs = self.predict_proba(texts)
        frame = pd.DataFrame({"label": [self.vocab.labels[i] for i in probs.argmax(axis=1)]})
        for i, label in enumerate(self.vocab.labels):
            frame[f"prob_{label}"] = probs[:, i].astype(float)
        return frame


def texts_from_input(model_input: Any) -> list[str]:
    """Accept a DataFrame with a `text` column (or a single column), a Series, a list of strings,
    or one string."""
    if isinstance(model_input, pd.DataFrame):
        if "text" in model_input.columns:
            column = model_input["text"]
        elif len(model_input.columns) == 1:
            column = model_input.iloc[:, 0]
        else:
            raise DataError(f"input needs a 'text' column, got columns {list(model_input.columns)}")
        return [str(t) for t in column]
    if isinstance(model_input, pd.Series | np.ndarray):
        return [str(t) for t in model_input.tolist()]
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, dict) and "text" in model_input:
        value = model_input["text"]
        return [value] if isinstance(value, str) else [str(t) for t in value]
    return [str(t) for t in model_input]


try:
    import mlflow.pyfunc

    class PyfuncClassifier(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc over `TextClassifier`: artifacts `model` (.keras) and `vocab` (.json)."""

        def load_context(self, context) -> None:
            self.classifier = TextClassifier.load(context.artifacts["model"],
                                                  context.artifacts["vocab"])

        def predict(self, context, model_input, params=None) -> pd.DataFrame:
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
