"""benchmarks/pipeline.py: its step-timing probe, its report, and a smoke run of the whole
benchmark (`--quick`: tiny synthetic corpus and model) that must end with the summary line."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from benchlib import load

REPO = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(r"overhead_share=(?P<overhead_share>\d+\.\d+)"
                     r" noop_dvc_s=(?P<noop_dvc_s>\d+\.\d+)"
                     r" noop_flow_s=(?P<noop_flow_s>\d+\.\d+)"
                     r" seg_speedup=(?P<seg_speedup>\d+\.\d+)"
                     r" lstm_acc=(?P<lstm_acc>\d\.\d+) baseline_acc=(?P<baseline_acc>\d\.\d+)")


def fake_step(tmp_path: Path, step: str, body: str) -> dict[str, str]:
    """A package `fakepipe` whose module `step` defines the function `step` (`body`), and the
    benchmark's probe set to time it; returns the environment that loads both."""
    bench = load("pipeline")
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(
        bench.PROBE.format(targets={f"fakepipe.{step}": (step, step)},
                           timings=str(bench.TIMINGS), steps={step}), encoding="utf-8")
    package = tmp_path / "src" / "fakepipe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / f"{step}.py").write_text(body, encoding="utf-8")
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{probe}:{tmp_path / 'src'}"}


def test_the_probe_times_the_steps_of_this_package() -> None:
    bench = load("pipeline")
    for module, (function, step) in bench.WORK_FUNCTIONS.items():
        assert callable(getattr(importlib.import_module(module), function)), module
        assert step in bench.STEPS
    assert sorted(step for _, step in bench.WORK_FUNCTIONS.values()) == sorted(bench.STEPS)


def test_probe_times_the_step_function_inside_its_process(tmp_path: Path) -> None:
    bench = load("pipeline")
    env = fake_step(tmp_path, "ingest",
                    "import time\n\ndef ingest():\n    time.sleep(0.2)\n    return {'ok': 1}\n\n"
                    "def main():\n    return ingest()\n")
    subprocess.run([sys.executable, "-c", "import fakepipe.ingest as m; m.main()"],
                   cwd=tmp_path, env=env, check=True, timeout=60)
    subprocess.run([sys.executable, "-c", "import json"], cwd=tmp_path, env=env, check=True,
                   timeout=60)  # not a step: writes nothing
    (record,) = [json.loads(line) for line in
                 (tmp_path / bench.TIMINGS).read_text(encoding="utf-8").splitlines()]
    assert record["step"] == "ingest"
    assert 0.2 <= record["work_end"] - record["work_start"] < 5
    assert record["loaded"] <= record["work_start"] <= record["work_end"] <= record["exited"]


def test_probe_counts_work_done_in_a_child_process_inside_its_step(tmp_path: Path) -> None:
    """Evaluate scores in a child process: one step, the parent's wall, the child's work."""
    bench = load("pipeline")
    env = fake_step(tmp_path, "evaluate", "import time\n\ndef evaluate():\n    time.sleep(0.2)\n")
    child = "import fakepipe.evaluate as m; m.evaluate()"
    parent = (f"import subprocess, sys, time; subprocess.run([sys.executable, '-c', {child!r}], "
              f"check=True); time.sleep(0.3)")
    subprocess.run([sys.executable, "-c", parent, "evaluate"], cwd=tmp_path, env=env,
                   check=True, timeout=60)
    assert len((tmp_path / bench.TIMINGS).read_text(encoding="utf-8").splitlines()) == 2
    (step,) = bench.read_timings(tmp_path)
    assert step.step == "evaluate"
    assert 0.2 <= step.work < 5
    assert step.wall >= step.work + 0.3  # the parent's own time is outside the work
    assert step.loaded <= step.work_start <= step.work_end <= step.exited


def test_report_ends_with_the_summary_line() -> None:
    bench = load("pipeline")
    steps = [bench.StepTiming(step, 100.0 + i * 10, 101.0 + i * 10, 108.0 + i * 10,
                              109.0 + i * 10, {"examples_per_s": 1234.5, "train_examples": 9,
                                               "epochs_run": 2} if step == "train" else {})
             for i, step in enumerate(bench.STEPS)]
    seg = {"texts": 10, "copies": 1, "chars": 1000, "workers": 2, "single_s": 2.0,
           "parallel_s": 1.0, "single_cps": 500.0, "parallel_cps": 1000.0, "speedup": 2.0}
    # reports/metrics.json as the evaluate step writes it.
    metrics = {"test": {"accuracy": 0.91, "macro_f1": 0.9},
               "val": {"accuracy": 0.92, "macro_f1": 0.91},
               "baseline": {"test_accuracy": 0.88, "test_macro_f1": 0.87},
               "beats_baseline": True, "test_documents": 100}
    text = bench.report(50.0, steps, 98.0, [0.5, 0.7, 0.6], [9.0, 8.0, 10.0], seg, metrics,
                        ["FINISHED"], quick=False, source=REPO)
    last = text.splitlines()[-1]
    match = SUMMARY.fullmatch(last)
    assert match, last
    assert match["overhead_share"] == "0.440"  # (50 - 4 x 7 s of work) / 50
    assert (match["noop_dvc_s"], match["noop_flow_s"]) == ("0.60", "9.00")  # medians
    assert (match["seg_speedup"], match["lstm_acc"], match["baseline_acc"]) == (
        "2.00", "0.9100", "0.8800")
    assert "1,234 examples/s" in text or "1,235 examples/s" in text
    assert "LSTM 0.9100 (macro-F1 0.9000) vs TF-IDF + logistic regression baseline 0.8800 " \
           "(macro-F1 0.8700)" in text


@pytest.mark.slow
def test_quick_benchmark_runs_end_to_end_in_a_scratch_copy(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "pipeline.py"), "--quick",
         "--workdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    lines = result.stdout.strip().splitlines()
    match = SUMMARY.fullmatch(lines[-1])
    assert match, lines[-1]
    values = {key: float(value) for key, value in match.groupdict().items()}
    assert 0 < values["overhead_share"] < 1
    assert values["noop_dvc_s"] > 0 and values["noop_flow_s"] > 0 and values["seg_speedup"] > 0
    assert 0 <= values["lstm_acc"] <= 1 and 0 <= values["baseline_acc"] <= 1
    assert "| train |" in result.stdout and "| dvc repro |" in result.stdout
    assert "MLflow runs in the store: 1 (FINISHED)" in result.stdout  # no-op runs added none
    assert not list(tmp_path.iterdir())  # the scratch copy is removed
    assert not (REPO / ".rnnpipe" / "bench-timings.jsonl").exists()  # the checkout untouched
