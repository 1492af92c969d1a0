"""benchmarks/quality.py: a smoke run (`--quick`: a 300-document subset, one epoch of a tiny
model) through the real DVC stages in a scratch project, which must print the corpus table, the
all-corpora table and the summary line, and write its JSON."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^quality: corpus=(?P<corpus>\S+) lstm_acc=(?P<lstm_acc>\d\.\d{4}) "
                  r"baseline_acc=(?P<baseline_acc>\d\.\d{4}) gap_points=(?P<gap>[+-]\d+\.\d\d) "
                  r"lstm_f1=\d\.\d{4} baseline_f1=\d\.\d{4} f1_gap_points=[+-]\d+\.\d\d "
                  r"epochs=1 best_epoch=1 max_len=\d+ train_s=\d+\.\d total_s=\d+\.\d$",
                  re.MULTILINE)


@pytest.mark.slow
def test_quick_run_prints_the_tables_and_the_summary_line(tmp_path: Path) -> None:
    out = tmp_path / "quality.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "quality.py"), "--quick",
         "--corpora", "zh-domain-rare", "--workdir", str(tmp_path), "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    text = result.stdout
    assert "### zh-domain-rare (new; 300 documents, 3 classes, jieba" in text
    assert re.search(r"^\| test accuracy \| \d\.\d{4} \| \d\.\d{4} \| [+-]\d+\.\d \|$", text,
                     re.MULTILINE), text
    assert re.search(r"^\| val macro-F1 \| \d\.\d{4} \| \d\.\d{4} \| [+-]\d+\.\d \|$", text,
                     re.MULTILINE), text
    assert "## all corpora" in text and re.search(r"^\| zh-domain-rare \| 300 \| 3 \|", text,
                                                  re.MULTILINE), text
    assert "old_vs_new:" not in text  # --quick skips the old-code rounds
    (match,) = LINE.finditer(text)
    assert match["corpus"] == "zh-domain-rare"
    gap = 100 * (float(match["lstm_acc"]) - float(match["baseline_acc"]))
    assert abs(gap - float(match["gap"])) < 0.02
    record = json.loads(out.read_text(encoding="utf-8"))["corpora"][0]
    assert record["classes"] == 3 and record["epochs_run"] == 1
    assert set(record["stage_s"]) == {"ingest", "vocab", "train", "evaluate"}
    assert record["overrides"]["vocab.tokenizer"] == "jieba"
    assert not list(tmp_path.glob("rnnpipe-quality-*"))  # the scratch project is removed
