"""The one MLflow service: where the store is, and a client that retries on its own.

The store defaults to SQLite at `mlruns/mlflow.db` with artifacts under `mlruns/artifacts`;
`MLFLOW_TRACKING_URI` overrides `mlflow.tracking_uri` (an `http://` tracking server, say). Only
`MlflowClient` calls with explicit run ids are used: MLflow's active run is thread-local and
Prefect runs tasks in threads.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from rnnpipe.config import Params
from rnnpipe.errors import RnnpipeError

T = TypeVar("T")
SQLITE_PREFIX = "sqlite:///"
# The runs table as rnnpipe's experiment page shows it: a saved view (an experiment tag the UI
# reads when a link names it, `?viewStateShareKey=rnnpipe`) with the columns people compare.
VIEW_KEY = "rnnpipe"
VIEW_METRICS = ("test_accuracy", "test_macro_f1", "val_accuracy", "val_macro_f1",
                "baseline_test_accuracy", "train_accuracy", "best_epoch")
VIEW_PARAMS = ("ingest.source", "vocab.tokenizer", "train.lstm_units", "train.embedding_dim",
               "train.learning_rate", "train.max_len")


def runs_view(created_ms: int) -> str:
    """The saved view's tag value (MLflow 3.17's UI format: a JSON envelope whose `state` is
    itself JSON; column ids look like ``metrics.`test_accuracy` ``)."""
    def column(kind: str, key: str) -> str:
        return f"{kind}.`{key}`"

    columns = [column("metrics", m) for m in VIEW_METRICS] + \
        [column("params", p) for p in VIEW_PARAMS]
    name = column("attributes", "Run Name")
    state = {"selectedColumns": columns, "columnOrder": [name, *columns],
             "columnWidths": {name: 320}}
    return json.dumps({"name": "rnnpipe: compare runs", "createdAt": created_ms,
                       "updatedAt": created_ms, "state": json.dumps(state)})


def experiment_tags() -> dict[str, str]:
    """What rnnpipe's experiment is created with: a model-training experiment (MLflow 3's
    `mlflow.experimentKind`; 3.17's UI picks the page from its sidebar toggle instead, which
    `experiment_url` sets) and the saved runs view."""
    return {"mlflow.experimentKind": "custom_model_development",
            f"mlflow.sharedViewState.{VIEW_KEY}": runs_view(int(time.time() * 1000))}


def experiment_url(ui: str, experiment: str) -> str:
    """The experiment's runs table in the MLflow UI at `ui`, with rnnpipe's columns. (The bare
    experiment link opens MLflow 3's GenAI overview.)"""
    return (f"{ui.rstrip('/')}/#/experiments/{experiment}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={VIEW_KEY}")


def store_root(cwd: Path | None = None) -> Path:
    """The checkout whose `mlruns/` holds the store.

    `dvc exp run --queue` runs each experiment in a temporary copy under `.dvc/tmp/exps/`; its
    runs belong in the main checkout's store, not in a folder DVC deletes afterwards.
    """
    cwd = (cwd or Path.cwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return cwd


def tracking_uri(params: Params, root: Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI`, else `mlflow.tracking_uri` with a relative SQLite path anchored at
    the store root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.mlflow.tracking_uri
    if uri.startswith(SQLITE_PREFIX) and not uri[len(SQLITE_PREFIX):].startswith("/"):
        uri = SQLITE_PREFIX + str(store_root(root) / uri[len(SQLITE_PREFIX):])
    return uri


def sqlite_file(uri: str) -> Path | None:
    """The database file of a SQLite store URI, else None."""
    return Path(uri[len(SQLITE_PREFIX):]) if uri.startswith(SQLITE_PREFIX) else None


def retry_locked(fn: Callable[[], T], attempts: int = 8, base_delay_s: float = 0.2) -> T:
    """Call `fn`, retrying with jittered backoff while SQLite says the database is locked.

    Two pipelines writing one SQLite store at once see this; the lock is released in ms.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # MLflow wraps the sqlite error in several exception types
            if "database is locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(base_delay_s * 2 ** attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")


class RetryingClient:
    """An `MlflowClient` whose every call is retried while a SQLite store is locked."""

    def __init__(self, client: Any, uri: str) -> None:
        self._client = client
        self.tracking_uri = uri

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def call(*args: Any, **kwargs: Any) -> Any:
            return retry_locked(lambda: attribute(*args, **kwargs))

        return call


def client(params: Params, create: bool = True, root: Path | None = None) -> RetryingClient:
    """A retrying client for the configured store (MLflow's fluent API stays untouched: see
    `fluent`).

    With `create=False` a SQLite store that does not exist yet is an error instead of being
    created (`rnnpipe predict` must never make an empty store by accident). `root` is the
    project a relative SQLite path belongs to (default: the working directory's).
    """
    import logging

    from mlflow.tracking import MlflowClient

    # MLflow narrates at INFO ("Creating initial MLflow database tables", "Validating input
    # example", "Successfully registered model"); rnnpipe prints what happened in one line.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    uri = tracking_uri(params, root)
    database = sqlite_file(uri)
    if database is not None and not database.exists():
        if not create:
            raise RnnpipeError(f"{database}: no MLflow store here yet; run the pipeline first "
                               f"(make run) or set MLFLOW_TRACKING_URI")
        database.parent.mkdir(parents=True, exist_ok=True)
    with _sqlite_init_lock(database):
        # MLflow creates and migrates a new SQLite store's tables when a client first opens it,
        # without a lock: two pipelines starting at once on one new store then fail ("table
        # already exists"). Opening it under a file lock lets one do it.
        return RetryingClient(MlflowClient(uri), uri)


@contextlib.contextmanager
def fluent(store: RetryingClient) -> Iterator[None]:
    """Point MLflow's fluent API (`log_model`, `register_model`, `pyfunc.load_model` of a
    `models:/` URI) at `store` for a block, then put it back.

    `mlflow.set_tracking_uri` also exports `MLFLOW_TRACKING_URI` to every process started later;
    set for good, a store would leak into the next project this process works on.
    """
    import mlflow

    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(store.tracking_uri)
    mlflow.set_registry_uri(store.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _sqlite_init_lock(database: Path | None) -> Iterator[None]:
    """An exclusive inter-process lock beside a SQLite store's file (a no-op otherwise)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        fcntl = None
    if fcntl is None or database is None:
        yield
        return
    with open(database.with_name(f"{database.name}.init.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def experiment_id(mlflow_client: RetryingClient, params: Params) -> str:
    """Get or create the experiment, as a model-training experiment (the UI opens it on the
    runs table); a local store keeps its artifacts under `mlruns/`."""
    name = params.mlflow.experiment
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        if f"mlflow.sharedViewState.{VIEW_KEY}" not in experiment.tags:  # an older rnnpipe's
            for key, value in experiment_tags().items():
                mlflow_client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    location = None
    if sqlite_file(mlflow_client.tracking_uri) is not None:
        location = (store_root() / params.mlflow.artifact_root).resolve().as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location,
                                               tags=experiment_tags())
    except Exception:  # another process created it first
        return mlflow_client.get_experiment_by_name(name).experiment_id


def run_url(mlflow_client: RetryingClient, experiment: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI when the store is a server (a SQLite store has no UI
    until `make ui`)."""
    uri = mlflow_client.tracking_uri
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"
    return None
