"""Fixtures that make tiny real data and throwaway rnnpipe projects.

A project fixture is a temp dir with `dvc.yaml`, a `params.yaml` tuned to be tiny, a copy of the
`rnnpipe/` sources (they are DVC dependencies), `git init` and `dvc init`: the real tools run in it,
with an MLflow SQLite store under its own `mlruns/`.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
for key, value in {"DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "3",
                   "KERAS_BACKEND": "tensorflow", "PYTHONHASHSEED": "0",
                   "GIT_AUTHOR_NAME": "rnnpipe tests", "GIT_AUTHOR_EMAIL": "tests@localhost",
                   "GIT_COMMITTER_NAME": "rnnpipe tests",
                   "GIT_COMMITTER_EMAIL": "tests@localhost"}.items():
    os.environ.setdefault(key, value)

# Prefect's ephemeral API keeps its SQLite database under PREFECT_HOME: give each test process
# (each pytest-xdist worker) its own, so tests neither share one database concurrently nor touch
# the developer's ~/.prefect.
if "PREFECT_HOME" not in os.environ:
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


def make_zh_corpus(n_per_class: int = 40, seed: int = 0) -> list[tuple[str, str]]:
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


def make_en_corpus(n_per_class: int = 20, seed: int = 0) -> list[tuple[str, str]]:
    """Five-class English news headlines built from topic words and filler."""
    rng = random.Random(seed)
    rows = []
    for label, words in EN_TOPICS.items():
        for _ in range(n_per_class):
            tokens = [rng.choice(EN_FILLER) for _ in range(4)] + rng.sample(words, 3)
            rng.shuffle(tokens)
            rows.append((label, " ".join(tokens).capitalize() + "."))
    rng.shuffle(rows)
    return rows


def write_tsv(path: Path, rows: list[tuple[str, str]], encoding: str = "utf-8") -> Path:
    """Write `label<TAB>text` lines."""
    path.write_bytes("".join(f"{label}\t{text}\n" for label, text in rows).encode(encoding))
    return path


TINY_TRAIN = {"embedding_dim": 8, "lstm_units": [8], "fc_units": 8, "max_len": 12,
              "batch_size": 16, "epochs": 2, "patience": 1, "learning_rate": 0.01}


@pytest.fixture
def zh_tsv(tmp_path: Path) -> Path:
    """A tiny two-class Chinese `label<TAB>text` corpus."""
    return write_tsv(tmp_path / "reviews.tsv", make_zh_corpus())


@pytest.fixture
def en_tsv(tmp_path: Path) -> Path:
    """A tiny five-class English news corpus."""
    return write_tsv(tmp_path / "news.tsv", make_en_corpus())


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tracking settings leak in from the developer's shell."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME",
                "RNNPIPE_PREFECT_FLOW_RUN_ID", "RNNPIPE_PREFECT_FLOW_RUN_NAME", "DVC_EXP_NAME"):
        monkeypatch.delenv(key, raising=False)


def run(cmd: list[str], cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, showing its output if it fails."""
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} exited {result.returncode}\n--- stdout\n{result.stdout}"
                             f"\n--- stderr\n{result.stderr}")
    return result


def make_project(root: Path, source: Path, tokenizer: str, train: dict | None = None,
                 vocab: dict | None = None) -> Path:
    """A throwaway rnnpipe project (git + DVC) whose params point at `source`."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / "rnnpipe", root / "rnnpipe",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "mlruns").mkdir(exist_ok=True)
    shutil.copy(REPO / "mlruns" / ".gitignore", root / "mlruns" / ".gitignore")
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["ingest"].update(source=str(source), val_size=0.2, test_size=0.2)
    params["vocab"].update(tokenizer=tokenizer, min_count=1, workers=1, **(vocab or {}))
    params["train"].update(TINY_TRAIN, **(train or {}))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    (root / "corpus").mkdir(exist_ok=True)  # the ingest stage depends on it (dvc.yaml)
    shutil.copy(REPO / "corpus" / "README.md", root / "corpus" / "README.md")
    run(["git", "init", "-q"], root)
    run([str(BIN / "dvc"), "init", "-q"], root)
    shutil.copy(REPO / ".dvcignore", root / ".dvcignore")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "project"], root)
    return root


@pytest.fixture
def zh_project(tmp_path: Path, clean_env: None) -> Path:
    """A tiny Chinese two-class project (jieba)."""
    corpus = write_tsv(tmp_path / "reviews.tsv", make_zh_corpus())
    return make_project(tmp_path / "project", corpus, "jieba")


@pytest.fixture
def en_project(tmp_path: Path, clean_env: None) -> Path:
    """A tiny English five-class project (word tokenizer)."""
    corpus = write_tsv(tmp_path / "news.tsv", make_en_corpus())
    return make_project(tmp_path / "project", corpus, "word")


@pytest.fixture
def in_dir(monkeypatch: pytest.MonkeyPatch):
    """chdir into a directory for the test's duration."""
    def enter(path: Path) -> Path:
        monkeypatch.chdir(path)
        return path

    return enter
