"""Fixtures that make tiny real data and throwaway rnnpipe projects.

Tests mirror the package (`tests/corpus/` for `rnnpipe/corpus/`, ...); `tests/e2e/` runs the
real tools end to end (DVC, the Prefect engine, MLflow stores and servers on 127.0.0.1). Helpers
are fixtures (factories where a test needs several), never imported from here.

A project is a temp dir with `dvc.yaml`, a `params.yaml` tuned to be tiny, a copy of the
`rnnpipe/` sources (they are DVC dependencies, and `python -m rnnpipe` runs that copy), `git init`
and `dvc init`: the real tools run in it, with an MLflow SQLite store under its own `mlruns/`.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
for key, value in {"DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "3",
                   "KERAS_BACKEND": "tensorflow", "PYTHONHASHSEED": "0",
                   "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                   "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
                   "GIT_AUTHOR_NAME": "rnnpipe tests", "GIT_AUTHOR_EMAIL": "tests@localhost",
                   "GIT_COMMITTER_NAME": "rnnpipe tests",
                   "GIT_COMMITTER_EMAIL": "tests@localhost"}.items():
    os.environ.setdefault(key, value)
# Tracking settings from the developer's shell must not leak into the tests' own stores.
for key in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "RNNPIPE_ERROR_FILE",
            "RNNPIPE_PREFECT_FLOW_RUN_ID", "RNNPIPE_PREFECT_FLOW_RUN_NAME", "DVC_EXP_NAME",
            "DVC_EXP_BASELINE_REV", "DVC_ROOT", "PREFECT_API_URL", "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD"):
    os.environ.pop(key, None)

# Prefect's ephemeral API keeps its SQLite database under PREFECT_HOME: give each test process
# (each pytest-xdist worker) its own, so tests neither share one database concurrently nor touch
# the developer's ~/.prefect.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="rnnpipe-tests-prefect-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)

ZH_POSITIVE = ["质量很好", "非常满意", "物超所值", "服务热情", "房间干净", "推荐购买", "速度很快", "值得一看"]
ZH_NEGATIVE = ["质量太差", "非常失望", "价格太贵", "服务冷淡", "房间很脏", "不要购买", "速度很慢", "浪费时间"]
ZH_FILLER = ["这次", "酒店", "这本书", "东西", "总的来说", "我觉得", "朋友说", "包装"]
EN_TOPICS = {
    "sports": ["match", "goal", "team", "coach", "league", "score"],
    "business": ["market", "shares", "profit", "company", "investors", "bank"],
    "science": ["research", "study", "scientists", "planet", "cells", "energy"],
    "politics": ["election", "minister", "parliament", "vote", "policy", "party"],
    "tech": ["software", "chip", "startup", "app", "internet", "device"],
}
EN_FILLER = ["the", "a", "on", "today", "new", "report", "says", "after", "week", "big"]
TINY_TRAIN = {"embedding_dim": 8, "lstm_units": [8], "fc_units": 8, "max_len": 12,
              "batch_size": 16, "max_epochs": 2, "patience": 1, "learning_rate": 0.01}


class Corpora:
    """Tiny labelled corpora with real structure (a model can learn them)."""

    @staticmethod
    def zh(n_per_class: int = 40, seed: int = 0) -> list[tuple[str, str]]:
        """Two-class Chinese reviews built from sentiment phrases and filler."""
        rng = random.Random(seed)
        rows = []
        for label, phrases in (("pos", ZH_POSITIVE), ("neg", ZH_NEGATIVE)):
            for _ in range(n_per_class):
                words = [rng.choice(ZH_FILLER), rng.choice(phrases), rng.choice(ZH_FILLER),
                         rng.choice(phrases)]
                rows.append((label, "，".join(words) + "。"))
        rng.shuffle(rows)
        return rows

    @staticmethod
    def en(n_per_class: int = 20, seed: int = 0,
           topics: tuple[str, ...] = tuple(EN_TOPICS)) -> list[tuple[str, str]]:
        """English news headlines built from topic words and filler (five topics by default)."""
        rng = random.Random(seed)
        rows = []
        for label in topics:
            for _ in range(n_per_class):
                tokens = [rng.choice(EN_FILLER) for _ in range(4)] + rng.sample(EN_TOPICS[label], 3)
                rng.shuffle(tokens)
                rows.append((label, " ".join(tokens).capitalize() + "."))
        rng.shuffle(rows)
        return rows

    @staticmethod
    def write(path: Path, rows: list[tuple[str, str]], encoding: str = "utf-8") -> Path:
        """Write `label<TAB>text` lines."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes("".join(f"{label}\t{text}\n" for label, text in rows).encode(encoding))
        return path


@pytest.fixture(scope="session")
def corpora() -> Corpora:
    """Makers of tiny corpora: `corpora.zh()`, `corpora.en()`, `corpora.write(path, rows)`."""
    return Corpora()


@pytest.fixture(scope="session")
def tiny_train() -> dict:
    """`train` params small enough to train in seconds."""
    return dict(TINY_TRAIN)


@pytest.fixture(scope="session")
def trained_workspace(corpora: Corpora, tiny_train: dict) -> Callable[[Path, int], Path]:
    """`trained_workspace(root, max_epochs)`: five English topics ingested, segmented and trained
    in-process into `root`, in the project layout (`corpus/`, `data/`, `models/`, `reports/`);
    returns `root`."""
    def make(root: Path, max_epochs: int) -> Path:
        import dataclasses

        from rnnpipe.config import IngestParams, TrainParams, VocabParams
        from rnnpipe.steps.ingest import ingest
        from rnnpipe.steps.train import train
        from rnnpipe.steps.vocab import vocabulary

        corpus = corpora.write(root / "corpus" / "news.tsv", corpora.en(n_per_class=12))
        data, reports = root / "data", root / "reports"
        ingest(IngestParams(source=str(corpus), val_size=0.2, test_size=0.2), data,
               reports / "ingest.json")
        vocabulary(VocabParams(tokenizer="word", min_count=1, workers=1), data,
                   reports / "vocab.json")
        train(dataclasses.replace(TrainParams(**tiny_train), max_epochs=max_epochs),
              ids_root=data / "ids", vocab_path=data / "vocab.json",
              model_path=root / "models" / "model.keras", history_path=reports / "history.csv",
              summary_path=reports / "train.json", checkpoint_dir=root / ".rnnpipe" / "checkpoint")
        return root

    return make


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture,
            monkeypatch: pytest.MonkeyPatch) -> Callable[..., subprocess.CompletedProcess]:
    """`run_cli(args, stdin=None)`: `rnnpipe <args>` as `cli.main()` in this process; its exit
    status and what it printed."""
    def run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        import io

        from rnnpipe.cli import main

        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["rnnpipe", *args], code, out, err)

    return run


@pytest.fixture
def zh_tsv(tmp_path: Path, corpora: Corpora) -> Path:
    """A tiny two-class Chinese `label<TAB>text` corpus."""
    return corpora.write(tmp_path / "reviews.tsv", corpora.zh())


@pytest.fixture
def en_tsv(tmp_path: Path, corpora: Corpora) -> Path:
    """A tiny five-class English news corpus."""
    return corpora.write(tmp_path / "news.tsv", corpora.en())


def _run(cmd: list[str], cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                            **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} exited {result.returncode}\n--- stdout\n{result.stdout}"
                             f"\n--- stderr\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def sh() -> Callable[..., subprocess.CompletedProcess]:
    """Run a command (`rnnpipe`, `dvc`, ... from this venv), showing its output if it fails:
    `sh(["dvc", "repro"], cwd)`, `check=False` to inspect a failure."""
    return _run


def _make_project(root: Path, source: Path | str, tokenizer: str, train: dict | None = None,
                  vocab: dict | None = None, params: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "rnnpipe", root / "rnnpipe",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("corpus", "embeddings", "mlruns"):
        (root / folder).mkdir(exist_ok=True)
    shutil.copy(REPO / "corpus" / "README.md", root / "corpus" / "README.md")
    shutil.copy(REPO / "embeddings" / "README.md", root / "embeddings" / "README.md")
    shutil.copy(REPO / "mlruns" / ".gitignore", root / "mlruns" / ".gitignore")
    data = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    data["ingest"].update(source=str(source), val_size=0.2, test_size=0.2)
    data["vocab"].update(tokenizer=tokenizer, min_count=1, workers=1, **(vocab or {}))
    data["train"].update(TINY_TRAIN, **(train or {}))
    for section, values in (params or {}).items():
        data[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    _run(["git", "init", "-q"], root)
    _run([BIN / "dvc", "init", "-q"], root)
    _run(["git", "add", "-A"], root)
    _run(["git", "commit", "-qm", "project"], root)
    return root


@pytest.fixture(scope="session")
def new_project() -> Callable[..., Path]:
    """Make a throwaway rnnpipe project (git + DVC):
    `new_project(root, source, tokenizer, train=None, vocab=None, params=None)`; `params` maps
    other sections to updates."""
    return _make_project


@pytest.fixture
def zh_project(tmp_path: Path, corpora: Corpora) -> Path:
    """A tiny Chinese two-class project (jieba), its corpus under `corpus/`."""
    root = tmp_path / "project"
    corpora.write(root / "corpus" / "reviews.tsv", corpora.zh())
    return _make_project(root, "corpus/reviews.tsv", "jieba")


@pytest.fixture
def en_project(tmp_path: Path, corpora: Corpora) -> Path:
    """A tiny English five-class project (word tokenizer), its corpus under `corpus/`."""
    root = tmp_path / "project"
    corpora.write(root / "corpus" / "news.tsv", corpora.en())
    return _make_project(root, "corpus/news.tsv", "word")


def free_port() -> int:
    """A port nothing listens on now (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """End a process started with start_new_session=True and all of its group (uvicorn's)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.1)


@contextmanager
def _server(cmd: list[str], health: str, log: Path, env: dict[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 90) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        process = subprocess.Popen([str(c) for c in cmd], cwd=cwd, stdout=out,
                                   stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            try:
                with urllib.request.urlopen(health, timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.25)
        yield process
    finally:
        stop_group(process)


@pytest.fixture(scope="session")
def server() -> Callable:
    """Start a server process and wait until `health` answers 200:
    `with server(cmd, health_url, log_path, env=None, cwd=None): ...`; its whole process group
    is stopped afterwards."""
    return _server


@pytest.fixture(scope="session")
def port() -> Callable[[], int]:
    """A free port on 127.0.0.1: `port()`."""
    return free_port


def _forget_tracking_uri() -> None:
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)


@pytest.fixture(scope="session")
def forget_tracking_uri() -> Callable[[], None]:
    """Undo `mlflow.set_tracking_uri` (which also exports MLFLOW_TRACKING_URI to every process
    started later): `forget_tracking_uri()`."""
    return _forget_tracking_uri


@pytest.fixture(scope="module", autouse=True)
def no_store_from_other_tests() -> Iterator[None]:
    """Each module's processes log to their own project's store, whatever MLflow tracking URI an
    earlier module in this process set."""
    _forget_tracking_uri()
    yield
    _forget_tracking_uri()


@pytest.fixture
def in_dir(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], Path]:
    """chdir into a directory for the test's duration."""
    def enter(path: Path) -> Path:
        monkeypatch.chdir(path)
        return path

    return enter


STRAY = (REPO / "mlflow.db", REPO / "mlruns" / "artifacts" / "0")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remember which stores exist in the checkout before the tests (a developer's own)."""
    session.config.stash[_STRAY_KEY] = {p for p in STRAY if p.exists()}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a test made an MLflow store in the checkout itself: every test works in
    its own folder, and rnnpipe must never create MLflow's default store by accident."""
    if hasattr(session.config, "workerinput"):
        return  # xdist workers: the controller checks once
    made = {p for p in STRAY if p.exists()} - session.config.stash.get(_STRAY_KEY, set())
    if made:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\ntests made MLflow stores in the checkout: {sorted(map(str, made))}")


_STRAY_KEY = pytest.StashKey[set]()
