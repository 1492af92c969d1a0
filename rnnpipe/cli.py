"""The `rnnpipe` command: one subcommand per step (what `dvc.yaml` calls), the Prefect flow,
prediction, sweeps and serving.

Problems a user can fix (`RnnpipeError`) print one line and exit 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import rnnpipe  # noqa: F401  (environment defaults before anything heavy loads)
from rnnpipe.errors import RnnpipeError

USER_ERROR_EXIT = 2  # bad input or params; flows/pipeline.py does not retry these


def _step(module: str) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        import importlib

        importlib.import_module(f"rnnpipe.{module}").main()

    return run


def _run(args: argparse.Namespace) -> None:
    from rnnpipe.config import parse_overrides

    sys.path.insert(0, ".")
    from flows.pipeline import pipeline

    pipeline(overrides=parse_overrides(args.set), force=args.force)


def _predict(args: argparse.Namespace) -> None:
    import json

    from rnnpipe.predict import load_predictor

    predictor, source = load_predictor(args.model)
    print(f"model: {source}", file=sys.stderr)
    frame = predictor(list(args.texts))
    for text, row in zip(args.texts, frame.to_dict(orient="records"), strict=True):
        probs = {k.removeprefix("prob_"): round(v, 4) for k, v in row.items()
                 if k.startswith("prob_")}
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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module, text in (
        ("ingest", "ingest", "read, validate, dedupe and split the corpus (params: ingest)"),
        ("vocab", "vocab", "segment the splits and build the vocabulary (params: vocab)"),
        ("train", "train", "train the LSTM classifier (params: train)"),
        ("evaluate", "evaluate", "score on test, write reports, log and register the model"),
    ):
        step = sub.add_parser(name, help=text, description=f"{text}. Reads params.yaml in the "
                              "current directory; dvc.yaml runs this command as a stage.")
        step.set_defaults(func=_step(module))

    run = sub.add_parser("run", help="run the whole pipeline as the Prefect flow rnnpipe-pipeline",
                         description="Run the Prefect flow rnnpipe-pipeline: each step is a task "
                         "that reproduces its DVC stage, so only what changed re-runs.")
    run.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a param, e.g. -S train.epochs=2 (written to params.yaml, "
                     "like dvc exp run -S)")
    run.add_argument("--force", action="store_true", help="re-run every stage")
    run.set_defaults(func=_run)

    predict = sub.add_parser("predict", help="label raw texts with the champion model",
                             description="Print label and class probabilities per text (JSON "
                             "lines). Default model: models:/<register.model_name>@champion, "
                             "else the workspace's models/model.keras.")
    predict.add_argument("texts", nargs="+", metavar="TEXT")
    predict.add_argument("-m", "--model", help="any MLflow model URI (models:/name@alias, "
                         "runs:/id/model, a path) or 'local' for the workspace model")
    predict.set_defaults(func=_predict)

    sweep = sub.add_parser("sweep", help="hyperparameter sweep (Prefect flow rnnpipe-sweep on Dask)",
                           description="Run the search in params.yaml's sweep section; trials run "
                           "in parallel on a Dask cluster (local unless --address).")
    sweep.add_argument("--address", help="an existing Dask scheduler, e.g. tcp://127.0.0.1:8786")
    sweep.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a param for every trial")
    sweep.set_defaults(func=_sweep)

    serve = sub.add_parser("serve", help="serve the scheduled deployment rnnpipe-pipeline/scheduled",
                           description="Serve the deployment with the cron in params.yaml "
                           "(schedule.cron) against PREFECT_API_URL.")
    serve.set_defaults(func=_serve)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `rnnpipe` console script."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except RnnpipeError as exc:
        if args.debug:
            raise
        print(f"rnnpipe: error: {exc}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except KeyboardInterrupt:
        sys.exit(130)
