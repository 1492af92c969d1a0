"""The raw-text classifier: loads a saved model with its vocabulary and how it cuts long texts
(`preprocessing.json`), predicts probabilities and labels; and the inputs the served model
accepts."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from rnnpipe.errors import DataError
from rnnpipe.io import write_json
from rnnpipe.model.classifier import (
    PyfuncClassifier,
    TextClassifier,
    pip_requirements,
    probability_column,
    texts_from_input,
)
from rnnpipe.model.network import NetworkConfig, build_model, save_model
from rnnpipe.model.vocabulary import PAD, UNK, Vocabulary

WORDS = ["good", "bad", "movie", "plot", "great", "awful", "the", "a"]
MAX_LEN = 5


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved (untrained) model of a word vocabulary, with its files; `preprocessing.json`
    says `tail`."""
    root = tmp_path_factory.mktemp("classifier")
    vocab = Vocabulary("word", [PAD, UNK, *WORDS], ["neg", "neu", "pos"])
    write_json(root / "vocab.json", vocab.to_dict())
    model = build_model(NetworkConfig(vocab_size=len(vocab.tokens), num_classes=3,
                                      max_len=MAX_LEN, embedding_dim=4, lstm_units=[4],
                                      fc_units=4))
    save_model(model, root / "model.keras")
    write_json(root / "preprocessing.json", {"max_len": MAX_LEN, "truncate": "tail"})
    return root


def test_load_reads_how_long_texts_are_cut(saved):
    classifier = TextClassifier.load(saved / "model.keras", saved / "vocab.json",
                                     saved / "preprocessing.json")
    assert (classifier.max_len, classifier.truncate) == (MAX_LEN, "tail")
    ids = {t: i for i, t in enumerate([PAD, UNK, *WORDS])}
    text = "The plot was AWFUL but a great movie"  # 8 tokens: the last 5 are kept
    assert classifier.encode([text]).tolist() == [
        [ids["awful"], 1, ids["a"], ids["great"], ids["movie"]]]
    assert classifier.encode(["good", ""]).tolist() == [[ids["good"], 0, 0, 0, 0], [0] * 5]


def test_without_max_len_in_preprocessing_the_model_cannot_cut(saved, tmp_path):
    """The model takes any length: how long texts are cut comes from preprocessing.json."""
    for preprocessing in (None, saved / "missing.json"):
        with pytest.raises(DataError, match="missing or without max_len"):
            TextClassifier.load(saved / "model.keras", saved / "vocab.json", preprocessing)
    write_json(tmp_path / "p.json", {"max_len": 3})  # no truncate: the head is kept
    classifier = TextClassifier.load(saved / "model.keras", saved / "vocab.json",
                                     tmp_path / "p.json")
    assert (classifier.max_len, classifier.truncate) == (3, "head")
    assert classifier.encode(["good bad movie plot great awful"]).tolist() == [[2, 3, 4]]


def test_predictions(saved):
    classifier = TextClassifier.load(saved / "model.keras", saved / "vocab.json",
                                     saved / "preprocessing.json")
    texts = ["good movie", "awful plot", "", "unknown words only", "good " * 50]
    probs = classifier.predict_proba(texts)
    assert probs.shape == (5, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    frame = classifier.predict(texts)
    assert list(frame.columns) == ["label", "prob_neg", "prob_neu", "prob_pos"]
    assert frame["label"].tolist() == [["neg", "neu", "pos"][i] for i in probs.argmax(axis=1)]
    np.testing.assert_allclose(frame[["prob_neg", "prob_neu", "prob_pos"]].to_numpy(), probs,
                               atol=1e-6)
    assert classifier.predict_proba([]).shape == (0, 3)
    assert probability_column("pos") == "prob_pos"


def test_a_missing_model_or_vocabulary(saved, tmp_path):
    with pytest.raises(DataError, match="no trained model"):
        TextClassifier.load(tmp_path / "model.keras", saved / "vocab.json")
    with pytest.raises(DataError, match="run the vocabulary step first"):
        TextClassifier.load(saved / "model.keras", tmp_path / "vocab.json",
                            saved / "preprocessing.json")


@pytest.mark.parametrize(("model_input", "texts"), [
    (pd.DataFrame({"text": ["a", "b"], "id": [1, 2]}), ["a", "b"]),
    (pd.DataFrame({0: ["a", "b"]}), ["a", "b"]),  # MLflow's frame of a list of strings
    (pd.DataFrame({"text": [["a", "b"]]}), ["a", "b"]),  # MLflow's frame of {"text": [...]}
    (pd.Series(["a", "b"]), ["a", "b"]),
    (np.array(["a", "b"]), ["a", "b"]),
    ("one text", ["one text"]),
    ({"text": ["a", "b"]}, ["a", "b"]),
    ({"text": "a"}, ["a"]),
    (["a", "b"], ["a", "b"]),
    (("a", 2), ["a", "2"]),
    ([["a", "b"], "c"], ["a", "b", "c"]),
    ([], []),
])
def test_texts_from_input(model_input, texts):
    assert texts_from_input(model_input) == texts


def test_a_frame_without_a_text_column():
    with pytest.raises(DataError, match=r"input needs a 'text' column, got columns \['a', 'b'\]"):
        texts_from_input(pd.DataFrame({"a": ["x"], "b": ["y"]}))


def test_the_pyfunc_wraps_the_classifier(saved):
    assert PyfuncClassifier is not None

    context = SimpleNamespace(artifacts={"model": str(saved / "model.keras"),
                                         "vocab": str(saved / "vocab.json"),
                                         "preprocessing": str(saved / "preprocessing.json")})
    pyfunc = PyfuncClassifier()
    pyfunc.load_context(context)
    assert pyfunc.classifier.truncate == "tail"
    frame = pyfunc.predict(None, pd.DataFrame({"text": ["good movie", "bad plot"]}))
    assert list(frame.columns) == ["label", "prob_neg", "prob_neu", "prob_pos"]
    assert len(frame) == 2


def test_pip_requirements_are_pinned():
    pins = pip_requirements()
    assert all("==" in pin for pin in pins)
    names = {pin.split("==")[0] for pin in pins}
    assert {"keras", "jieba", "numpy", "pandas", "mlflow"} <= names
    assert names & {"tensorflow", "tensorflow-cpu"}
