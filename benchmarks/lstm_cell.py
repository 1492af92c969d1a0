"""Train and run rnnpipe's two LSTM cells side by side: ``keras.layers.LSTM`` vs ``ManualLSTM``.

Both cells train the same classifier (embedding -> stacked LSTM -> ReLU dense -> 10 logits) on
synthetic, right-padded, masked token sequences, through the same ``model.fit`` loop with the same
compile settings, in one process, in interleaved rounds (the machine is shared and noisy: each
round measures every cell once, and the tables report medians over rounds). Inference is
``model.predict`` at batch 512. With PyTorch installed (``pip install rnnpipe[bench]``) the same
model is also trained with ``torch.nn.LSTM`` (packed sequences, denormals flushed, the same number
of threads) as a reference point.

Prints, per configuration, a table of training and inference examples/s (median, and the spread
as min-max), the first ``fit`` call's time (tracing and graph compilation included), then the
ratios, each the median over rounds of that round's ratio (robust to load that drifts)::

    ratio manual/keras train=<x> infer=<y> config=<name>
    ratio best/torch train=<x> config=<name>        (only with torch)

Usage::

    python benchmarks/lstm_cell.py                 # both configurations, ~5-10 minutes
    python benchmarks/lstm_cell.py --quick         # tiny smoke run (seconds)
    python benchmarks/lstm_cell.py --configs tutorial --repeats 9
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import numpy as np


@dataclass(frozen=True)
class Config:
    """One benchmark configuration (model and batch sizes)."""

    name: str
    vocab: int
    embedding: int
    steps: int
    units: tuple[int, ...]
    fc: int
    batch: int
    classes: int = 10
    infer_batch: int = 512


CONFIGS = {
    # The tutorial's model (shared/notes/seed.md).
    "tutorial": Config("tutorial", 10_000, 16, 50, (32, 32), 32, 100),
    # A larger one: longer sequences, wider layers.
    "medium": Config("medium", 20_000, 128, 200, (128,), 32, 64),
}
QUICK = {
    "tutorial": Config("tutorial", 300, 8, 12, (8, 8), 8, 16, infer_batch=64),
    "medium": Config("medium", 300, 16, 66, (16,), 8, 16, infer_batch=64),  # > 64: a loop
}
CELLS = ("keras", "manual")


def synthetic_data(cfg: Config, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids with random lengths (at least a quarter of the steps), right-padded with 0."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, cfg.vocab, size=(n, cfg.steps), dtype=np.int32)
    lengths = rng.integers(max(1, cfg.steps // 4), cfg.steps + 1, size=n)
    x[np.arange(cfg.steps)[None, :] >= lengths[:, None]] = 0
    y = rng.integers(0, cfg.classes, size=n, dtype=np.int32)
    return x, y


class Clock:
    """Wall-clock and process-CPU time since creation, as examples/s of each."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rates(self, examples: int) -> tuple[float, float]:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        return examples / wall, examples / max(cpu, 1e-9)


# --------------------------------------------------------------------------------------- keras
class KerasBench:
    """One cell's model, compiled for ``fit`` and ``predict``."""

    def __init__(self, cfg: Config, cell: str, args: argparse.Namespace, seed: int) -> None:
        import keras
        import tensorflow as tf

        from rnnpipe.model.lstm import build_lstm_stack

        self.cfg = cfg
        opts = dict(json.loads(args.manual_opts) if cell == "manual" else {})
        inputs = keras.Input((cfg.steps,), dtype="int32")
        h = keras.layers.Embedding(cfg.vocab, cfg.embedding, mask_zero=True)(inputs)
        for layer in build_lstm_stack(cfg.units, cell, timesteps=cfg.steps, **opts):
            h = layer(h)
        h = keras.layers.Dense(cfg.fc, activation="relu")(h)
        outputs = keras.layers.Dense(cfg.classes)(h)
        self.model = keras.Model(inputs, outputs)
        self.model.compile(
            optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=1.0),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=args.jit,
            steps_per_execution=args.steps_per_execution,
        )
        x, y = synthetic_data(cfg, cfg.batch * 16, seed)
        self.train_data = (
            tf.data.Dataset.from_tensor_slices((x, y))
            .batch(cfg.batch, drop_remainder=True)
            .repeat()
            .prefetch(2)
        )
        xi, _ = synthetic_data(cfg, cfg.infer_batch * 4, seed + 1)
        self.infer_data = (
            tf.data.Dataset.from_tensor_slices(xi).batch(cfg.infer_batch).repeat().prefetch(2)
        )
        self.spe = args.steps_per_execution

    def first_step(self) -> float:
        """Seconds for the first fit and predict calls: tracing, compiling and one execution."""
        start = time.perf_counter()
        self.model.fit(self.train_data, epochs=1, steps_per_epoch=self.spe, verbose=0)
        self.model.predict(self.infer_data, steps=self.spe, verbose=0)
        return time.perf_counter() - start

    def _steps(self, steps: int) -> int:
        return max(self.spe, -(-steps // self.spe) * self.spe)  # a multiple of steps_per_execution

    def train(self, steps: int) -> tuple[float, float]:
        steps = self._steps(steps)
        clock = Clock()
        self.model.fit(
            self.train_data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False
        )
        return clock.rates(steps * self.cfg.batch)

    def infer(self, steps: int) -> tuple[float, float]:
        steps = self._steps(steps)
        clock = Clock()
        self.model.predict(self.infer_data, steps=steps, verbose=0)
        return clock.rates(steps * self.cfg.infer_batch)


# --------------------------------------------------------------------------------------- torch
class TorchBench:
    """The same model with ``torch.nn.LSTM`` (oneDNN/MKL kernels), trained in a plain loop.

    Runs in its own process (:class:`TorchWorker`): next to TensorFlow's thread pools in one
    process, torch ran up to 8x slower.
    """

    def __init__(self, cfg: Config, args: argparse.Namespace, seed: int) -> None:
        import torch
        from torch import nn

        # Long sequences push LSTM gradients into float32 denormals, which slow PyTorch's CPU
        # kernels ~13x (shared/notes/performance.md); TensorFlow flushes them by default. The
        # flag is per thread and inherited by threads created later: set it before the pool.
        torch.set_flush_denormal(True)
        torch.set_num_threads(args.threads)
        torch.manual_seed(seed)
        self.torch, self.cfg = torch, cfg

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embedding = nn.Embedding(cfg.vocab, cfg.embedding, padding_idx=0)
                dims = (cfg.embedding, *cfg.units)
                self.lstms = nn.ModuleList(
                    nn.LSTM(dims[k], dims[k + 1], batch_first=True) for k in range(len(cfg.units))
                )
                self.fc = nn.Linear(cfg.units[-1], cfg.fc)
                self.out = nn.Linear(cfg.fc, cfg.classes)

            def forward(self, x: Any, lengths: Any) -> Any:
                # The state after each row's last real token, like the masked Keras layers: with
                # right padding that is the output at index length-1 of the full-length run.
                # (Packed sequences give the same result but were 3x slower here on CPU.)
                h = self.embedding(x)
                for lstm in self.lstms:
                    h, _ = lstm(h)
                last = h[torch.arange(h.shape[0]), lengths - 1]
                return self.out(torch.relu(self.fc(last)))

        self.net = Net()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.loss = nn.CrossEntropyLoss()
        x, y = synthetic_data(cfg, cfg.batch * 16, seed)
        xt, yt = torch.from_numpy(x).long(), torch.from_numpy(y).long()
        self.batches = [
            (xt[k : k + cfg.batch], yt[k : k + cfg.batch]) for k in range(0, len(x), cfg.batch)
        ]
        xi, _ = synthetic_data(cfg, cfg.infer_batch * 4, seed + 1)
        self.infer_batches = [
            torch.from_numpy(xi[k : k + cfg.infer_batch]).long()
            for k in range(0, len(xi), cfg.infer_batch)
        ]

    @staticmethod
    def _lengths(x: Any) -> Any:
        return (x != 0).sum(1).clamp(min=1)

    def first_step(self) -> float:
        start = time.perf_counter()
        self.train(1)
        self.infer(1)
        return time.perf_counter() - start

    def train(self, steps: int) -> tuple[float, float]:
        torch = self.torch
        self.net.train()
        clock = Clock()
        for k in range(steps):
            x, y = self.batches[k % len(self.batches)]
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss(self.net(x, self._lengths(x)), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            self.opt.step()
        return clock.rates(steps * self.cfg.batch)

    def infer(self, steps: int) -> tuple[float, float]:
        torch = self.torch
        self.net.eval()
        clock = Clock()
        with torch.inference_mode():
            for k in range(steps):
                x = self.infer_batches[k % len(self.infer_batches)]
                self.net(x, self._lengths(x))
        return clock.rates(steps * self.cfg.infer_batch)


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


class TorchWorker:
    """A :class:`TorchBench` in a child process, driven line by line over a pipe."""

    def __init__(self, cfg: Config, args: argparse.Namespace, seed: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--torch-worker", json.dumps(
                {"config": asdict(cfg), "threads": args.threads, "seed": seed}
            )],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )

    def _ask(self, command: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the torch worker died")
        return json.loads(line)

    def first_step(self) -> float:
        return self._ask("first_step")

    def train(self, steps: int) -> tuple[float, float]:
        return tuple(self._ask(f"train {steps}"))

    def infer(self, steps: int) -> tuple[float, float]:
        return tuple(self._ask(f"infer {steps}"))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def torch_worker(spec: str) -> None:
    """The child side of :class:`TorchWorker`: answer each command with one number."""
    spec_dict = json.loads(spec)
    cfg = Config(**{**spec_dict["config"], "units": tuple(spec_dict["config"]["units"])})
    bench = TorchBench(cfg, argparse.Namespace(threads=spec_dict["threads"]), spec_dict["seed"])
    for line in sys.stdin:
        name, *rest = line.split()
        print(json.dumps(getattr(bench, name)(*(int(v) for v in rest))), flush=True)


# ------------------------------------------------------------------------------------- measure
def calibrate(measure: Any, per_step_batch: int, seconds: float, quick: bool) -> int:
    """How many steps make one measurement last about ``seconds``."""
    if quick:
        return 2
    rate, _ = measure(2)  # examples/s over two steps, warm
    return max(2, int(seconds * rate / per_step_batch))


def run_config(cfg: Config, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Measure every cell on one configuration; returns per-cell results."""
    benches: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    names = list(CELLS) + (["torch"] if args.torch else [])
    for name in names:
        bench = TorchWorker(cfg, args, args.seed) if name == "torch" else KerasBench(
            cfg, name, args, args.seed
        )
        benches[name] = bench
        results[name] = {"first_step_s": bench.first_step()}
        for kind in ("train", "infer", "train_cpu", "infer_cpu"):
            results[name][kind] = []
        print(f"  [{cfg.name}] {name}: first step {results[name]['first_step_s']:.1f}s", flush=True)
    steps = {
        name: (
            calibrate(bench.train, cfg.batch, args.seconds, args.quick),
            calibrate(bench.infer, cfg.infer_batch, args.seconds / 2, args.quick),
        )
        for name, bench in benches.items()
    }
    for round_ in range(args.repeats):
        # Alternate the order so neither cell always runs right after the other.
        order = names if round_ % 2 == 0 else names[::-1]
        for name in order:
            train_steps, infer_steps = steps[name]
            for kind, (wall, cpu) in (
                ("train", benches[name].train(train_steps)),
                ("infer", benches[name].infer(infer_steps)),
            ):
                results[name][kind].append(wall)
                results[name][f"{kind}_cpu"].append(cpu)
    if "torch" in benches:
        benches["torch"].close()
    return results


def report(cfg: Config, results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    units = ", ".join(str(u) for u in cfg.units)
    print(
        f"\nconfig {cfg.name}: vocab {cfg.vocab}, embedding {cfg.embedding}, steps {cfg.steps}, "
        f"units [{units}], fc {cfg.fc}, batch {cfg.batch} (inference {cfg.infer_batch}), "
        f"masked; {args.repeats} interleaved rounds: medians (min-max)"
    )
    print(
        f"{'cell':8s} {'train ex/s':>22s} {'inference ex/s':>24s} {'first step s':>13s}"
        f" {'train ex/cpu-s':>15s} {'infer ex/cpu-s':>15s}"
    )
    for name, res in results.items():
        tr, inf = res["train"], res["infer"]
        print(
            f"{name:8s} {statistics.median(tr):9.0f} ({min(tr):5.0f}-{max(tr):5.0f}) "
            f"{statistics.median(inf):10.0f} ({min(inf):6.0f}-{max(inf):6.0f}) "
            f"{res['first_step_s']:13.1f} {statistics.median(res['train_cpu']):15.0f}"
            f" {statistics.median(res['infer_cpu']):15.0f}"
        )
    # Ratios are medians of per-round ratios: the two measurements of a round are adjacent in
    # time, so a burst of load from other processes hits both (the machine is shared).
    def paired(a: str, b: str, kind: str) -> tuple[float, float, float]:
        ratios = [x / y for x, y in zip(results[a][kind], results[b][kind], strict=True)]
        return statistics.median(ratios), min(ratios), max(ratios)

    train_r, infer_r = paired("manual", "keras", "train"), paired("manual", "keras", "infer")
    train_c, infer_c = (paired("manual", "keras", f"{kind}_cpu")[0] for kind in ("train", "infer"))
    print(
        f"per-round manual/keras: train {train_r[1]:.2f}-{train_r[2]:.2f}, "
        f"inference {infer_r[1]:.2f}-{infer_r[2]:.2f}; per CPU-second: train {train_c:.2f}, "
        f"inference {infer_c:.2f}"
    )
    print(f"ratio manual/keras train={train_r[0]:.2f} infer={infer_r[0]:.2f} config={cfg.name}")
    if "torch" in results:
        best = "manual" if train_r[0] >= 1.0 else "keras"
        torch_r = paired(best, "torch", "train")
        print(f"best cell: {best}; per-round {best}/torch train {torch_r[1]:.2f}-{torch_r[2]:.2f}")
        print(f"ratio best/torch train={torch_r[0]:.2f} config={cfg.name}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tutorial,medium", help="comma-separated names")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (median)")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one measurement")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round: smoke test")
    parser.add_argument(
        "--steps-per-execution", type=int, default=1,
        help="model.compile(steps_per_execution=...) for both cells (8: same speed here, but "
        "2-4x longer first step with unrolled layers)",
    )
    parser.add_argument(
        "--jit", action=argparse.BooleanOptionalAction, default=False,
        help="model.compile(jit_compile=...) for both cells (XLA: slower here, minutes to compile)",
    )
    parser.add_argument("--torch", action=argparse.BooleanOptionalAction, default=None,
                        help="also time torch.nn.LSTM (default: if torch is importable)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for TensorFlow and torch")
    parser.add_argument("--manual-opts", default="{}",
                        help="JSON keyword arguments for the manual cell's layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-worker", help=argparse.SUPPRESS)  # internal: see TorchWorker
    args = parser.parse_args(argv)
    if args.torch_worker:
        torch_worker(args.torch_worker)
        return
    if args.quick:
        args.repeats, args.steps_per_execution = 1, min(args.steps_per_execution, 2)
    if args.torch is None:
        args.torch = torch_available()

    import keras
    import tensorflow as tf

    # Seed once: re-seeding between models would make tf.function retrace the first model.
    keras.utils.set_random_seed(args.seed)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    table = QUICK if args.quick else CONFIGS
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {sorted(table)}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"TensorFlow {tf.__version__}, {args.threads} threads, jit_compile={args.jit}, "
        f"steps_per_execution={args.steps_per_execution}, torch={'yes' if args.torch else 'no'}, "
        f"load average {load:.1f}",
        flush=True,
    )
    for name in names:
        cfg = table[name]
        results = run_config(replace(cfg), args)
        report(cfg, results, args)


if __name__ == "__main__":
    main()
