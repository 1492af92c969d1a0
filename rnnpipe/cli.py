"""The `rnnpipe` command: one subcommand per step (what `dvc.yaml` calls), the Prefect flow,
prediction, sweeps and serving.

Problems a user can fix (`RnnpipeError`: bad params or data) print one line and exit 2; an
`OSError` (disk full, an unwritable folder) prints one line and exits 1; `--debug`, before or
after the subcommand, shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import rnnpipe  # noqa: F401  (environment defaults before anything heavy loads)
from rnnpipe.errors import RnnpipeError

USER_ERROR_EXIT = 2  # bad input or params; flows/pipeline.py does not retry these
ENVIRONMENT_ERROR_EXIT = 1  # an OSError (disk full, permissions): retrying may help
ERROR_PREFIX = "rnnpipe: error: "  # how an error line starts (on stderr)
DEBUG_HINT = " (rnnpipe --debug shows where)"  # ends an environment error's line


def _step(module: str) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        import importlib

        step = importlib.import_module(f"rnnpipe.{module}")
        if getattr(args, "score_only", False):
            step.score_main()
        else:
            step.main()

    return run


def exit_without_teardown() -> None:
    """End a step process that succeeded, skipping the interpreter's teardown (`rnnpipe <step>`
    from the command line only: `main([...])` in a test returns).

    After TensorFlow and MLflow are loaded, Python's shutdown (collecting every module, then
    TensorFlow's own C++ destructors) takes about 3 s on 2 cores, once per step that uses them:
    time in which the pipeline waits and nothing is written. What shutdown must still do is
    done first: wait for non-daemon threads, run the `atexit` hooks (logging's flush, MLflow's),
    flush the standard streams. Every output was already written and renamed into place.
    """
    import atexit
    import threading

    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


def _run(args: argparse.Namespace) -> None:
    from rnnpipe.config import parse_overrides

    overrides = parse_overrides(args.set)
    api = TemporaryPrefectApi.start_unless_configured()
    sys.path.insert(0, ".")
    from flows.pipeline import pipeline  # imports Prefect while the API server starts

    if api is not None:
        # The server is still starting (on the other core): import what the flow's first task
        # needs meanwhile, instead of after it.
        import dvc.repo  # noqa: F401

        api.wait_until_ready()
    pipeline(overrides=overrides, force=args.force, refresh=args.refresh)


class TemporaryPrefectApi:
    """Prefect's temporary API server, started before this process imports Prefect.

    With no API configured, the flow starts this same server itself (Prefect's
    `SubprocessASGIServer`: uvicorn serving `prefect.server.api.server:create_app` on a local
    port, UI off, ephemeral services), but only after this process has imported Prefect and the
    server's modules, and then waits for it to start: on 2 cores about 3 s of imports plus 4 s
    of start-up, one after the other. Started first, the server starts while Prefect is
    imported, and this process never imports the server's modules. Used only when nothing could
    point Prefect at another API (`prefect_configured`); otherwise Prefect does what it does.
    """

    def __init__(self) -> None:
        import atexit
        import socket
        import subprocess

        # The socket is bound here and handed to uvicorn (`--fd`): the port is known before
        # Prefect reads its settings, and no other process can take it in between.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.api_url = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--fd", str(sock.fileno()), "--factory",
                 "prefect.server.api.server:create_app", "--log-level", "error",
                 "--lifespan", "on"],
                env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                     "PREFECT__SERVER_FINAL": "1"},
                pass_fds=[sock.fileno()])
        finally:
            sock.close()
        os.environ["PREFECT_API_URL"] = self.api_url
        # No "View at <url>" link per run: this server has no UI, and is gone when the run is.
        os.environ.setdefault("PREFECT_UI_URL", "")
        # At exit, after Prefect's own exit hooks have sent their last logs and events, as
        # Prefect stops the server it starts.
        atexit.register(self.stop)

    @classmethod
    def start_unless_configured(cls) -> TemporaryPrefectApi | None:
        """The started server, or None when Prefect may be configured to use another API."""
        return None if prefect_configured() else cls()

    def wait_until_ready(self) -> None:
        """Wait until the API answers (`PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`)."""
        import time
        import urllib.error
        import urllib.request

        timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 120))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        code = self.process.poll()
        self.stop()
        raise RuntimeError(f"the temporary Prefect API server did not start "
                           f"({'exit status ' + str(code) if code is not None else 'timed out'})"
                           f"; `make server` runs one to point PREFECT_API_URL at")

    def stop(self) -> None:
        """Stop the server (what Prefect's own temporary server does at exit)."""
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def prefect_configured(cwd: Path | None = None) -> bool:
    """Whether anything could make Prefect use another API than its temporary server, or
    settings this process cannot see before importing Prefect: then `rnnpipe run` leaves the
    server to Prefect. Cautious: any Prefect settings file counts, whatever it sets.

    Prefect reads settings from the environment, the active profile in `profiles.toml`, and
    `prefect.toml`, `pyproject.toml` (`[tool.prefect]`) and `.env` in the working directory.
    """
    if any(key in os.environ for key in ("PREFECT_API_URL", "PREFECT_PROFILE",
                                         "PREFECT_PROFILES_PATH",
                                         "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE",
                                         "PREFECT_SERVER_EPHEMERAL_ENABLED")):
        return True
    cwd = cwd or Path.cwd()
    if (cwd / "prefect.toml").exists():
        return True
    for name, marker in ((".env", "PREFECT_"), ("pyproject.toml", "tool.prefect")):
        try:
            if marker in (cwd / name).read_text(encoding="utf-8", errors="replace"):
                return True
        except OSError:
            pass
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    try:
        text = (home / "profiles.toml").read_text(encoding="utf-8")
    except OSError:
        return False  # no profiles: Prefect's defaults, the temporary server
    import tomllib

    try:
        profiles = tomllib.loads(text)
        active = profiles.get("profiles", {}).get(profiles.get("active", "ephemeral"), {})
    except (tomllib.TOMLDecodeError, AttributeError):
        return True
    return any(key in active for key in ("PREFECT_API_URL", "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE",
                                         "PREFECT_SERVER_EPHEMERAL_ENABLED"))


def _predict(args: argparse.Namespace) -> None:
    import json

    from rnnpipe.classifier import PROBABILITY_PREFIX
    from rnnpipe.predict import load_predictor

    predictor, source = load_predictor(args.model)
    print(f"model: {source}", file=sys.stderr)
    frame = predictor(list(args.texts))
    for text, row in zip(args.texts, frame.to_dict(orient="records"), strict=True):
        probs = {k.removeprefix(PROBABILITY_PREFIX): round(v, 4) for k, v in row.items()
                 if k.startswith(PROBABILITY_PREFIX)}
        print(json.dumps({"text": text, "label": row["label"], "probabilities": probs},
                         ensure_ascii=False))


def _sweep(args: argparse.Namespace) -> None:
    from rnnpipe.config import parse_overrides

    sys.path.insert(0, ".")
    from flows.sweep import sweep

    sweep(address=args.address, overrides=parse_overrides(args.set))


def _serve(args: argparse.Namespace) -> None:
    sys.path.insert(0, ".")
    from flows.deploy import serve_scheduled

    serve_scheduled()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every subcommand has `--help`)."""
    parser = argparse.ArgumentParser(
        prog="rnnpipe", description="Reproducible, tracked LSTM text classification: ingest → "
        "vocab → train → evaluate, run by DVC or Prefect and recorded in MLflow.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    # `rnnpipe ingest --debug` works too: the same flag on every subcommand, which only sets it
    # when given (SUPPRESS), so it never resets one given before the subcommand.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module, text in (
        ("ingest", "ingest", "read, validate, dedupe and split the corpus (params: ingest)"),
        ("vocab", "vocab", "segment the splits and build the vocabulary (params: vocab)"),
        ("train", "train", "train the LSTM classifier (params: train)"),
        ("evaluate", "evaluate", "score on test, write reports, log and register the model"),
    ):
        step = sub.add_parser(name, help=text, parents=[debug],
                              description=f"{text}. Reads params.yaml in the current "
                              "directory; dvc.yaml runs this command as a stage.")
        step.set_defaults(func=_step(module), step=True)
        if name == "evaluate":
            step.add_argument("--score-only", action="store_true",
                              help="only score the model and write reports/ (no MLflow): what "
                              "the step runs in a second process while it logs the model")

    run = sub.add_parser("run", parents=[debug],
                         help="run the whole pipeline as the Prefect flow rnnpipe-pipeline",
                         description="Run the Prefect flow rnnpipe-pipeline: each step is a task "
                         "that reproduces its DVC stage, so only what changed re-runs.")
    run.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a param, e.g. -S train.epochs=2 (written to params.yaml, "
                     "like dvc exp run -S)")
    run.add_argument("--force", action="store_true", help="re-run every stage")
    run.add_argument("--refresh", action="store_true",
                     help="re-read the data source (new data behind an unchanged "
                     "ingest.source, e.g. a URL); later stages re-run only if it changed")
    run.set_defaults(func=_run)

    predict = sub.add_parser("predict", parents=[debug],
                             help="label raw texts with the champion model",
                             description="Print label and class probabilities per text (JSON "
                             "lines). Default model: models:/<register.model_name>@champion, "
                             "else the workspace's models/model.keras.")
    predict.add_argument("texts", nargs="+", metavar="TEXT")
    predict.add_argument("-m", "--model", help="any MLflow model URI (models:/name@alias, "
                         "runs:/id/model, a path) or 'local' for the workspace model")
    predict.set_defaults(func=_predict)

    sweep = sub.add_parser("sweep", parents=[debug],
                           help="hyperparameter sweep (Prefect flow rnnpipe-sweep on Dask)",
                           description="Run the search in params.yaml's sweep section; trials run "
                           "in parallel on a Dask cluster (local unless --address).")
    sweep.add_argument("--address", help="an existing Dask scheduler, e.g. tcp://127.0.0.1:8786")
    sweep.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a param for every trial")
    sweep.set_defaults(func=_sweep)

    serve = sub.add_parser("serve", parents=[debug],
                           help="serve the scheduled deployment rnnpipe-pipeline/scheduled",
                           description="Serve the deployment with the cron in params.yaml "
                           "(schedule.cron) against PREFECT_API_URL.")
    serve.set_defaults(func=_serve)
    return parser


def one_line(message: str) -> str:
    """A message as one line: multi-line texts (a YAML parser's, say) are joined with `; `."""
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `rnnpipe` console script."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
        if argv is None and getattr(args, "step", False):
            exit_without_teardown()
    except RnnpipeError as exc:
        if args.debug:
            raise
        print(f"{ERROR_PREFIX}{one_line(str(exc))}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except OSError as exc:
        # The environment, not the input: a full disk, an unwritable folder. One line too, but
        # exit 1, so the Prefect flow retries it, and the traceback is one flag away.
        if args.debug:
            raise
        print(f"{ERROR_PREFIX}{one_line(str(exc))}{DEBUG_HINT}",
              file=sys.stderr)
        sys.exit(ENVIRONMENT_ERROR_EXIT)
    except KeyboardInterrupt:
        sys.exit(130)
