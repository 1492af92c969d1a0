"""Smoke test of `benchmarks/lstm_cell.py`: a `--quick` run prints its tables and ratio lines."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent


@pytest.mark.slow
def test_quick_benchmark_prints_ratio_lines():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "lstm_cell.py"), "--quick"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    number = r"[0-9]+\.[0-9]{2}"
    with_torch = importlib.util.find_spec("torch") is not None
    for config in ("tutorial", "medium"):
        assert re.search(
            rf"^ratio manual/keras train={number} infer={number} config={config}$", out, re.M
        ), out
        torch_line = re.search(rf"^ratio best/torch train={number} config={config}$", out, re.M)
        assert bool(torch_line) == with_torch, out
    for cell in ("keras", "manual"):
        assert re.search(rf"^{cell}\s+[0-9]+ \(", out, re.M), out


def test_the_benchmark_imports_the_cell_from_the_model_package():
    source = (REPO / "benchmarks" / "lstm_cell.py").read_text(encoding="utf-8")
    assert "from rnnpipe.model.lstm import build_lstm_stack" in source
    assert "rnnpipe.lstm " not in source and "from rnnpipe.lstm" not in source
