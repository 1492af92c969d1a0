"""`rnnpipe ui`: the MLflow UI on this project's store, opened where people compare runs.

A SQLite store gets a local `mlflow ui` (with MLflow's job-execution workers off: they take ~2 GB
and the UI submits no jobs); a tracking server already has its UI. Either way the printed link
opens the experiment's runs table with rnnpipe's saved view of columns
(`store.experiment_url`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from rnnpipe.config import Params
from rnnpipe.tracking.store import client, experiment_id, experiment_url, sqlite_file, store_root


def serve_ui(params: Params, host: str, port: int) -> None:
    """Print the runs table's link; for a SQLite store, serve the UI until interrupted."""
    store = client(params, create=False)
    experiment = experiment_id(store, params)
    if sqlite_file(store.tracking_uri) is None:  # a tracking server has its own UI
        print(f"MLflow UI: {experiment_url(store.tracking_uri, experiment)}")
        return
    base = f"http://{host}:{port}"
    command = [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
               store.tracking_uri, "--default-artifact-root",
               str(store_root() / params.mlflow.artifact_root), "--host", host,
               "--port", str(port), "--workers", "1"]
    server = subprocess.Popen(command, env={**os.environ,
                                            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        for _ in range(240):
            if server.poll() is not None:
                raise OSError(f"mlflow ui exited with status {server.returncode} (is port "
                              f"{port} in use? --port picks another)")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        print(f"MLflow UI (Ctrl-C to stop): {experiment_url(base, experiment)}", flush=True)
        server.wait()
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait()
