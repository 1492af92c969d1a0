"""The `rnnpipe` command: parse arguments, dispatch, and the exit policy. Nothing imports it
but `rnnpipe/__main__.py` and the console script.

Exit policy (`rnnpipe.errors`): a user error (bad params or data) prints one line and exits 2;
an environment error (`OSError`) prints one line and exits 1; `--debug`, before or after the
subcommand, shows the traceback instead. A step that fails also records its error for the entry
point that started it (`RNNPIPE_ERROR_FILE`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rnnpipe import __version__
from rnnpipe.errors import RnnpipeError, error_line, exit_code, record_error

# Private and quiet by default in every process rnnpipe starts (the steps DVC runs, the flows'
# stage processes); a user's own settings win.
ENVIRONMENT_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "KERAS_BACKEND": "tensorflow",
    # The ephemeral API starts in 6-10 s on an idle 2-core machine; a busy one needs longer.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
STEPS = {
    "ingest": "read, validate, dedupe and split the corpus (params: ingest)",
    "vocab": "segment the splits and build the vocabulary (params: vocab)",
    "train": "train the LSTM classifier (params: train)",
    "evaluate": "score on test, write reports, log and register the model",
}


def _params(args: argparse.Namespace):
    from rnnpipe.config import load_params, parse_overrides

    return load_params(overrides=parse_overrides(args.set))


def _step(args: argparse.Namespace) -> None:
    import importlib

    params = _params(args)  # bad params are one line before the step (TensorFlow) loads
    step = importlib.import_module(f"rnnpipe.steps.{args.command}")
    if getattr(args, "score_only", False):
        step.score_main(params)
    else:
        step.main(params)


def _run(args: argparse.Namespace) -> None:
    from rnnpipe.config import parse_overrides

    overrides = parse_overrides(args.set)
    _params(args)  # a bad override is one line here, before Prefect starts
    from flows.prefect_api import TemporaryPrefectApi

    with TemporaryPrefectApi.unless_configured():
        from flows.pipeline import run_pipeline

        run_pipeline(overrides=overrides, force=args.force, refresh=args.refresh)


def _sweep(args: argparse.Namespace) -> None:
    from rnnpipe.config import parse_overrides

    overrides = parse_overrides(args.set)
    _params(args)
    from flows.prefect_api import TemporaryPrefectApi

    # Before anything imports Prefect, which reads its settings (the API's URL) on import.
    with TemporaryPrefectApi.unless_configured():
        from flows.sweep import sweep

        sweep(address=args.address, overrides=overrides, apply_best=args.apply_best)


def _schedule(args: argparse.Namespace) -> None:
    from rnnpipe.config import parse_overrides

    overrides = parse_overrides(args.set)
    _params(args)
    from flows.deploy import serve_scheduled

    serve_scheduled(overrides=overrides)


def _predict(args: argparse.Namespace) -> None:
    import json

    from rnnpipe.config import apply_overrides, parse_overrides
    from rnnpipe.predict import load_predictor, predict_file

    overrides = parse_overrides(args.set)
    apply_overrides({}, overrides)  # a typo'd -S is one line, as on every other command
    project = Path(args.project) if args.project else None
    if not args.texts and not args.input:
        raise RnnpipeError("predict: give texts, or -i FILE (- for stdin)")
    predictor = load_predictor(args.model, project, overrides)
    print(f"model: {predictor.source}", file=sys.stderr)
    if args.input:
        result = predict_file(predictor, args.input, args.output)
        if "accuracy" in result:
            print(f"predict: on {result['labelled']} labelled documents: accuracy "
                  f"{result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f}"
                  + (f" (labels the model does not know: {', '.join(result['unknown_labels'])})"
                     if result["unknown_labels"] else ""), file=sys.stderr)
        return
    probabilities = predictor.probabilities(list(args.texts))
    for text, row in zip(args.texts, probabilities, strict=True):
        label = predictor.labels[int(row.argmax())]
        print(json.dumps({"text": text, "label": label, "probabilities": {
            name: round(float(p), 4) for name, p in zip(predictor.labels, row, strict=True)}},
            ensure_ascii=False))


def _models(args: argparse.Namespace) -> None:
    from rnnpipe.config import model_name
    from rnnpipe.tracking.registry import promote_by_hand, registry_rows
    from rnnpipe.tracking.store import client

    params = _params(args)
    if args.action == "uri":  # what `make serve` serves
        print(f"models:/{args.name or model_name(params)}@champion")
        return
    store = client(params, create=False)
    if args.action == "promote":
        name = args.name or model_name(params)
        note = promote_by_hand(store, name, str(args.version), args.reason)
        print(f"models: {name} v{args.version} is champion ({note})")
        return
    names = [args.name] if args.name else None if args.all else [model_name(params)]
    rows = registry_rows(store, names)
    if not rows:
        print("models: no registered model yet" + ("" if args.all else
              f" named {names[0]} (--all lists every model)"))
        return
    print(format_models(rows))


def _ui(args: argparse.Namespace) -> None:
    from rnnpipe.tracking.ui import serve_ui

    serve_ui(_params(args), args.host, args.port)


def _restore(args: argparse.Namespace) -> None:
    from rnnpipe.config import params_from_dict
    from rnnpipe.restore import restore
    from rnnpipe.tracking.store import client

    params = _params(args) if Path("params.yaml").exists() else params_from_dict({})
    destination = Path(args.directory or f"rnnpipe-run-{args.run_id[:8]}")
    checked = restore(client(params, create=False), args.run_id, destination, args.origin,
                      args.remote)
    print(f"restore: run {args.run_id} rebuilt in {destination}; "
          f"{len(checked)} DVC hashes match the run's ({', '.join(checked)})")


def format_models(rows: list[dict]) -> str:
    """The registry as a table: versions newest first, with aliases, scores and decisions, and
    each decision's reason under its row."""
    from rnnpipe.console import table

    header = ["model", "version", "aliases", "test acc", "test F1", "data md5", "decision"]
    body = [[r["name"], f"v{r['version']}", ",".join(r["aliases"]) or "-",
             _score(r["test_accuracy"]), _score(r["test_macro_f1"]), r["data_md5"][:8] or "-",
             r["decision"] or "-"] for r in rows]
    lines = table(header, body).splitlines()
    out = lines[:1]
    for line, row in zip(lines[1:], rows, strict=True):
        out.append(line)
        if row["reason"]:
            out.append(f"    reason: {row['reason']}")
    return "\n".join(out)


def _score(value: str | None) -> str:
    return f"{float(value):.4f}" if value not in (None, "") else "-"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every subcommand has `--help`)."""
    parser = argparse.ArgumentParser(
        prog="rnnpipe", description="Reproducible, tracked LSTM text classification: ingest → "
        "vocab → train → evaluate, run by DVC or Prefect and recorded in MLflow.")
    parser.add_argument("--version", action="version", version=f"rnnpipe {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    # `rnnpipe ingest --debug` works too: the same flag on every subcommand, which only sets it
    # when given (SUPPRESS), so it never resets one given before the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")
    common.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, e.g. -S train.max_epochs=2")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in STEPS.items():
        step = sub.add_parser(name, help=text, parents=[common],
                              description=f"{text}. Reads params.yaml in the current directory "
                              "(-S overrides apply to this run only); dvc.yaml runs this "
                              "command as a stage.")
        step.set_defaults(func=_step, step=True)
        if name == "evaluate":
            step.add_argument("--score-only", action="store_true",
                              help="only score the model and write reports/ (no MLflow): what "
                              "the step runs in a second process while it logs the model")

    run = sub.add_parser("run", parents=[common],
                         help="run the whole pipeline as the Prefect flow rnnpipe-pipeline",
                         description="Run the Prefect flow rnnpipe-pipeline: each step is a task "
                         "that reproduces its DVC stage, so only what changed re-runs. -S "
                         "overrides are written to params.yaml, like dvc exp run -S.")
    run.add_argument("--force", action="store_true", help="re-run every stage")
    run.add_argument("--refresh", action="store_true",
                     help="re-read the data source (new data behind an unchanged "
                     "ingest.source, e.g. a URL); later stages re-run only if it changed")
    run.set_defaults(func=_run)

    predict = sub.add_parser("predict", parents=[common],
                             help="label texts or a file with the champion model",
                             description="Label texts (JSON lines on stdout) or a file/stream "
                             "(-i) with models:/<lineage>@champion of the project (the working "
                             "directory, or --project), or any model (-m).")
    predict.add_argument("texts", nargs="*", metavar="TEXT")
    predict.add_argument("-i", "--input", metavar="FILE", help="label<TAB>text or text lines, "
                         "CSV with a text column, JSONL with a text field; - for stdin")
    predict.add_argument("-o", "--output", metavar="FILE",
                         help="CSV or JSONL (by suffix); default: JSONL on stdout")
    predict.add_argument("-m", "--model", help="any MLflow model URI (models:/name@alias, "
                         "runs:/id/model) or 'local' for the workspace's model")
    predict.add_argument("--project", metavar="DIR", help="the rnnpipe project whose champion "
                         "and MLflow store to use (default: the working directory)")
    predict.set_defaults(func=_predict)

    models = sub.add_parser("models", parents=[common], help="the registry: versions, "
                            "aliases, scores, gate decisions; promote by hand",
                            description="List registered versions newest first (the project's "
                            "lineage, --name, or --all), or move champion by hand.")
    models.add_argument("action", nargs="?", choices=("list", "promote", "uri"), default="list",
                        help="list (default); promote VERSION; uri: the champion's model URI")
    models.add_argument("version", nargs="?", type=int, help="the version to promote")
    models.add_argument("--name", help="a registered model (default: the project's lineage)")
    models.add_argument("--all", action="store_true", help="every registered model")
    models.add_argument("--reason", default="no reason given",
                        help="why (recorded on the version)")
    models.set_defaults(func=_models)

    sweep = sub.add_parser("sweep", parents=[common],
                           help="hyperparameter sweep (Prefect flow rnnpipe-sweep on Dask)",
                           description="Run the search in params.yaml's sweep section in "
                           "throwaway workspaces (trials ranked on validation); the workspace "
                           "and params.yaml stay as they are. -S applies to this sweep only.")
    sweep.add_argument("--address", help="an existing Dask scheduler, e.g. tcp://127.0.0.1:8786")
    sweep.add_argument("--apply-best", action="store_true",
                       help="afterwards, write the best trial's params to params.yaml and check "
                       "out its outputs (dvc status clean)")
    sweep.set_defaults(func=_sweep)

    restore = sub.add_parser("restore", parents=[common], help="rebuild an MLflow run's "
                             "workspace from git and the DVC remote",
                             description="Clone the run's repository at its commit, put its "
                             "params.yaml and dvc.lock in place, dvc pull, and check every "
                             "DVC hash against the run's.")
    restore.add_argument("run_id", metavar="RUN_ID")
    restore.add_argument("directory", nargs="?", help="a new folder (default: rnnpipe-run-<id>)")
    restore.add_argument("--origin", help="the git repository (default: the run's "
                         "mlflow.source.git.repoURL)")
    restore.add_argument("--remote", help="the DVC remote to pull from (default: the default)")
    restore.set_defaults(func=_restore)

    ui = sub.add_parser("ui", parents=[common], help="the MLflow UI on the experiment's runs "
                        "table", description="Start the MLflow UI on this project's store "
                        "(no job-execution workers) and print the link that opens the runs "
                        "table with rnnpipe's columns; with a tracking server, print its link.")
    ui.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    ui.add_argument("--port", type=int, default=int(os.environ.get("UI_PORT", "5000")))
    ui.set_defaults(func=_ui)

    schedule = sub.add_parser("schedule", parents=[common], aliases=["serve"],
                              help="serve the scheduled deployment rnnpipe-pipeline/scheduled "
                              "(`serve` is its old name)",
                              description="Serve the Prefect deployment with the cron in "
                              "params.yaml (schedule.cron) against PREFECT_API_URL; its runs "
                              "execute here. (The model server is `make serve`.)")
    schedule.set_defaults(func=_schedule)
    return parser


def exit_without_teardown() -> None:
    """End a step process that succeeded, skipping the interpreter's teardown (`rnnpipe <step>`
    from the command line only: `main([...])` in a test returns).

    After TensorFlow and MLflow are loaded, Python's shutdown (collecting every module, then
    TensorFlow's own C++ destructors) takes about 3 s on 2 cores, once per step that uses them:
    time in which the pipeline waits and nothing is written. What shutdown must still do is
    done first: wait for non-daemon threads, run the `atexit` hooks, flush the streams. Every
    output was already written and renamed into place.
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


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `rnnpipe` console script."""
    for key, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (Exception, KeyboardInterrupt) as exc:
        code = exit_code(exc)
        recorded = getattr(args, "step", False) and record_error(exc, args.command)
        if code is None or args.debug:
            raise
        if not isinstance(exc, KeyboardInterrupt) and not recorded:
            print(error_line(exc), file=sys.stderr)
        sys.exit(code)
    if argv is None and getattr(args, "step", False):
        exit_without_teardown()
