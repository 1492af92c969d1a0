"""Prediction throughput, side by side in one run: `rnnpipe predict -i` on a big file, the Keras
model called directly on the same batches, and `make serve`'s REST server at batch 1 and 64.

What it does, in a temporary directory:

1. Finds a trained workspace (`--project`, default: trains the bundled corpus in a scratch copy
   of this checkout with `dvc repro`, a few minutes; `--quick`: a tiny synthetic corpus).
2. Writes an N-line input (`--lines`, default 100,000) of `label<TAB>text` lines drawn from the
   workspace's test split.
3. Times `rnnpipe predict -m local -i input.tsv -o output.csv` (its own process; peak RSS of its
   process tree sampled every 50 ms) and checks the output has N rows.
4. Times the Keras model called directly on the same texts in the same batches (already
   tokenized: the model's own cost, what the CLI is compared with), in this process.
5. Starts `mlflow models serve` on the workspace's logged champion (what `make serve` runs) on
   127.0.0.1, sends `--requests` requests of 1 and of 64 texts from 4 concurrent clients, and
   reports requests/s, documents/s and p50/p95 latency.
6. Repeats the CLI-vs-direct pair (`--repeats`, interleaved) and prints medians and the ratio.

It ends with one line:

    predict: cli_docs_s=<a> direct_docs_s=<b> ratio=<b/a> cli_peak_rss_mb=<m> serve_b1_rps=<r> ...

The machine is shared and noisy: quote medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BATCH = 1024  # rnnpipe.predict.BATCH


def scratch_project(root: Path, quick: bool) -> Path:
    """A copy of this checkout's pipeline, trained with `dvc repro` (quick: tiny data)."""
    project = root / "project"
    project.mkdir()
    for name in ("rnnpipe", "corpus", "embeddings"):
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, project / name)
    (project / "mlruns").mkdir()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    if quick:
        import yaml

        rng = random.Random(0)
        words = {"pos": ["好", "满意", "喜欢", "推荐"], "neg": ["差", "失望", "讨厌", "退货"]}
        lines = [f"{label}\t{''.join(rng.choice(w) for _ in range(6))}\n"
                 for label, w in words.items() for _ in range(150)]
        (project / "corpus" / "tiny.tsv").write_text("".join(lines), encoding="utf-8")
        params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
        params["ingest"]["source"] = "corpus/tiny.tsv"
        params["vocab"]["min_count"] = 1
        params["train"].update(max_epochs=1, embedding_dim=8, lstm_units=[8], fc_units=8)
        (project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    for cmd in (["git", "init", "-q"], [BIN / "dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=b", "-c", "user.email=b@localhost", "commit", "-qm",
                 "benchmark"], [BIN / "dvc", "repro"]):
        subprocess.run([str(c) for c in cmd], cwd=project, env=env, check=True,
                       capture_output=True)
    return project


def write_input(project: Path, path: Path, lines: int) -> int:
    """`lines` label<TAB>text lines drawn (with replacement, seeded) from the test split."""
    rows = (project / "data" / "test.tsv").read_text(encoding="utf-8").splitlines()
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(lines):
            fh.write(rng.choice(rows) + "\n")
    return lines


def peak_rss_mb(process: subprocess.Popen) -> float:
    """Wait for `process`, sampling the RSS of it and its children; the peak in MB."""
    import psutil

    peak = 0
    parent = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            rss = parent.memory_info().rss + sum(c.memory_info().rss
                                                  for c in parent.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    return peak / 2**20


def time_cli(project: Path, source: Path, lines: int) -> tuple[float, float]:
    """`rnnpipe predict -m local -i source -o out.csv`: (documents/s, peak RSS MB)."""
    out = source.with_suffix(".out.csv")
    started = time.perf_counter()
    process = subprocess.Popen([str(BIN / "rnnpipe"), "predict", "-m", "local", "-i", str(source),
                                "-o", str(out)], cwd=project, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    peak = peak_rss_mb(process)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(process.stderr.read())
    with open(out, encoding="utf-8") as fh:
        rows = sum(1 for _ in fh) - 1
    assert rows == lines, (rows, lines)
    return lines / seconds, peak


def time_direct(project: Path, source: Path) -> float:
    """The Keras model called directly on the same batches of token ids: documents/s."""
    from rnnpipe.model.classifier import TextClassifier
    from rnnpipe.model.network import predict_proba
    from rnnpipe.paths import MODEL_FILE, PREPROCESSING_FILE, VOCAB_FILE

    classifier = TextClassifier.load(project / MODEL_FILE, project / VOCAB_FILE,
                                     project / PREPROCESSING_FILE)
    texts = [line.partition("\t")[2] for line in
             source.read_text(encoding="utf-8").splitlines()]
    batches = [classifier.encode(texts[i:i + BATCH]) for i in range(0, len(texts), BATCH)]
    predict_proba(classifier.model, batches[0], BATCH)  # trace once, as the CLI does
    started = time.perf_counter()
    for x in batches:
        predict_proba(classifier.model, x, BATCH)
    return len(texts) / (time.perf_counter() - started)


def serve(project: Path, texts: list[str], requests: int) -> dict[str, dict[str, float]]:
    """`mlflow models serve` of the logged champion: throughput and latency at batch 1, 64."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = subprocess.run([str(BIN / "rnnpipe"), "models", "uri"], cwd=project,
                         capture_output=True, text=True, check=True).stdout.strip()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlruns' / 'mlflow.db'}",
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # it runs `uvicorn` by name
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", uri,
                               "--env-manager", "local", "--host", "127.0.0.1", "--port",
                               str(port)], cwd=project, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("mlflow models serve did not start") from None
                time.sleep(0.5)
        results = {}
        for batch in (1, 64):
            body = [json.dumps({"inputs": texts[i:i + batch]}).encode()
                    for i in range(0, batch * requests, batch)]

            def call(payload: bytes) -> float:
                request = urllib.request.Request(f"{url}/invocations", data=payload,
                                                 headers={"Content-Type": "application/json"})
                started = time.perf_counter()
                with urllib.request.urlopen(request, timeout=60) as response:
                    response.read()
                return time.perf_counter() - started

            call(body[0])  # warm up
            started = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                latencies = sorted(pool.map(call, body))
            seconds = time.perf_counter() - started
            results[f"batch {batch}"] = {
                "requests_s": len(body) / seconds, "docs_s": len(body) * batch / seconds,
                "p50_ms": 1000 * latencies[len(latencies) // 2],
                "p95_ms": 1000 * latencies[int(len(latencies) * 0.95)]}
        return results
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
            server.wait(30)


def main() -> None:
    """Run the benchmark and print the table and the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="a trained rnnpipe workspace")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny corpus, 2,000 lines")
    args = parser.parse_args()
    if args.quick:
        args.lines, args.requests, args.repeats = 2000, 20, 1
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="rnnpipe-bench-predict-") as tmp:
        root = Path(tmp)
        project = args.project or scratch_project(root, args.quick)
        source = root / "input.tsv"
        write_input(project, source, args.lines)
        cli, direct, rss = [], [], []
        for _ in range(args.repeats):  # interleaved
            docs_s, peak = time_cli(project, source, args.lines)
            cli.append(docs_s)
            rss.append(peak)
            direct.append(time_direct(project, source))
        texts = [line.partition("\t")[2] for line in
                 source.read_text(encoding="utf-8").splitlines()[:64 * args.requests]]
        served = serve(project, texts, args.requests)
    cli_s, direct_s = statistics.median(cli), statistics.median(direct)
    print(f"{'what':<44}{'documents/s':>12}{'requests/s':>12}{'p50 ms':>9}{'p95 ms':>9}")
    print(f"{'rnnpipe predict -i (' + format(args.lines, ',') + ' lines)':<44}{cli_s:>12,.0f}")
    print(f"{'Keras model directly, same batches':<44}{direct_s:>12,.0f}")
    for name, row in served.items():
        print(f"{'make serve, ' + name + ', 4 clients':<44}{row['docs_s']:>12,.0f}"
              f"{row['requests_s']:>12,.1f}{row['p50_ms']:>9.0f}{row['p95_ms']:>9.0f}")
    print(f"rnnpipe predict peak RSS: {statistics.median(rss):.0f} MB (median of {len(rss)})")
    print(f"predict: cli_docs_s={cli_s:.0f} direct_docs_s={direct_s:.0f} "
          f"ratio={direct_s / cli_s:.2f} cli_peak_rss_mb={statistics.median(rss):.0f} "
          + " ".join(f"serve_b{n.split()[1]}_rps={r['requests_s']:.1f} "
                     f"serve_b{n.split()[1]}_p95_ms={r['p95_ms']:.0f}"
                     for n, r in served.items()))


if __name__ == "__main__":
    threading.current_thread().name = "benchmark"
    main()
