"""The `rnnpipe` command's exit policy: every bad input or param is one line on stderr, exit 2,
and nothing written; environment errors are one line, exit 1; `--debug` shows the traceback; a
typo'd `-S` override is caught the same way on every entry point, before any work (no Prefect,
no TensorFlow, no MLflow).

Most cases run the real `rnnpipe` in throwaway folders, a few at a time; those whose process
would only repeat what another proves run as `rnnpipe.cli.main()` in this process.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from rnnpipe import __version__
from rnnpipe.cli import build_parser, format_models, main
from rnnpipe.errors import DEBUG_HINT, ERROR_FILE_ENV, ParamsError, read_error_record

REPO = Path(__file__).resolve().parent.parent
RNNPIPE = str(Path(sys.executable).parent / "rnnpipe")
PREFIX = "rnnpipe: error: "
Completed = subprocess.CompletedProcess
SPLIT_FILES = ("data/train.tsv", "data/val.tsv", "data/test.tsv", "reports/ingest.json")
VOCAB_FILES = ("data/ids", "data/vocab.json", "reports/vocab.json")
TRAIN_FILES = ("models/model.keras", "reports/history.csv", "reports/train.json")
ZH_ROWS = [("pos" if i % 2 else "neg", f"第{i}条评论，{'质量很好' if i % 2 else '非常失望'}")
           for i in range(10)]
TSV_OK = "".join(f"{label}\t{text}\n" for label, text in ZH_ROWS)


def leftovers(root: Path) -> list[str]:
    """Temporary files an atomic write would leave if it had been interrupted."""
    return [str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name]


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


ESCAPE_NAME = f"rnnpipe-escaped-{uuid.uuid4().hex}.tsv"  # where a `..` member would land


@dataclass
class Case:
    """One `rnnpipe` invocation in a fresh folder, and what it must say."""

    files: dict[str, str | bytes | None]  # path → text, bytes, or None for a FIFO
    params: dict = field(default_factory=dict)  # merged into a tiny valid params.yaml
    expect: tuple[str, ...] = ()  # fragments of the one error line (or of stdout when ok)
    args: tuple[str, ...] = ("ingest",)
    absent: tuple[str, ...] = SPLIT_FILES
    ok: bool = False
    params_text: str | None = None  # a raw params.yaml instead of `params`
    # Run as `rnnpipe.cli.main()` in this process: the same code path minus the process.
    in_process: bool = False


def _splits(test_label: str = "pos") -> dict[str, str]:
    train = "".join(f"{label}\t{text}\n" for label, text in ZH_ROWS[:8])
    return {"data/train.tsv": train, "data/val.tsv": train,
            "data/test.tsv": f"{test_label}\t测试文本\n"}


CASES: dict[str, Case] = {
    "missing source": Case(
        {}, {"ingest": {"source": "corpus/nope.tsv"}},
        ("ingest.source: corpus/nope.tsv: no such file",)),
    "source is a FIFO": Case(  # must fail at once, not block reading a pipe nobody writes
        {"corpus/pipe.tsv": None}, {"ingest": {"source": "corpus/pipe.tsv"}},
        ("corpus/pipe.tsv: cannot read: not a regular file",)),
    "folder read as tsv": Case(
        {"corpus/dir/pos/1.txt": "好"}, {"ingest": {"source": "corpus/dir", "format": "tsv"}},
        ("corpus/dir: is a folder", "ingest.format is tsv"), in_process=True),
    "empty corpus": Case(
        {"corpus/c.tsv": ""}, {}, ("corpus/c.tsv: the corpus is empty",), in_process=True),
    "blank lines only": Case(
        {"corpus/c.tsv": "\n \r\n\t\n"}, {}, ("the corpus is empty",), in_process=True),
    "no label separator": Case(
        {"corpus/c.tsv": TSV_OK.replace("\t", " ", 3)}, {},
        ("corpus/c.tsv:1: malformed line", "3 such line(s)", "ingest.on_bad_line: skip")),
    "every line bad, skipped": Case(
        {"corpus/c.tsv": "a\nb\nc\n"}, {"ingest": {"on_bad_line": "skip"}},
        ("corpus/c.tsv: no document kept of 3 read (3 bad line)",), in_process=True),
    "swapped columns": Case(
        {"corpus/c.tsv": "".join(f"{text} {i}\t{label}\n" for i in range(3)
                                 for label, text in ZH_ROWS)}, {},
        ("distinct labels", "are the columns swapped?"), in_process=True),
    "empty text": Case(
        {"corpus/c.tsv": TSV_OK + "pos\t \n"}, {}, ("corpus/c.tsv:11: empty text",),
        in_process=True),
    "too few documents": Case(
        {"corpus/c.tsv": "pos\t好\npos\t很好\npos\t不错\nneg\t差\nneg\t坏\n"}, {},
        ("label 'neg' has 2 document(s)", "first at corpus/c.tsv:4"), in_process=True),
    "single label": Case(
        {"corpus/c.tsv": "pos\t好\npos\t很好\npos\t不错\n"}, {}, ("single label ('pos')",),
        in_process=True),
    "declared encoding is wrong": Case(
        {"corpus/c.tsv": TSV_OK.encode("gb18030")}, {"ingest": {"encoding": "utf-8"}},
        ("corpus/c.tsv:1: not valid utf-8",), in_process=True),
    "neither utf-8 nor gb18030": Case(
        {"corpus/c.tsv": b"pos\t\x80\xff\xfe\n"}, {},
        ("corpus/c.tsv:1: neither UTF-8 nor GB18030",), in_process=True),
    "archive member escapes": Case(
        {"corpus/evil.tar.gz": _tar({"ok.tsv": TSV_OK.encode(),
                                     f"../{ESCAPE_NAME}": TSV_OK.encode()})},
        {"ingest": {"source": "corpus/evil.tar.gz"}},
        (f"corpus/evil.tar.gz: unsafe archive member '../{ESCAPE_NAME}'",)),
    "test label unseen in train": Case(
        _splits("neutral"), {}, ("data/test.tsv: label 'neutral' never occurs in the train",),
        args=("vocab",), absent=VOCAB_FILES),
    "vocabulary ends up empty": Case(
        _splits(), {"vocab": {"min_count": 1000}},
        ("the vocabulary is empty", "vocab.min_count=1000"),
        args=("vocab",), absent=VOCAB_FILES, in_process=True),
    "train before vocab": Case(
        {}, {}, ("data/vocab.json: missing; run the vocabulary step first",),
        args=("train",), absent=TRAIN_FILES, in_process=True),
    # params.yaml is checked before any work: these never reach the data.
    "unknown key": Case({}, {"ingest": {"sourse": "x"}},
                        ("ingest.sourse: unknown key (did you mean ingest.source?)",)),
    "unknown section": Case({}, {"trian": {}}, ("trian: unknown section",)),
    "wrong type": Case(
        {}, {"train": {"max_epochs": "five"}}, ("train.max_epochs: must be int",),
        args=("train",), absent=TRAIN_FILES),
    "negative epochs": Case(
        {}, {"train": {"max_epochs": -3}}, ("train.max_epochs: must be >= 1, got -3",),
        args=("train",), absent=TRAIN_FILES),
    "no lstm layers": Case(
        {}, {"train": {"lstm_units": []}}, ("train.lstm_units: needs at least one layer",),
        args=("train",), absent=TRAIN_FILES),
    "unknown encoding": Case(
        {}, {"ingest": {"encoding": "klingon"}},
        ("ingest.encoding: must be auto or a Python codec name",)),
    "invalid yaml": Case(
        {}, params_text="ingest:\n  source: [unclosed\n",
        expect=("params.yaml:3:1: not valid YAML",)),
    "bad override": Case(
        {}, {}, ("train.max_epochs: must be >= 1, got 0",),
        args=("train", "-S", "train.max_epochs=0"), absent=TRAIN_FILES),
    "override without a value": Case(
        {}, {}, ("train.max_epochs: overrides look like section.key=value",),
        args=("ingest", "-S", "train.max_epochs")),
    # What works says what it did: the encoding it detected.
    "gb18030 is detected and reported": Case(
        {"corpus/c.tsv": TSV_OK.encode("gb18030")}, {}, ("encoding gb18030",), ok=True),
    "--debug shows the traceback": Case(
        {"corpus/c.tsv": "pos 好\n"}, {}, ("Traceback", "DataError"),
        args=("ingest", "--debug")),
    "--debug before the command": Case(
        {"corpus/c.tsv": "pos 好\n"}, {}, ("Traceback", "DataError"),
        args=("--debug", "ingest")),
}
PARAMS_ONLY = {"unknown key", "unknown section", "wrong type", "negative epochs",
               "no lstm layers", "unknown encoding", "invalid yaml", "bad override",
               "override without a value"}


def _setup(case: Case, root: Path) -> None:
    root.mkdir(parents=True)
    for rel, content in case.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            os.mkfifo(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    (root / "corpus").mkdir(exist_ok=True)  # sources under corpus/: no "unversioned" note
    if case.params_text is not None:
        (root / "params.yaml").write_text(case.params_text, encoding="utf-8")
        return
    params = {"ingest": {"source": "corpus/c.tsv", "val_size": 0.2, "test_size": 0.2},
              "vocab": {"tokenizer": "char", "min_count": 1, "workers": 1}}
    for section, values in case.params.items():
        params.setdefault(section, {}).update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True),
                                      encoding="utf-8")


def _rnnpipe(args: list[str], cwd: Path, **kwargs) -> Completed:
    # The timeout turns a hang (the FIFO case, if its check ever regresses) into a failure.
    return subprocess.run([RNNPIPE, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, **kwargs)


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Completed]]:
    """Every subprocess case run once, three at a time: `{name: (folder, result)}`."""
    base = tmp_path_factory.mktemp("cli")

    def one(item: tuple[int, str]) -> tuple[str, tuple[Path, Completed]]:
        number, name = item
        root = base / f"case{number}"
        case = CASES[name]
        _setup(case, root)
        return name, (root, _rnnpipe(list(case.args), root))

    assert not (Path(tempfile.gettempdir()) / ESCAPE_NAME).exists()
    names = [name for name, case in CASES.items() if not case.in_process]
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(one, enumerate(names)))


def assert_one_error_line(result: Completed, *fragments: str) -> str:
    output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 2, output
    assert "Traceback" not in result.stderr, output
    errors = [line for line in result.stderr.splitlines() if line.startswith(PREFIX)]
    assert len(errors) == 1, output
    assert result.stderr.strip().splitlines()[-1] == errors[0], output  # nothing after it
    assert all(fragment in errors[0] for fragment in fragments), output
    return errors[0]


@pytest.mark.parametrize("name", list(CASES))
def test_cli_reports_bad_input_in_one_line_and_writes_nothing(
        name: str, request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, run_cli) -> None:
    case = CASES[name]
    if case.in_process:
        root = tmp_path / "project"
        _setup(case, root)
        monkeypatch.chdir(root)
        result = run_cli(list(case.args))
    else:
        root, result = request.getfixturevalue("cli_results")[name]
    output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    if case.ok:
        assert result.returncode == 0, output
        assert all(fragment in result.stdout for fragment in case.expect), output
        assert "Traceback" not in result.stderr, output
        assert all((root / rel).exists() for rel in case.absent), output
        return
    assert not any((root / rel).exists() for rel in case.absent), output
    assert not leftovers(root), output
    if "--debug" in case.args:  # the exception escapes: Python's own exit status 1
        assert result.returncode == 1, output
        assert all(fragment in result.stderr for fragment in case.expect), output
        assert PREFIX not in result.stderr, output
        return
    assert_one_error_line(result, *case.expect)
    if name in PARAMS_ONLY:  # reported before any work: not even a folder
        assert sorted(p.name for p in root.iterdir()) == ["corpus", "params.yaml"], output
    if name == "archive member escapes":
        assert not (Path(tempfile.gettempdir()) / ESCAPE_NAME).exists()


def test_cli_environment_errors_are_one_line_too(tmp_path: Path) -> None:
    """An OSError (here: `data` is a file, so no split can be written) is the environment's
    fault, not the input's: one line, exit 1 (the flows retry those), no traceback."""
    _setup(CASES["gb18030 is detected and reported"], tmp_path / "p")
    (tmp_path / "p" / "data").write_text("in the way\n")
    result = _rnnpipe(["ingest"], tmp_path / "p")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{PREFIX}[Errno") and last.endswith(DEBUG_HINT)
    assert (tmp_path / "p" / "data").read_text() == "in the way\n"


# --- a typo'd override, on every entry point ----------------------------------------------------

ENTRY_POINTS = ["ingest", "vocab", "train", "evaluate", "run", "sweep", "schedule", "serve",
                "predict", "models", "ui"]
TYPO = "train.epoch: unknown key (did you mean train.max_epochs?)"


@pytest.fixture(scope="module")
def typo_results(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], tuple]:
    """`rnnpipe <command> -S train.epoch=2` (and with `--debug`) in a copy of the repository's
    params.yaml: `{(command, debug): (folder, result, seconds)}`."""
    base = tmp_path_factory.mktemp("typo")

    def one(item: tuple[str, bool]) -> tuple[tuple[str, bool], tuple]:
        command, debug = item
        root = base / f"{command}-{'debug' if debug else 'plain'}"
        root.mkdir()
        (root / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
        started = time.monotonic()
        result = _rnnpipe([command, *(["--debug"] if debug else []), "-S", "train.epoch=2"],
                          root)
        return item, (root, result, time.monotonic() - started)

    items = [(command, debug) for command in ENTRY_POINTS for debug in (False, True)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(one, items))


@pytest.mark.parametrize("command", ENTRY_POINTS)
def test_a_typo_in_an_override_is_one_line_on_every_entry_point(command, typo_results):
    root, result, seconds = typo_results[(command, False)]
    line = assert_one_error_line(result)
    assert line == f"{PREFIX}{TYPO}"
    assert result.stdout == ""
    assert (root / "params.yaml").read_bytes() == (REPO / "params.yaml").read_bytes()
    assert sorted(p.name for p in root.iterdir()) == ["params.yaml"]  # no store, no data
    # Caught before Prefect, TensorFlow or MLflow load (each takes seconds).
    assert seconds < 30, f"{command} took {seconds:.1f} s to reject a typo"


@pytest.mark.parametrize("command", ENTRY_POINTS)
def test_debug_shows_where(command, typo_results):
    root, result, _ = typo_results[(command, True)]
    assert result.returncode == 1, result.stderr
    assert "Traceback" in result.stderr and f"ParamsError: {TYPO}" in result.stderr
    assert PREFIX not in result.stderr
    assert (root / "params.yaml").read_bytes() == (REPO / "params.yaml").read_bytes()


@pytest.mark.parametrize("command", ["run", "sweep", "schedule", "predict"])
def test_a_bad_override_never_starts_prefect_or_loads_a_model(command, tmp_path, in_dir,
                                                              monkeypatch, capsys, run_cli):
    """The flows and Prefect are made unimportable: reaching them would be an ImportError (a
    traceback), not the one-line exit 2."""
    in_dir(tmp_path)
    (tmp_path / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    for module in ("prefect", "flows.prefect_api", "flows.pipeline", "flows.sweep",
                   "flows.deploy", "mlflow", "rnnpipe.model.backend", "tensorflow"):
        monkeypatch.setitem(sys.modules, module, None)
    result = run_cli([command, "-S", "train.epoch=2", *(["a text"] if command == "predict"
                                                          else [])])
    assert assert_one_error_line(result) == f"{PREFIX}{TYPO}"


def test_debug_in_process_raises_the_error(tmp_path, in_dir):
    in_dir(tmp_path)
    (tmp_path / "params.yaml").write_text("train:\n  max_epochs: 0\n")
    with pytest.raises(ParamsError, match="train.max_epochs: must be >= 1"):
        main(["--debug", "vocab"])
    with pytest.raises(ParamsError, match="train.max_epochs: must be >= 1"):
        main(["vocab", "--debug"])


# --- other exits ----------------------------------------------------------------------------------

def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"rnnpipe {__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_version_of_the_real_command(tmp_path):
    result = _rnnpipe(["--version"], tmp_path)
    assert result.returncode == 0 and result.stdout == f"rnnpipe {__version__}\n"


def test_predict_without_texts_or_input(tmp_path, in_dir, capsys, run_cli):
    in_dir(tmp_path)
    result = run_cli(["predict"])
    assert assert_one_error_line(result) == \
        f"{PREFIX}predict: give texts, or -i FILE (- for stdin)"
    assert list(tmp_path.iterdir()) == []


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(ENTRY_POINTS) <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        usage = capsys.readouterr().out
        assert usage.startswith("usage: rnnpipe "), command
        assert command in usage.splitlines()[0] or command == "serve"  # an alias of schedule


def test_unknown_commands_and_options_are_argparse_errors(capsys):
    for args in (["trian"], ["ingest", "--nope"], []):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
    assert "usage: rnnpipe" in capsys.readouterr().err


def test_a_step_records_its_error_for_the_entry_point_that_started_it(
        tmp_path, in_dir, monkeypatch, capsys, run_cli):
    """With RNNPIPE_ERROR_FILE set (DVC stages under the flow, sweep trials), the step writes
    its error there and leaves the one line to the entry point."""
    in_dir(tmp_path)
    _setup(CASES["single label"], tmp_path / "p")
    in_dir(tmp_path / "p")
    monkeypatch.setenv(ERROR_FILE_ENV, str(tmp_path / "error.json"))
    result = run_cli(["ingest"])
    assert result.returncode == 2 and PREFIX not in result.stderr
    record = read_error_record(tmp_path / "error.json")
    assert (record.step, record.exit_code, record.kind) == ("ingest", 2, "DataError")
    assert "single label ('pos')" in record.message


def test_interrupt_and_bugs(tmp_path, in_dir, monkeypatch, capsys, run_cli):
    in_dir(tmp_path)
    (tmp_path / "params.yaml").write_text("{}\n")
    from rnnpipe.steps import ingest

    def interrupted(params):
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest, "main", interrupted)
    result = run_cli(["ingest"])
    assert result.returncode == 130 and PREFIX not in result.stderr

    def bug(params):
        raise ValueError("a bug keeps its traceback")

    monkeypatch.setattr(ingest, "main", bug)
    with pytest.raises(ValueError, match="a bug keeps its traceback"):
        main(["ingest"])


def test_format_models():
    rows = [{"name": "rnnpipe-news", "version": "2", "aliases": ["champion", "candidate"],
             "test_accuracy": "0.91234", "test_macro_f1": "0.9", "data_md5": "0123456789abcdef",
             "decision": "promoted", "reason": "test_macro_f1 0.9 >= champion v1's 0.8"},
            {"name": "rnnpipe-news", "version": "1", "aliases": [], "test_accuracy": None,
             "test_macro_f1": "", "data_md5": "", "decision": "", "reason": ""}]
    assert format_models(rows).splitlines() == [
        "model         version  aliases             test acc  test F1  data md5  decision",
        "rnnpipe-news  v2       champion,candidate  0.9123    0.9000   01234567  promoted",
        "    reason: test_macro_f1 0.9 >= champion v1's 0.8",
        "rnnpipe-news  v1       -                   -         -        -         -"]
