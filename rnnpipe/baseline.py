"""The evaluate step's baseline: TF-IDF over word uni- and bigrams + logistic regression, on the
same splits and tokens as the LSTM (is the LSTM worth it?), computed from the ragged ids.

It is scikit-learn's `TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)` (smooth
idf, L2-normalised rows) on the token strings, done with NumPy on the ids a block of documents at
a time: every n-gram with a train document frequency of at least 2 consists of tokens seen at
least twice, which are in the vocabulary (up to `vocab.max_size`), so dropping n-grams with
`<UNK>` leaves the same features, in another column order. Memory is bounded by fitting on at
most `evaluate.baseline_max_documents` train documents (the first ones: the train split is
shuffled) and scoring the test split a block at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from rnnpipe.metrics import scores
from rnnpipe.model.ragged import RaggedIds
from rnnpipe.model.vocabulary import UNK_ID

BLOCK_DOCUMENTS = 4096
MIN_DF = 2
C = 4.0


def _terms(data: RaggedIds, start: int, stop: int,
           vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Documents `start..stop-1` as (document, term, count) triples, sorted by document and
    term: a unigram's term is its id, a bigram's `vocab_size * (1 + first) + second`."""
    offsets = np.asarray(data.offsets[start:stop + 1], dtype=np.int64)
    ids = np.asarray(data.ids[offsets[0]:offsets[-1]], dtype=np.int64)
    document = np.repeat(np.arange(stop - start), np.diff(offsets))
    known = ids > UNK_ID
    pairs = (document[1:] == document[:-1]) & known[1:] & known[:-1]
    documents = np.concatenate([document[known], document[1:][pairs]])
    terms = np.concatenate([ids[known], vocab_size * (1 + ids[:-1][pairs]) + ids[1:][pairs]])
    order = np.lexsort((terms, documents))
    documents, terms = documents[order], terms[order]
    first = np.ones(len(terms), dtype=bool)
    first[1:] = (documents[1:] != documents[:-1]) | (terms[1:] != terms[:-1])
    starts = np.flatnonzero(first)
    return documents[starts], terms[starts], np.diff(np.append(starts, len(terms)))


def _blocks(n: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, BLOCK_DOCUMENTS):
        yield start, min(n, start + BLOCK_DOCUMENTS)


class Tfidf:
    """TF-IDF features fitted on the first `n` documents of a split."""

    def __init__(self, data: RaggedIds, n: int, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        known, df = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        for start, stop in _blocks(n):
            _, terms, _ = _terms(data, start, stop, vocab_size)
            block_terms, block_df = np.unique(terms, return_counts=True)
            known, where = np.unique(np.concatenate([known, block_terms]), return_inverse=True)
            df = np.bincount(where, weights=np.concatenate([df, block_df]),
                             minlength=len(known)).astype(np.int64)
            data.release()
        self.terms = known[df >= MIN_DF]
        self.idf = np.log((1 + n) / (1 + df[df >= MIN_DF])) + 1

    def transform(self, data: RaggedIds, start: int, stop: int):
        """Documents `start..stop-1` as an L2-normalised sparse TF-IDF matrix."""
        from scipy.sparse import csr_matrix

        documents, terms, counts = _terms(data, start, stop, self.vocab_size)
        column = np.searchsorted(self.terms, terms)
        hit = column < len(self.terms)
        hit[hit] = self.terms[column[hit]] == terms[hit]
        documents, column = documents[hit], column[hit]
        values = (1 + np.log(counts[hit])) * self.idf[column]
        norms = np.sqrt(np.bincount(documents, weights=values ** 2, minlength=stop - start))
        values /= np.where(norms > 0, norms, 1)[documents]
        indptr = np.zeros(stop - start + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(np.bincount(documents, minlength=stop - start))
        return csr_matrix((values, column, indptr), shape=(stop - start, len(self.terms)))


def baseline_scores(train: RaggedIds, test: RaggedIds, vocab_size: int, num_classes: int,
                    max_documents: int) -> dict:
    """The baseline's test accuracy and macro-F1, fitted on at most `max_documents` train
    documents."""
    from scipy.sparse import vstack
    from sklearn.linear_model import LogisticRegression

    n = min(len(train), max_documents)
    tfidf = Tfidf(train, n, vocab_size)
    x_train = vstack([tfidf.transform(train, a, b) for a, b in _blocks(n)], format="csr")
    y_train = np.asarray(train.labels[:n])
    classifier = LogisticRegression(max_iter=1000, C=C)
    classifier.fit(x_train, y_train)
    del x_train
    predicted = np.concatenate([classifier.predict(tfidf.transform(test, a, b))
                                for a, b in _blocks(len(test))] or [np.zeros(0, dtype=int)])
    train.release()
    test.release()
    result = scores(np.asarray(test.labels), predicted.astype(np.int64), num_classes)
    return {f"test_{k}": v for k, v in result.items()}
