"""The vocabulary: token ids (`<PAD>` = 0, `<UNK>` = 1, then by frequency) and label ids, plus
the tokenizer that produced the tokens. Written by the vocab step, read by training, evaluation
and the served model (`data/vocab.json`, and an artifact of every logged model)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rnnpipe.errors import DataError

PAD, UNK = "<PAD>", "<UNK>"
PAD_ID, UNK_ID = 0, 1


@dataclass(frozen=True)
class Vocabulary:
    """Token and label ids plus the tokenizer that produced the tokens."""

    tokenizer: str
    tokens: list[str]
    labels: list[str]

    @property
    def token_ids(self) -> dict[str, int]:
        """Token → id."""
        return {t: i for i, t in enumerate(self.tokens)}

    @property
    def label_ids(self) -> dict[str, int]:
        """Label → id."""
        return {label: i for i, label in enumerate(self.labels)}

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"tokenizer": self.tokenizer, "tokens": self.tokens, "labels": self.labels}

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        """Inverse of `to_dict`."""
        return cls(tokenizer=data["tokenizer"], tokens=list(data["tokens"]),
                   labels=list(data["labels"]))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written as JSON by `to_dict` (the vocab step saves it)."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: missing; run the vocabulary step first (rnnpipe vocab)")
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))
