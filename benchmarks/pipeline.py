"""Run the whole rnnpipe pipeline in a scratch copy of the project and report where the time goes.

What it does, in a temporary directory (never in your checkout; the MLflow store and the Prefect
home live in it too):

1. Copies the project's sources (`dvc.yaml`, `params.yaml`, `rnnpipe/`, `flows/`, `corpus/`,
   `embeddings/`, `.gitignore`, `.dvcignore`), runs `git init`, `dvc init` and commits.
2. Creates the Prefect database and the MLflow store, timing that one-time set-up on its own (a
   machine's first run pays it; every later run finds them): `--cold` skips this.
3. Runs `rnnpipe run` (what `make run` runs: the Prefect flow, each task reproducing its DVC stage,
   each stage a `python -m rnnpipe <step>` process) and times it.
4. Runs `dvc repro` and `rnnpipe run` again with nothing changed (interleaved, `--repeats` each).
5. Times segmentation of the corpus's splits with `rnnpipe.model.text.tokenize_many` (the vocabulary
   step's chunked `segment`), one process vs
   all cores (interleaved rounds, median).

How each step's own work is measured: the step processes get a `sitecustomize` probe (on
`PYTHONPATH`, outside the project, so nothing DVC hashes changes) that wraps the step's library
function (in `rnnpipe.steps`: `ingest.ingest`, `vocab.vocabulary`, `train.train`,
`evaluate.evaluate`) with a timer and records, per process, when the probe loaded, when the work
started and ended, and when the process exited. Work includes the imports the function itself needs
(TensorFlow in train and evaluate) and train's per-epoch metric logging; everything else — the CLI
and Prefect start-up, the Prefect API, DVC's hashing and locking, interpreter start-up,
`import mlflow`, opening the MLflow run, logging and registering the model — is overhead:
`overhead_share = (wall time of rnnpipe run - sum of work) / wall time of rnnpipe run`.

It ends with one line:

    overhead_share=<x> noop_dvc_s=<y> noop_flow_s=<z> seg_speedup=<w> lstm_acc=<a> baseline_acc=<b>

Usage::

    python benchmarks/pipeline.py                # the bundled corpus, default params (minutes)
    python benchmarks/pipeline.py --quick        # tiny synthetic corpus and model (smoke test)
    python benchmarks/pipeline.py --repeats 5 --keep

The machine is shared and noisy: run it when the load is low, and quote medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import copy_sources

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STEPS = ("ingest", "vocab", "train", "evaluate")
TIMINGS = Path(".rnnpipe") / "bench-timings.jsonl"  # under .rnnpipe/: untracked, DVC-ignored
# What each step's own work is: the library function its main() calls.
WORK_FUNCTIONS = {"rnnpipe.steps.ingest": ("ingest", "ingest"),
                  "rnnpipe.steps.vocab": ("vocabulary", "vocab"),
                  "rnnpipe.steps.train": ("train", "train"),
                  "rnnpipe.steps.evaluate": ("evaluate", "evaluate")}
COPIED = ("dvc.yaml", "params.yaml", "rnnpipe", "flows", "corpus", "embeddings", ".gitignore",
          ".dvcignore", "mlruns/.gitignore")
# Tracking and orchestration settings of the caller must not leak into the scratch project.
LEAKY_ENV = ("MLFLOW_", "PREFECT_", "RNNPIPE_", "DVC_EXP")

PROBE = '''\
"""rnnpipe benchmark probe: times each step's library function inside the step's process."""
import atexit, functools, importlib.abc, json, os, sys, time

_LOADED = time.time()
_TARGETS = {targets!r}
_TIMED_IMPORTS = ("keras", "tensorflow")  # the framework import, timed for the report
_RECORD = {{}}
_DEPTH = [0]


def _wrap(module, function, step):
    original = getattr(module, function)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        start = time.time()
        try:
            result = original(*args, **kwargs)
        finally:
            _RECORD.update(step=step, work_start=start, work_end=time.time())
        if isinstance(result, dict) and result.get("examples_per_s") is not None:
            _RECORD["examples_per_s"] = result["examples_per_s"]
            _RECORD["train_examples"] = result.get("train_examples")
            _RECORD["epochs_run"] = result.get("epochs_run")
        return result

    setattr(module, function, timed)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _TARGETS and name not in _TIMED_IMPORTS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_wrap(module):
            if name in _TARGETS:
                exec_module(module)
                _wrap(module, *_TARGETS[name])
                return
            start = time.time()
            _DEPTH[0] += 1
            try:
                exec_module(module)
            finally:
                _DEPTH[0] -= 1
            if _DEPTH[0] == 0:  # keras imports tensorflow: time the outer import only
                _RECORD["framework_import_s"] = time.time() - start

        spec.loader.exec_module = exec_and_wrap
        return spec


def _cli_step():
    """The step a `rnnpipe <step>` process runs whose work is in a child process (evaluate's
    scoring), or None."""
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    return args[0] if args and args[0] in {steps!r} else None


@atexit.register  # registered first, so it runs last: the process's teardown is included
def _write():
    if "step" not in _RECORD:
        step = _cli_step()
        if step is None:  # not a step process (DVC, Prefect, a helper)
            return
        _RECORD.update(step=step, work_start=None, work_end=None)
    _RECORD.update(loaded=_LOADED, exited=time.time(), pid=os.getpid(), ppid=os.getppid())
    os.makedirs(os.path.dirname({timings!r}), exist_ok=True)
    with open({timings!r}, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(_RECORD) + "\\n")


sys.meta_path.insert(0, _Finder())
'''

QUICK_TRAIN = {"embedding_dim": 8, "lstm_units": [8], "fc_units": 8, "max_len": 12,
               "batch_size": 32, "max_epochs": 1, "patience": 1, "learning_rate": 0.01}
QUICK_POSITIVE = ["质量很好", "非常满意", "物超所值", "服务热情", "房间干净", "推荐购买"]
QUICK_NEGATIVE = ["质量太差", "非常失望", "价格太贵", "服务冷淡", "房间很脏", "不要购买"]
QUICK_FILLER = ["这次", "酒店", "这本书", "东西", "总的来说", "我觉得", "朋友说", "包装"]


@dataclass
class StepTiming:
    """One step process as the probe saw it (absolute `time.time()` stamps)."""

    step: str
    loaded: float
    work_start: float
    work_end: float
    exited: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def wall(self) -> float:
        return self.exited - self.loaded

    @property
    def work(self) -> float:
        return self.work_end - self.work_start


# --- scratch project -------------------------------------------------------------------------

def quick_corpus(path: Path, n_per_class: int = 150, seed: int = 0) -> None:
    """A tiny two-class Chinese `label<TAB>text` corpus (distinct texts, so dedupe keeps them)."""
    rng = random.Random(seed)
    rows = set()
    for label, phrases in (("pos", QUICK_POSITIVE), ("neg", QUICK_NEGATIVE)):
        while sum(1 for r in rows if r[0] == label) < n_per_class:
            words = [rng.choice(QUICK_FILLER), rng.choice(phrases), rng.choice(QUICK_FILLER),
                     rng.choice(phrases), rng.choice(QUICK_FILLER)]
            rows.add((label, "，".join(words) + "。"))
    lines = sorted(f"{label}\t{text}\n" for label, text in rows)
    rng.shuffle(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")


def environment(scratch: Path) -> dict[str, str]:
    """The environment of every command: `make run`'s, plus the probe; no tracking settings from
    the caller's shell; Prefect's home (its SQLite database) inside the scratch directory.

    The project itself is on `PYTHONPATH` too, so the `rnnpipe` command imports the copy's
    `rnnpipe` (not the editable install's), as `make run` in a checkout imports the checkout's.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY_ENV)}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join([str(scratch / "probe"), str(scratch / "project")]),
        PREFECT_HOME=str(scratch / "prefect-home"),
        DO_NOT_TRACK="1", DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true",
        PREFECT_SERVER_ANALYTICS_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0",
        GIT_AUTHOR_NAME="rnnpipe bench", GIT_AUTHOR_EMAIL="bench@localhost",
        GIT_COMMITTER_NAME="rnnpipe bench", GIT_COMMITTER_EMAIL="bench@localhost",
    )
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path | None = None,
        timeout: float = 3600) -> tuple[float, str]:
    """Run `cmd`; return its wall time and output. Fails loudly, with the output, if it fails."""
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    seconds = time.perf_counter() - started
    output = result.stdout + result.stderr
    if log is not None:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"$ {' '.join(cmd)}  ({seconds:.2f} s, exit {result.returncode})\n{output}\n")
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {result.returncode} after {seconds:.1f} s:\n"
                         f"{output[-4000:]}")
    return seconds, output


def make_project(scratch: Path, quick: bool, env: dict[str, str], source_dir: Path = REPO) -> Path:
    """Copy the project's sources into `scratch/project`, init git and DVC, commit."""
    import yaml

    project = scratch / "project"
    project.mkdir(parents=True)
    copy_sources(source_dir, project, COPIED)
    for folder in ("corpus", "embeddings"):  # dependencies of ingest and train (dvc.yaml)
        (project / folder).mkdir(exist_ok=True)
    if quick:
        quick_corpus(project / "corpus" / "bench.tsv")
        params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
        params["ingest"].update(source="corpus/bench.tsv", format="tsv")
        params["vocab"].update(min_count=1)
        params["train"].update(QUICK_TRAIN)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False),
                                             encoding="utf-8")
    probe_dir = scratch / "probe"
    probe_dir.mkdir()
    targets = {module: (function, step) for module, (function, step) in WORK_FUNCTIONS.items()}
    (probe_dir / "sitecustomize.py").write_text(
        PROBE.format(targets=targets, timings=str(TIMINGS), steps=set(STEPS)), encoding="utf-8")
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "benchmark project"]):
        run(cmd, project, env)
    return project


# --- measurements ----------------------------------------------------------------------------

# The temporary API server `rnnpipe run` starts (its start-up migrates a new database).
WARM_PREFECT = """\
from flows.prefect_api import TemporaryPrefectApi
server = TemporaryPrefectApi()
server.wait_until_ready()
server.stop()
"""
WARM_MLFLOW = """\
import sys
from mlflow.tracking import MlflowClient
MlflowClient(sys.argv[1]).search_experiments()
"""


def warm_stores(project: Path, env: dict[str, str], log: Path) -> dict[str, float]:
    """Create the Prefect database and the MLflow store before the measured run, and return how
    long each took: the state of every `make run` after a machine's first.

    A first-ever run creates both (Prefect: its SQLite database, ~100 migrations, block types;
    MLflow: the store's tables); the report shows that one-time cost on its own line instead of
    folding it into one run's overhead. `--cold` skips this.
    """
    prefect_s, _ = run([sys.executable, "-c", WARM_PREFECT], project, env, log)
    mlflow_s, _ = run([sys.executable, "-c", WARM_MLFLOW,
                       f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"], project, env, log)
    return {"prefect": prefect_s, "mlflow": mlflow_s}


def read_timings(project: Path) -> list[StepTiming]:
    """The probe's records, one per step process, in the order the steps ran.

    A step whose work runs in a child process (evaluate scores while it logs the model) leaves
    two records: the child's work is counted inside its parent's process.
    """
    path = project / TIMINGS
    if not path.exists():
        return []
    records = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        data = json.loads(line)
        records[data["pid"]] = data
    for data in list(records.values()):
        parent = records.get(data.get("ppid"))
        if parent is not None and parent["step"] == data["step"] and data["work_start"]:
            parent.update({k: v for k, v in data.items()
                           if k not in ("step", "pid", "ppid", "loaded", "exited")})
            del records[data["pid"]]
    timings = []
    for data in records.values():
        if data["work_start"] is None:  # a parent whose child left no record: it failed
            continue
        timings.append(StepTiming(
            step=data.pop("step"), loaded=data.pop("loaded"), work_start=data.pop("work_start"),
            work_end=data.pop("work_end"), exited=data.pop("exited"), extra=data))
    return sorted(timings, key=lambda r: r.loaded)


def mlflow_runs(project: Path) -> list[str]:
    """The status of every MLflow run in the scratch store (read with sqlite3: importing MLflow
    here would cost seconds and tell nothing more)."""
    db = project / "mlruns" / "mlflow.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("select status from runs order by start_time")]


def segmentation(project: Path, tokenizer: str, repeats: int,
                 min_texts: int) -> dict[str, float]:
    """Characters/s of `tokenize_many` over all splits' texts, 1 process vs all cores.

    The jieba dictionary is loaded once first, so both variants segment with it warm (the step
    pays that load once per process either way); rounds alternate which variant goes first.
    """
    sys.path.insert(0, str(project))  # the copy's rnnpipe: the code under test
    from rnnpipe.datafiles import read_split
    from rnnpipe.model.text import default_workers, tokenize, tokenize_many
    from rnnpipe.paths import SPLITS

    texts = [text for name in SPLITS for text in read_split(project / "data" / f"{name}.tsv")[1]]
    copies = max(1, -(-min_texts // len(texts)))  # tiny corpora: repeat so the pool is used
    texts = texts * copies
    chars = sum(len(t) for t in texts)
    tokenize("预热", tokenizer)
    seconds: dict[int, list[float]] = {1: [], 0: []}
    results: dict[int, list[list[str]]] = {}
    for round_ in range(repeats):
        for workers in ((1, 0) if round_ % 2 == 0 else (0, 1)):
            started = time.perf_counter()
            results[workers] = tokenize_many(texts, tokenizer, workers=workers)
            seconds[workers].append(time.perf_counter() - started)
    if results[1] != results[0]:
        raise SystemExit("segmentation: parallel and single-process results differ")
    single, parallel = statistics.median(seconds[1]), statistics.median(seconds[0])
    return {"texts": len(texts), "copies": copies, "chars": chars,
            "workers": default_workers(0), "single_s": single, "parallel_s": parallel,
            "single_cps": chars / single, "parallel_cps": chars / parallel,
            "speedup": single / parallel}


def noop_runs(project: Path, env: dict[str, str], repeats: int,
              log: Path) -> tuple[list[float], list[float]]:
    """Wall times of `dvc repro` and `rnnpipe run` with nothing changed, interleaved; each must
    run no stage (checked: DVC's output and the probe, which records every step process)."""
    dvc_s: list[float] = []
    flow_s: list[float] = []
    before = len(read_timings(project))
    for round_ in range(repeats):
        order = ("dvc", "flow") if round_ % 2 == 0 else ("flow", "dvc")
        for which in order:
            if which == "dvc":
                seconds, out = run([str(BIN / "dvc"), "repro"], project, env, log)
                dvc_s.append(seconds)
            else:
                seconds, out = run([str(BIN / "rnnpipe"), "run"], project, env, log)
                flow_s.append(seconds)
            if "Running stage" in out or len(read_timings(project)) != before:
                raise SystemExit(f"the no-change {which} run re-ran a stage:\n{out[-3000:]}")
    return dvc_s, flow_s


# --- report ----------------------------------------------------------------------------------

def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def report(total: float, steps: list[StepTiming], run_started: float, noop_dvc: list[float],
           noop_flow: list[float], seg: dict[str, float], metrics: dict, runs: list[str],
           quick: bool, source: Path, warmed: dict[str, float] | None = None) -> str:
    """The table and the final line (`metrics`: reports/metrics.json)."""
    test, baseline = metrics["test"], metrics["baseline"]
    work = sum(s.work for s in steps)
    overhead = total - work
    what = "quick: tiny synthetic corpus" if quick else "bundled corpus, params.yaml defaults"
    lines = [f"# rnnpipe pipeline benchmark ({what}; sources: {source})",
             f"cores: {seg['workers']}; load average at start: "
             f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", "",
             "## rnnpipe run (the Prefect flow; what `make run` runs)", "",
             "| step | process wall | own work | before work (start-up, imports, MLflow run) "
             "| after work (MLflow logging, exit) |",
             "|---|---|---|---|---|"]
    for s in steps:
        lines.append(f"| {s.step} | {fmt_s(s.wall)} | {fmt_s(s.work)} | "
                     f"{fmt_s(s.work_start - s.loaded)} | {fmt_s(s.exited - s.work_end)} |")
    in_steps = sum(s.wall for s in steps)
    first = steps[0].loaded - run_started if steps else 0.0
    framework = sum(s.extra.get("framework_import_s", 0.0) for s in steps)
    lines += [
        f"| outside the step processes (CLI, Prefect API and flow, DVC, interpreter start) "
        f"| {fmt_s(total - in_steps)} | | of which before the first step: {fmt_s(first)} | |",
        f"| **total** | **{fmt_s(total)}** | **{fmt_s(work)}** | | |", "",
        f"overhead (everything but the steps' own work): {fmt_s(overhead)} = "
        f"{overhead / total:.1%} of the total",
        f"(own work includes the Keras/TensorFlow import that train and evaluate need, "
        f"{fmt_s(framework)} in all; counted as start-up instead, the overhead would be "
        f"{(overhead + framework) / total:.1%})",
        (f"one-time set-up before this run, not counted above (a machine's first run pays it): "
         f"Prefect database {fmt_s(warmed['prefect'])} (a temporary API server's start), "
         f"MLflow store {fmt_s(warmed['mlflow'])} (a process that creates it)" if warmed else
         "cold: this run created the Prefect database and the MLflow store (--cold)"), ""]
    train = next((s for s in steps if s.step == "train"), None)
    if train is not None and "examples_per_s" in train.extra:
        lines.append(f"training: {train.extra['examples_per_s']:,.0f} examples/s "
                     f"({train.extra['train_examples']} examples, "
                     f"{train.extra['epochs_run']} epochs, median epoch incl. validation)")
    lines += [
        f"test accuracy: LSTM {test['accuracy']:.4f} (macro-F1 {test['macro_f1']:.4f}) vs "
        f"TF-IDF + logistic regression baseline {baseline['test_accuracy']:.4f} "
        f"(macro-F1 {baseline['test_macro_f1']:.4f})",
        f"MLflow runs in the store: {len(runs)} ({', '.join(runs)})", "",
        "## re-run with nothing changed (median, all rounds)", "",
        "| command | median | rounds |", "|---|---|---|",
        f"| dvc repro | {fmt_s(statistics.median(noop_dvc))} | "
        f"{', '.join(f'{x:.2f}' for x in noop_dvc)} |",
        f"| rnnpipe run | {fmt_s(statistics.median(noop_flow))} | "
        f"{', '.join(f'{x:.2f}' for x in noop_flow)} |", "",
        f"## segmentation ({seg['texts']:,} texts, {seg['chars']:,} characters"
        + (f", the splits repeated {seg['copies']}x" if seg["copies"] > 1 else "") + ")", "",
        "| tokenize_many | seconds (median) | characters/s |", "|---|---|---|",
        f"| workers=1 | {seg['single_s']:.2f} | {seg['single_cps']:,.0f} |",
        f"| workers=0 ({seg['workers']} processes) | {seg['parallel_s']:.2f} | "
        f"{seg['parallel_cps']:,.0f} |",
        f"| speedup | {seg['speedup']:.2f}x | |", "",
        f"overhead_share={overhead / total:.3f} noop_dvc_s={statistics.median(noop_dvc):.2f} "
        f"noop_flow_s={statistics.median(noop_flow):.2f} seg_speedup={seg['speedup']:.2f} "
        f"lstm_acc={test['accuracy']:.4f} baseline_acc={baseline['test_accuracy']:.4f}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Build the scratch project, run and time everything, print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny synthetic corpus and model, no store set-up (implies --cold): "
                        "a smoke test, not a measurement")
    parser.add_argument("--repeats", type=int, default=None,
                        help="rounds of the no-change re-runs and of segmentation "
                        "(default 3, 1 with --quick)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to make the scratch directory (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scratch directory (its path is printed)")
    parser.add_argument("--cold", action="store_true",
                        help="do not create the Prefect database and MLflow store before the "
                        "measured run: measure a first-ever run")
    parser.add_argument("--source", type=Path, default=REPO,
                        help="the project tree to copy (default: this checkout), e.g. a "
                        "`git worktree` of another commit, to compare before and after")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    if repeats < 1:
        parser.error("--repeats must be >= 1")

    scratch = Path(tempfile.mkdtemp(prefix="rnnpipe-bench-", dir=args.workdir))
    try:
        env = environment(scratch)
        project = make_project(scratch, args.quick, env, args.source.resolve())
        log = scratch / "commands.log"
        print(f"scratch project: {project} (command output: {log})", file=sys.stderr)
        # --quick is a smoke test, not a measurement: it skips the set-up to stay short.
        warmed = None if args.cold or args.quick else warm_stores(project, env, log)
        run_started = time.time()
        total, _ = run([str(BIN / "rnnpipe"), "run"], project, env, log)
        steps = read_timings(project)
        missing = [s for s in STEPS if s not in [t.step for t in steps]]
        if missing or len(steps) != len(STEPS):
            raise SystemExit(f"the probe saw steps {[t.step for t in steps]}, expected {STEPS}: "
                             f"was a step's library function renamed? ({WORK_FUNCTIONS})")
        metrics = json.loads((project / "reports" / "metrics.json").read_text(encoding="utf-8"))
        _, status = run([str(BIN / "dvc"), "status"], project, env, log)
        if "up to date" not in status:
            raise SystemExit(f"dvc status is not clean after rnnpipe run:\n{status}")
        noop_dvc, noop_flow = noop_runs(project, env, repeats, log)
        runs = mlflow_runs(project)
        import yaml

        tokenizer = yaml.safe_load((project / "params.yaml").read_text(
            encoding="utf-8"))["vocab"]["tokenizer"]
        seg = segmentation(project, tokenizer, repeats, min_texts=4000 if args.quick else 0)
        print(report(total, steps, run_started, noop_dvc, noop_flow, seg, metrics, runs,
                     args.quick, args.source.resolve(), warmed), flush=True)
    finally:
        if args.keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
