"""The evaluate step's baseline from ragged ids is scikit-learn's TF-IDF (uni- and bigrams,
min_df 2, sublinear tf) + logistic regression on the token strings, as it was; with a cap on the
training documents it fits on the first ones."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from rnnpipe import baseline
from rnnpipe.config import IngestParams, VocabParams
from rnnpipe.datafiles import read_ids, read_split
from rnnpipe.metrics import scores
from rnnpipe.model.text import tokenize
from rnnpipe.model.vocabulary import Vocabulary
from rnnpipe.steps.ingest import ingest
from rnnpipe.steps.vocab import vocabulary


@pytest.fixture(scope="module")
def data(tmp_path_factory, corpora):
    root = tmp_path_factory.mktemp("baseline")
    corpus = corpora.write(root / "news.tsv", corpora.en(n_per_class=40, seed=3))
    ingest(IngestParams(source=str(corpus), val_size=0.2, test_size=0.3), root,
           root / "ingest.json")
    vocabulary(VocabParams(tokenizer="word", min_count=2, workers=1), root, root / "v.json")
    return root


def with_strings(root, n: int | None = None) -> dict:
    """The baseline as rnnpipe computed it on token strings."""
    vocab = Vocabulary.load(root / "vocab.json")

    def docs(split: str):
        labels, texts = read_split(root / f"{split}.tsv")
        return [vocab.label_ids[x] for x in labels], [" ".join(tokenize(t, "word"))
                                                      for t in texts]

    (y_train, x_train), (y_test, x_test) = docs("train"), docs("test")
    y_train, x_train = y_train[:n], x_train[:n]
    vectorizer = TfidfVectorizer(tokenizer=str.split, token_pattern=None, lowercase=False,
                                 ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    classifier = LogisticRegression(max_iter=1000, C=4.0)
    classifier.fit(vectorizer.fit_transform(x_train), y_train)
    predicted = classifier.predict(vectorizer.transform(x_test))
    result = scores(np.array(y_test), predicted, len(vocab.labels))
    return {f"test_{k}": v for k, v in result.items()}


def from_ids(root, cap: int) -> dict:
    vocab = Vocabulary.load(root / "vocab.json")
    return baseline.baseline_scores(read_ids(root / "ids" / "train"),
                                    read_ids(root / "ids" / "test"), len(vocab.tokens),
                                    len(vocab.labels), cap)


def test_the_same_scores_as_on_token_strings(data, monkeypatch):
    monkeypatch.setattr(baseline, "BLOCK_DOCUMENTS", 17)  # several blocks of documents
    assert from_ids(data, 10**9) == pytest.approx(with_strings(data), abs=1e-9)


def test_a_cap_fits_on_the_first_documents(data):
    assert len(read_ids(data / "ids" / "train")) > 60
    capped = from_ids(data, 60)
    assert capped == pytest.approx(with_strings(data, 60), abs=1e-9)
