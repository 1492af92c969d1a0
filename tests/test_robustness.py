"""Robustness: every bad input is one clear error line and leaves no outputs; archives are
extracted safely; outputs are written atomically; a SIGKILLed training run resumes where it
stopped; two pipelines share one MLflow SQLite store; nothing unsafe is loaded or exposed.

The CLI cases run the real `rnnpipe` command in throwaway folders, a few at a time (each pays
for importing MLflow); they share one MLflow store, created once. The kill-and-resume and the
concurrent-pipelines tests start real processes and take most of this module's time.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from rnnpipe.config import IngestParams, VocabParams
from rnnpipe.errors import DataError
from rnnpipe.ingest import ingest, read_split
from rnnpipe.io import atomic_open, atomic_path, write_json
from rnnpipe.vocab import vocabulary
from tests.conftest import (
    BIN,
    REPO,
    TINY_TRAIN,
    make_en_corpus,
    make_project,
    make_zh_corpus,
    run,
    write_tsv,
)

RNNPIPE = str(BIN / "rnnpipe")
Completed = subprocess.CompletedProcess
LEAKY_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME",
             "RNNPIPE_PREFECT_FLOW_RUN_ID", "RNNPIPE_PREFECT_FLOW_RUN_NAME", "DVC_EXP_NAME",
             "DVC_EXP_BASELINE_REV", "DVC_ROOT")
SPLIT_FILES = ("data/train.tsv", "data/val.tsv", "data/test.tsv", "reports/ingest.json")
VOCAB_FILES = ("data/tokens", "data/vocab.json", "reports/vocab.json")
TRAIN_FILES = ("models/model.keras", "reports/history.csv", "reports/train.json")


def env_with_store(store: str) -> dict[str, str]:
    """The environment without the developer's tracking settings, logging to `store`."""
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV}
    env["MLFLOW_TRACKING_URI"] = store
    return env


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], str]:
    """A factory of fresh MLflow SQLite stores: copies of one created (and migrated) once, which
    saves every process below the seconds MLflow spends creating its tables."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("stores")
    template = folder / "template.db"
    MlflowClient(f"sqlite:///{template}").search_experiments()

    def make() -> str:
        db = folder / f"{uuid.uuid4().hex}.db"
        shutil.copy(template, db)
        return f"sqlite:///{db}"

    return make


def leftovers(root: Path) -> list[str]:
    """Temporary files an atomic write would leave if it had been interrupted."""
    return [str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name]


# --- every bad input through the real CLI ------------------------------------------------------

TSV_OK = "".join(f"{label}\t{text}\n" for label, text in make_zh_corpus(5))


def _tar(members: dict[str, bytes | tuple[str, str]]) -> bytes:
    """A .tar.gz; a tuple value `(kind, target)` is a `sym` or `hard` link."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                kind, target = content
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                info.linkname = target
                tf.addfile(info)
            else:
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in members.items():
            zf.writestr(zipfile.ZipInfo(name), content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)  # S_IFLNK | 0777
            zf.writestr(info, target)
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
    # Run as `rnnpipe.cli.main()` in this process: the same code path minus the process, for
    # the cases whose subprocess would only repeat what another one proves (MLflow's import
    # costs seconds of CPU per process).
    in_process: bool = False


def _splits(test_label: str = "pos") -> dict[str, str]:
    rows = make_zh_corpus(6)
    train = "".join(f"{label}\t{text}\n" for label, text in rows[:8])
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
    # params.yaml is checked before any work: these never reach MLflow or the data.
    "unknown key": Case({}, {"ingest": {"sourse": "x"}}, ("ingest.sourse: unknown key",)),
    "unknown section": Case({}, {"trian": {}}, ("trian: unknown section",)),
    "wrong type": Case(
        {}, {"train": {"epochs": "five"}}, ("train.epochs: must be int",),
        args=("train",), absent=TRAIN_FILES),
    "negative epochs": Case(
        {}, {"train": {"epochs": -3}}, ("train.epochs: must be >= 1, got -3",),
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
    # What works says what it did: the encoding it detected.
    "gb18030 is detected and reported": Case(
        {"corpus/c.tsv": TSV_OK.encode("gb18030")}, {}, ("encoding gb18030",), ok=True),
    "--debug shows the traceback": Case(
        {"corpus/c.tsv": "pos 好\n"}, {}, ("Traceback", "DataError"),
        args=("ingest", "--debug")),
}
PARAMS_ONLY = {"unknown key", "unknown section", "wrong type", "negative epochs",
               "no lstm layers", "unknown encoding", "invalid yaml"}


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


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory: pytest.TempPathFactory,
                empty_store: Callable[[], str]) -> dict[str, tuple[Path, Completed]]:
    """Every subprocess case run once, three at a time; `{name: (folder,
    result)}`. The cases share one store: concurrent logging is part of what is tested."""
    base = tmp_path_factory.mktemp("cli")
    env = env_with_store(empty_store())

    def one(item: tuple[int, str]) -> tuple[str, tuple[Path, Completed]]:
        number, name = item
        root = base / f"case{number}"
        case = CASES[name]
        _setup(case, root)
        # The FIFO case must not hang if the check ever regresses: the timeout turns a hang
        # into a failure.
        result = subprocess.run([RNNPIPE, *case.args], cwd=root, env=env, capture_output=True,
                                text=True, timeout=300)
        return name, (root, result)

    assert not (Path(tempfile.gettempdir()) / ESCAPE_NAME).exists()
    names = [name for name, case in CASES.items() if not case.in_process]
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(one, enumerate(names)))


def _run_in_process(case: Case, root: Path, store: str, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture) -> Completed:
    """`rnnpipe <args>` as `cli.main()` here, in `root`, logging to `store`."""
    import mlflow

    from rnnpipe.cli import main

    _setup(case, root)
    for key in LEAKY_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.chdir(root)
    previous_uri = mlflow.get_tracking_uri()
    capsys.readouterr()
    try:
        main(list(case.args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        mlflow.set_tracking_uri(previous_uri)  # tracking.client set it for the step
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["rnnpipe", *case.args], code, out, err)


@pytest.mark.parametrize("name", list(CASES))
def test_cli_reports_bad_input_in_one_line_and_writes_nothing(
        name: str, request: pytest.FixtureRequest, tmp_path: Path,
        empty_store: Callable[[], str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    case = CASES[name]
    if case.in_process:
        root = tmp_path / "project"
        result = _run_in_process(case, root, empty_store(), monkeypatch, capsys)
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
        return
    assert result.returncode == 2, output
    assert "Traceback" not in result.stderr, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("rnnpipe: error:")]
    assert len(errors) == 1, output
    assert result.stderr.strip().splitlines()[-1] == errors[0], output  # nothing after it
    assert all(fragment in errors[0] for fragment in case.expect), output
    if name in PARAMS_ONLY:  # reported before any work: not even an MLflow run or a folder
        assert sorted(p.name for p in root.iterdir()) == ["corpus", "params.yaml"], output
    if name == "archive member escapes":
        assert not (Path(tempfile.gettempdir()) / ESCAPE_NAME).exists()


def test_cli_environment_errors_are_one_line_too(tmp_path: Path,
                                                 empty_store: Callable[[], str]) -> None:
    """An OSError (here: `data` is a file, so no split can be written) is the environment's
    fault, not the input's: one line, exit 1 (the flow retries those), no traceback."""
    _setup(CASES["gb18030 is detected and reported"], tmp_path / "p")
    (tmp_path / "p" / "data").write_text("in the way\n")
    result = subprocess.run([RNNPIPE, "ingest"], cwd=tmp_path / "p", capture_output=True,
                            text=True, timeout=300,
                            env=env_with_store(empty_store()))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("rnnpipe: error: [Errno")


# --- archives -----------------------------------------------------------------------------------

def run_ingest(root: Path, source: Path | str, **kwargs) -> dict:
    params = IngestParams(source=str(source), val_size=0.2, test_size=0.2, **kwargs)
    return ingest(params, data_dir=root / "data", summary_path=root / "reports" / "ingest.json")


def _folder_members(prefix: str) -> dict[str, bytes]:
    rows = make_en_corpus(n_per_class=4)
    return {f"{prefix}{label}/{i:03}.txt": text.encode() for i, (label, text) in enumerate(rows)}


@pytest.mark.parametrize(("name", "payload"), [
    ("news.zip", _zip({"news.tsv": TSV_OK.encode()})),
    ("news.tar.gz", _tar({"news.tsv": TSV_OK.encode()})),
    ("news.tgz", _tar({"wrapper/news.csv": ("label,text\n" + TSV_OK.replace("\t", ",")).encode(),
                       "wrapper/.DS_Store": b"\x00"})),
    ("folders.zip", _zip({**_folder_members("cnews/"), "__MACOSX/._x": b"\x00"})),
    ("folders.tar", _tar(_folder_members("a/b/"))),
])
def test_archives_hold_a_file_or_a_label_folder_corpus(tmp_path: Path, name: str,
                                                       payload: bytes) -> None:
    archive = tmp_path / name
    archive.write_bytes(payload)
    summary = run_ingest(tmp_path, archive)
    assert summary["archive"] == ("zip" if name.endswith(".zip") else "tar")
    assert summary["documents_kept"] in (10, 20)
    assert sum(len(read_split(tmp_path / "data" / f"{s}.tsv")[0])
               for s in ("train", "val", "test")) == summary["documents_kept"]
    assert not leftovers(tmp_path)


def test_archive_members_are_named_in_bad_line_reports(tmp_path: Path) -> None:
    archive = tmp_path / "c.zip"
    archive.write_bytes(_zip({"inner/c.tsv": (TSV_OK + "no separator\n").encode()}))
    with pytest.raises(DataError, match=rf"{re.escape(str(archive))}!inner/c.tsv:11: malformed"):
        run_ingest(tmp_path, archive)
    summary = run_ingest(tmp_path, archive, on_bad_line="skip")
    assert summary["first_bad_lines"] == [f"{archive}!inner/c.tsv:11"]


@pytest.mark.parametrize(("payload", "member", "why"), [
    (_tar({"../x.tsv": b"pos\tx\n"}), "../x.tsv", "'..'"),
    (_tar({"a/../../x.tsv": b"pos\tx\n"}), "a/../../x.tsv", "'..'"),
    (_tar({"/tmp/x.tsv": b"pos\tx\n"}), "/tmp/x.tsv", "absolute path"),
    (_tar({"link": ("sym", "/etc")}), "link", "symlink to '/etc'"),
    (_tar({"a/link": ("sym", "../../outside")}), "a/link", "symlink"),
    (_tar({"hard": ("hard", "../../etc/passwd")}), "hard", "hard link"),
    # Each link alone looks harmless; through `d` → `.`, `d/d/d/l` points above the target.
    # tarfile's data filter, checking the real file system, catches it.
    (_tar({"d": ("sym", "."), "d/d/d/l": ("sym", "../../../outside")}), "d/d/d/l",
     "outside the destination"),
    (_zip({"../x.tsv": b"pos\tx\n"}), "../x.tsv", "'..'"),
    (_zip({"/abs/x.tsv": b"pos\tx\n"}), "/abs/x.tsv", "absolute path"),
    (_zip({"..\\x.tsv": b"pos\tx\n"}), "..\\\\x.tsv", "'..'"),
    (_zip({}, symlinks={"link": "../../etc/passwd"}), "link", "symlink"),
], ids=["tar-dotdot", "tar-nested-dotdot", "tar-absolute", "tar-symlink-absolute",
        "tar-symlink-up", "tar-hardlink", "tar-symlink-chain", "zip-dotdot", "zip-absolute",
        "zip-backslash", "zip-symlink"])
def test_archive_members_escaping_the_target_are_refused(tmp_path: Path, payload: bytes,
                                                         member: str, why: str) -> None:
    suffix = ".zip" if payload[:2] == b"PK" else ".tar.gz"
    archive = tmp_path / f"evil{suffix}"
    archive.write_bytes(payload)
    with pytest.raises(DataError) as error:
        run_ingest(tmp_path, archive)
    message = str(error.value)
    assert f"unsafe archive member '{member}'" in message and why in message, message
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()


@pytest.mark.parametrize(("name", "payload", "message"), [
    ("broken.zip", b"PK\x03\x04 not really", "not a readable zip archive"),
    ("broken.tar.gz", b"\x1f\x8b\x08 truncated", "cannot extract|not a readable tar"),
    ("empty.zip", _zip({}), "the archive is empty"),
    ("two.zip", _zip({"a.tsv": b"x", "b.tsv": b"y"}), "expected one TSV/CSV file"),
    ("fifo.tar", None, "device or FIFO"),
])
def test_unusable_archives(tmp_path: Path, name: str, payload: bytes | None,
                           message: str) -> None:
    archive = tmp_path / name
    if payload is None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tf:
            info = tarfile.TarInfo("pipe")
            info.type = tarfile.FIFOTYPE
            tf.addfile(info)
        payload = buffer.getvalue()
    archive.write_bytes(payload)
    with pytest.raises(DataError, match=message):
        run_ingest(tmp_path, archive)


# --- unreadable sources -------------------------------------------------------------------------

def test_unreadable_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Permission errors, folders where a file is expected, and FIFOs (which would block).

    Tests run as root here, where `chmod 000` does not stop a read; the permission case is
    simulated (the real one runs below when not root).
    """
    folder = tmp_path / "folder.tsv"
    folder.mkdir()
    with pytest.raises(DataError, match="is a folder"):
        run_ingest(tmp_path, folder, format="tsv")
    fifo = tmp_path / "pipe.tsv"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"pipe\.tsv: cannot read: not a regular file"):
        run_ingest(tmp_path, fifo)
    corpus = tmp_path / "folder"
    (corpus / "pos").mkdir(parents=True)
    (corpus / "pos" / "a.txt").mkdir()  # a folder named like a document
    with pytest.raises(DataError, match=r"a.txt: cannot read: a directory"):
        run_ingest(tmp_path, corpus)

    path = write_tsv(tmp_path / "c.tsv", make_zh_corpus(5))

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DataError, match=r"c\.tsv: cannot read: permission denied"):
        run_ingest(tmp_path, path)
    assert not (tmp_path / "data").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root reads files whatever their mode")
def test_permission_denied_for_real(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "c.tsv", make_zh_corpus(5))
    path.chmod(0)
    with pytest.raises(DataError, match="permission denied"):
        run_ingest(tmp_path, path)


# --- atomic writes ------------------------------------------------------------------------------

def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "metrics.json"
    write_json(target, {"accuracy": 0.9})
    before = target.read_bytes()
    with pytest.raises(TypeError):
        write_json(target, {"accuracy": object()})  # fails half-way through json.dump
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write('{"accuracy": ')
        raise RuntimeError("killed")
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]
    with atomic_path(tmp_path / "models" / "best.weights.h5") as tmp:
        assert tmp.name.endswith(".weights.h5")  # Keras checks the suffix of what it saves


WRITER = """
import os, signal, sys
from rnnpipe.io import atomic_open
with atomic_open(sys.argv[1]) as fh:
    fh.write("half of the new cont")
    fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writer_leaves_the_old_file_and_its_temp_is_cleaned_later(
        tmp_path: Path) -> None:
    target = tmp_path / "data" / "train.tsv"
    with atomic_open(target) as fh:
        fh.write("pos\told\n")
    killed = subprocess.run([sys.executable, "-c", WRITER, str(target)], cwd=REPO,
                            capture_output=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert target.read_text() == "pos\told\n"
    (stale,) = leftovers(tmp_path)  # SIGKILL skips every cleanup...
    with atomic_open(target) as fh:  # ...so the next writer of the file removes it
        fh.write("pos\tnew\n")
    assert target.read_text() == "pos\tnew\n" and not leftovers(tmp_path), stale


# Lines that write files without rnnpipe.io, and why that is fine.
NOT_OUTPUTS = {
    ("registry.py", 'open(lock_path, "a")'): "an empty lock file",
    ("train.py", 'zipfile.ZipFile(path, "w")'): "rewrites the temp file inside atomic_path",
    ("train.py", "archive.writestr("): "same",
    ("vocab.py", "vocab.save("): "Vocabulary.save is write_json",
    ("sweep.py", "shutil.copy"): "copies the project into a trial's scratch folder",
    ("tracking.py", "shutil.copy2(path, copy)"):
        "a pending artifact copy; the journal (write_json) names it only once it is whole",
    ("sweep.py", "write_text("): "the scratch copy's DVC config",
}
WRITES = re.compile(r"""open\([^)]*["'][wax]b?\+?["']|\.write_text\(|\.write_bytes\(|\.save\(|"""
                    r"""\.save_weights\(|savefig\(|\.to_csv\(|np\.save|json\.dump\(|"""
                    r"""shutil\.copy|\.writestr\(|ZipFile\([^)]*["']w""")


def test_every_output_is_written_through_rnnpipe_io() -> None:
    """A new writer must use `rnnpipe.io` (or write into its temp path) or be listed above."""
    unexplained = []
    for path in sorted([*(REPO / "rnnpipe").glob("*.py"), *(REPO / "flows").glob("*.py")]):
        if path.name == "io.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not WRITES.search(line) or re.search(r"\btmp\b|\bfh\b", line):
                continue
            if not any(name == path.name and snippet in line for name, snippet in NOT_OUTPUTS):
                unexplained.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not unexplained, "write these with rnnpipe.io:\n" + "\n".join(unexplained)


# --- safety -------------------------------------------------------------------------------------

def _calls(name: str) -> list[tuple[str, ast.Call]]:
    found = []
    for path in sorted([*(REPO / "rnnpipe").glob("*.py"), *(REPO / "flows").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
                if called == name:
                    found.append((f"{path.name}:{node.lineno}", node))
    return found


def test_keras_models_load_in_safe_mode_and_nothing_is_unpickled() -> None:
    loads = [(where, call) for where, call in _calls("load_model")
             if "keras" in ast.unparse(call.func)]
    assert loads, "expected the classifier and the training resume to load .keras files"
    for where, call in loads:
        safe = {k.arg: ast.unparse(k.value) for k in call.keywords}.get("safe_mode")
        assert safe == "True", f"{where}: keras load_model without safe_mode=True"
    source = "\n".join(p.read_text(encoding="utf-8") for p in
                       [*(REPO / "rnnpipe").glob("*.py"), *(REPO / "flows").glob("*.py")])
    for unsafe in ("import pickle", "cloudpickle", "joblib.load", "allow_pickle=True",
                   "torch.load", "yaml.load(", "yaml.unsafe_load", "eval(", "exec(",
                   "safe_mode=False"):
        assert unsafe not in source, unsafe


def test_servers_bind_to_localhost_by_default() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^HOST \?= 127\.0\.0\.1$", makefile, re.M)
    hosts = re.findall(r"--host\s+(\S+)", makefile)
    assert hosts and set(hosts) == {"$(HOST)"}, hosts
    everything = makefile + "".join(p.read_text(encoding="utf-8") for p in
                                    [*(REPO / "rnnpipe").glob("*.py"),
                                     *(REPO / "flows").glob("*.py")])
    assert "0.0.0.0" not in everything
    # The sweep's local Dask cluster: `host` binds the scheduler and workers; the dashboard has
    # its own address, and Dask's default (":8787") is every interface. (Read, not imported:
    # importing Prefect takes seconds.)
    sweep = (REPO / "flows" / "sweep.py").read_text(encoding="utf-8")
    assert '"host": "127.0.0.1"' in sweep
    assert re.search(r'"dashboard_address": "127\.0\.0\.1:\d+"', sweep)


# --- kill -9 mid-training, then resume ----------------------------------------------------------

RESUME_EPOCHS = 8


def _prepared_project(root: Path, store: str) -> Path:
    """A project with data and vocabulary ready (in-process: no subprocess needed for them)."""
    root.mkdir(parents=True)
    corpus = write_tsv(root / "corpus.tsv", make_zh_corpus(n_per_class=100))
    ingest(IngestParams(source=str(corpus), val_size=0.2, test_size=0.2), root / "data",
           root / "reports" / "ingest.json")
    vocabulary(VocabParams(tokenizer="char", min_count=1, workers=1), root / "data",
               root / "reports" / "vocab.json")
    params = {"train": {**TINY_TRAIN, "epochs": RESUME_EPOCHS, "patience": RESUME_EPOCHS},
              "mlflow": {"tracking_uri": store}}
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return root


def _finished_epochs(checkpoint: Path) -> int:
    try:
        # Written atomically, so never half a JSON document, however often it is read.
        return len(json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))["history"])
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_sigkilled_training_resumes_and_ends_like_an_uninterrupted_run(
        tmp_path: Path, empty_store: Callable[[], str]) -> None:
    store = empty_store()
    env = env_with_store(store)
    whole = _prepared_project(tmp_path / "whole", store)
    killed = tmp_path / "killed"
    shutil.copytree(whole, killed)
    checkpoint = killed / ".rnnpipe" / "checkpoint"

    def start(root: Path) -> subprocess.Popen:
        log = open(root / "train.log", "w")  # noqa: SIM115 (the process owns it)
        return subprocess.Popen([RNNPIPE, "train"], cwd=root, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    uninterrupted, victim = start(whole), start(killed)
    try:
        deadline = time.monotonic() + 300
        while _finished_epochs(checkpoint) < 1:
            assert victim.poll() is None, (killed / "train.log").read_text()
            assert time.monotonic() < deadline, "no epoch finished in 300 s"
            time.sleep(0.05)
        os.killpg(victim.pid, signal.SIGKILL)  # mid-training: epochs remain
        assert victim.wait(timeout=60) == -signal.SIGKILL
        done = _finished_epochs(checkpoint)
        assert 1 <= done < RESUME_EPOCHS
        assert not any((killed / rel).exists() for rel in TRAIN_FILES)

        resumed = run([RNNPIPE, "train"], killed, env=env, timeout=600)
        assert uninterrupted.wait(timeout=600) == 0, (whole / "train.log").read_text()
    finally:
        for process in (uninterrupted, victim):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    logged = resumed.stdout + resumed.stderr
    assert f"train: resuming after epoch {done} from .rnnpipe/checkpoint" in logged, logged
    assert f"Epoch {done + 1}/{RESUME_EPOCHS}" in logged and "Epoch 1/" not in logged, logged
    for rel in ("reports/history.csv", "reports/train.json"):
        assert (killed / rel).read_bytes() == (whole / rel).read_bytes(), rel
    # The same weights, bit for bit. (config.json may differ in Keras' `shared_object_id`
    # annotations: a freshly built model shares objects a loaded one does not.)
    weights = [zipfile.ZipFile(root / "models" / "model.keras").read("model.weights.h5")
               for root in (killed, whole)]
    assert weights[0] == weights[1]
    history = (killed / "reports" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + RESUME_EPOCHS
    assert not checkpoint.exists() and not leftovers(killed)

    # The killed process's MLflow run is not left RUNNING forever: the next one closed it.
    db = sqlite3.connect(store.removeprefix("sqlite:///"))
    statuses = sorted(status for (status,) in db.execute("SELECT status FROM runs"))
    db.close()
    assert statuses.count("KILLED") == 1 and "RUNNING" in statuses, statuses


# --- two pipelines, one MLflow store ------------------------------------------------------------

@pytest.mark.slow
def test_two_pipelines_log_to_one_new_sqlite_store_at_once(tmp_path: Path) -> None:
    """Two checkouts, `dvc repro` in both at the same moment, one SQLite store that neither has
    created yet: both finish, with complete FINISHED runs (params, metrics, model)."""
    import mlflow
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    (tmp_path / "shared").mkdir()
    env = env_with_store(store)
    projects = {}
    for name, rows, tokenizer in (("zh", make_zh_corpus(30), "char"),
                                  ("en", make_en_corpus(12), "word")):
        root = tmp_path / name
        make_project(root, root / "corpus" / "c.tsv", tokenizer, train={"epochs": 2})
        # dvc.yaml's ingest stage depends on corpus/ (bring-your-own-data convention).
        (root / "corpus").mkdir(exist_ok=True)
        write_tsv(root / "corpus" / "c.tsv", rows)
        projects[name] = root

    started = {name: subprocess.Popen([str(BIN / "dvc"), "repro"], cwd=root, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True)
               for name, root in projects.items()}
    try:
        outputs = {name: process.communicate(timeout=900)[0]
                   for name, process in started.items()}
    finally:
        for process in started.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    for name, process in started.items():
        assert process.returncode == 0, f"{name}:\n{outputs[name]}"

    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("rnnpipe").experiment_id])
    assert len(runs) == 2
    assert {r.data.params["ingest.source"] for r in runs} == {
        str(projects["zh"] / "corpus" / "c.tsv"), str(projects["en"] / "corpus" / "c.tsv")}
    for r in runs:
        assert r.info.status == "FINISHED", r.data.tags.get("error")
        assert r.data.params["train.epochs"] == "2"
        for metric in ("test_accuracy", "test_macro_f1", "ingest.documents_kept", "vocab.size"):
            assert metric in r.data.metrics, metric
        assert len(client.get_metric_history(r.info.run_id, "val_loss")) == 2
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id, "reports")}
        assert "reports/metrics.json" in artifacts
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(store)
        try:
            model = mlflow.models.get_model_info(r.data.tags["rnnpipe.model_uri"])
        finally:
            mlflow.set_tracking_uri(previous)
        assert "python_function" in model.flavors
    versions = client.search_model_versions("name = 'rnnpipe'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert {v.run_id for v in versions} == {r.info.run_id for r in runs}
