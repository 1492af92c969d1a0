"""Prefect in production: the served, scheduled deployment against a real Prefect server; failures,
retries and re-use of finished steps; URL ingestion; a parallel sweep on a local Dask cluster.

Every server and subprocess started here binds to 127.0.0.1, uses a temporary PREFECT_HOME and is
stopped (its whole process group) when its fixture ends, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from flows.deploy import schedule
from flows.pipeline import StageFailed, StageUserError, is_user_error, retry_unless_user_error
from flows.sweep import TrialFailed, plan_trials
from rnnpipe.config import IngestParams, ScheduleParams, SweepParams
from rnnpipe.errors import DataError, ParamsError, RnnpipeError
from rnnpipe.ingest import download, ingest
from tests.conftest import BIN, make_project, make_zh_corpus, write_tsv

DEPLOYMENT = "rnnpipe-pipeline/scheduled"
CRON, TIMEZONE = "17 4 * * 1-5", "Europe/Berlin"  # not the defaults: they must come from params
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
LEAKY_ENV = ("MLFLOW_", "PREFECT_", "RNNPIPE_", "DVC_EXP")


# --- helpers -------------------------------------------------------------------------------------

def tiny_project(root: Path, **sections: dict[str, Any]) -> Path:
    """A tiny Chinese two-class project whose corpus lives in `corpus/`, as dvc.yaml expects;
    `sections` update params.yaml (`schedule={"cron": ...}`). Character tokens: every step that
    segments text would otherwise load jieba's dictionary, which these tests do not exercise."""
    make_project(root, Path("corpus/reviews.tsv"), "char", train={"epochs": 1})
    (root / "corpus").mkdir(exist_ok=True)
    write_tsv(root / "corpus" / "reviews.tsv", make_zh_corpus())
    params_path = root / "params.yaml"
    params = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    for section, values in sections.items():
        params[section] = {**params.get(section, {}), **values}
    params_path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return root


def child_env(prefect_home: Path, **extra: str) -> dict[str, str]:
    """The environment of a server or CLI subprocess: nothing tracking-related from this shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY_ENV)}
    env.update(PREFECT_HOME=str(prefect_home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", **extra)
    return env


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def background(cmd: list[str], log: Path, **kwargs: Any) -> Iterator[subprocess.Popen]:
    """Run `cmd` in its own process group, output to `log`; stop the whole group afterwards."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, **kwargs)
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # graceful: `serve` pauses its schedule
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # and anything it left behind
            proc.wait()


def wait_for(check: Callable[[], Any], what: str, timeout: float, proc: subprocess.Popen,
             log: Path) -> Any:
    """Poll `check` until it returns something truthy; fail with `log`'s tail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with contextlib.suppress(Exception):
            if result := check():
                return result
        time.sleep(1)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    raise AssertionError(f"{what} not ready after {timeout}s (exit code {proc.poll()}):\n{tail}")


@contextlib.contextmanager
def prefect_client(api: SimpleNamespace) -> Iterator[Any]:
    """A sync Prefect client for the test server (settings scoped to the block)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings({PREFECT_API_URL: api.url, PREFECT_HOME: api.home}), \
            get_client(sync_client=True) as client:
        yield client


def run_deployment(served: SimpleNamespace, parameters: dict[str, Any],
                   timeout: float = 420) -> Any:
    """Trigger a run of the served deployment and wait for it to end; return the flow run."""
    with prefect_client(served.api) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = client.read_flow_run(run.id)
            if run.state and run.state.type.value in TERMINAL:
                return run
            time.sleep(2)
    tail = "\n".join(served.log.read_text(errors="replace").splitlines()[-60:])
    raise AssertionError(f"flow run {run.id} still {run.state} after {timeout}s:\n{tail}")


def task_run_counts(api: SimpleNamespace, flow_run_id: Any) -> dict[str, int]:
    """`{task run name: run_count}` of one flow run."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with prefect_client(api) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name: run.run_count for run in runs}


def mlflow_runs(project: Path, query: str = "") -> list[Any]:
    """The project's MLflow runs matching a search filter."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("rnnpipe")
    return client.search_runs([experiment.experiment_id], query) if experiment else []


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """A real Prefect server on a free 127.0.0.1 port, with its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = home / "server.log"
    cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with background(cmd, log, env=child_env(home, PREFECT_UI_ENABLED="false")) as proc:
        wait_for(lambda: urllib.request.urlopen(f"{url}/health", timeout=5).status == 200,
                 "prefect server", 180, proc, log)
        yield SimpleNamespace(url=url, home=home)


@pytest.fixture(scope="module")
def served(prefect_api: SimpleNamespace,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """`rnnpipe serve` running in a tiny project against the test server, deployment registered."""
    project = tiny_project(tmp_path_factory.mktemp("served") / "project",
                           schedule={"cron": CRON, "timezone": TIMEZONE})
    log = project.parent / "serve.log"
    env = child_env(prefect_api.home, PREFECT_API_URL=prefect_api.url,
                    PREFECT_RUNNER_POLL_FREQUENCY="2")  # pick triggered runs up quickly
    with background([str(BIN / "rnnpipe"), "serve"], log, cwd=project, env=env) as proc:
        served = SimpleNamespace(api=prefect_api, project=project, log=log)

        def registered() -> Any:
            with prefect_client(prefect_api) as client:
                return client.read_deployment_by_name(DEPLOYMENT)

        served.deployment = wait_for(registered, "deployment", 180, proc, log)
        yield served


@pytest.fixture
def http_corpus(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """A corpus on a local HTTP server (a thread) that can answer 503 a few times first."""
    root = tmp_path / "www"
    root.mkdir()
    payload = write_tsv(root / "reviews.tsv", make_zh_corpus()).read_bytes()
    state = SimpleNamespace(failures_left=0, requests=0)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:
            state.requests += 1
            if state.failures_left > 0:
                state.failures_left -= 1
                self.send_error(503, "busy, try again")
                return
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}/reviews.tsv",
                              sha256=hashlib.sha256(payload).hexdigest(), state=state)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- deployments ---------------------------------------------------------------------------------

def test_served_deployment_has_the_schedule_from_params(served):
    deployment = served.deployment
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules] == [
        (CRON, TIMEZONE, True)]
    assert deployment.parameters == {"root": str(served.project), "refresh": True}
    # Runs share the project's workspace, so they queue instead of overlapping.
    assert deployment.global_concurrency_limit.limit == 1


def test_bad_schedule_params_fail_with_the_key():
    with pytest.raises(ParamsError, match=r"^schedule\.cron: "):
        schedule(ScheduleParams(cron="61 * * * *"))
    with pytest.raises(ParamsError, match=r"^schedule\.timezone: "):
        schedule(ScheduleParams(timezone="Mars/Olympus"))
    assert schedule(ScheduleParams(cron=CRON, timezone=TIMEZONE)).cron == CRON


def test_triggered_run_completes_is_tracked_and_rerun_reuses_steps(served):
    overrides = {"train.fc_units": 4, "ingest.source": "corpus/reviews.tsv", "ingest.sha256": None}
    first = run_deployment(served, {"overrides": overrides})
    assert first.state.type.value == "COMPLETED", first.state.message
    runs = mlflow_runs(served.project, f"tags.`prefect.flow_run_id` = '{first.id}'")
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].data.params["train.fc_units"] == "4" and "test_macro_f1" in runs[0].data.metrics

    model = served.project / "models" / "model.keras"
    trained_at = model.stat().st_mtime_ns
    again = run_deployment(served, {"overrides": overrides})  # nothing changed
    assert again.state.type.value == "COMPLETED", again.state.message
    assert model.stat().st_mtime_ns == trained_at  # DVC skipped train and evaluate
    assert again.total_run_time < first.total_run_time
    # The scheduled deployment re-reads the source (refresh): that execution is recorded too,
    # as a FINISHED run without a model.
    reruns = mlflow_runs(served.project, f"tags.`prefect.flow_run_id` = '{again.id}'")
    assert [r.info.status for r in reruns] == ["FINISHED"]
    assert "test_macro_f1" not in reruns[0].data.metrics


def test_failing_stage_fails_the_run_clearly_and_user_errors_are_not_retried(
        served, http_corpus):
    bad = {"ingest.source": http_corpus.url, "ingest.sha256": "f" * 64}
    run = run_deployment(served, {"overrides": bad})
    assert run.state.type.value == "FAILED"
    assert "stage 'ingest' failed" in run.state.message
    assert "sha256 mismatch" in run.state.message  # the step's own error, not just "exit 2"
    assert task_run_counts(served.api, run.id) == {"ingest": 1}  # bad data: no retries
    runs = mlflow_runs(served.project, f"tags.`prefect.flow_run_id` = '{run.id}'")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "sha256 mismatch" in runs[0].data.tags["error"]


# --- resilience ----------------------------------------------------------------------------------

def test_url_ingest_checksum_mismatch_and_transient_failure(http_corpus, tmp_path, in_dir):
    in_dir(tmp_path)  # downloads land in ./data/download
    params = IngestParams(source=http_corpus.url, sha256=http_corpus.sha256, val_size=0.2,
                          test_size=0.2)
    summary = ingest(params, data_dir=tmp_path / "data", summary_path=tmp_path / "ingest.json")
    assert summary["source"] == http_corpus.url and sum(summary["splits"].values()) == 80

    with pytest.raises(DataError, match="sha256 mismatch"):
        download(http_corpus.url, "0" * 64, dest_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())

    http_corpus.state.requests, http_corpus.state.failures_left = 0, 1
    path = download(http_corpus.url, http_corpus.sha256, dest_dir=tmp_path / "retry",
                    backoff_s=0.01)
    assert http_corpus.state.requests == 2 and path.read_bytes()

    http_corpus.state.requests, http_corpus.state.failures_left = 0, 10
    with pytest.raises(DataError, match="HTTP 503"):
        download(http_corpus.url, None, dest_dir=tmp_path / "down", attempts=3, backoff_s=0.01)
    assert http_corpus.state.requests == 3


def test_retry_condition_retries_transient_failures_only():
    from dvc.exceptions import ReproductionError
    from dvc.stage.exceptions import StageCmdFailedError

    def failed(exc: BaseException) -> Any:
        return SimpleNamespace(result=lambda raise_on_failure=True: exc)

    def repro_error(code: int) -> ReproductionError:
        try:
            raise ReproductionError("ingest") from StageCmdFailedError("python -m rnnpipe", code)
        except ReproductionError as exc:
            return exc

    assert not retry_unless_user_error(None, None, failed(repro_error(2)))
    assert retry_unless_user_error(None, None, failed(repro_error(1)))
    assert retry_unless_user_error(None, None, failed(repro_error(20)))
    assert is_user_error(StageFailed("stage 'ingest' failed: ..., exited with 2; the step ..."))
    assert issubclass(StageUserError, RnnpipeError)  # `rnnpipe run`: one line, exit 2
    assert is_user_error(TrialFailed("trial 1 failed: ERROR: ..., exited with 2"))
    assert not is_user_error(TrialFailed("trial 1 failed: Killed"))


# --- sweeps --------------------------------------------------------------------------------------

def test_plan_trials_grid_random_and_bad_specs():
    grid = {"train.learning_rate": [0.1, 0.2], "train.lstm_units": [[8], [16], [32]]}
    trials = plan_trials(SweepParams(grid=grid))
    assert len(trials) == 6 and trials[0] == {"train.learning_rate": 0.1, "train.lstm_units": [8]}
    drawn = plan_trials(SweepParams(method="random", grid=grid, trials=4, seed=3))
    assert len(drawn) == 4 and all(t in trials for t in drawn)
    assert len({str(t) for t in drawn}) == 4
    assert drawn == plan_trials(SweepParams(method="random", grid=grid, trials=4, seed=3))
    assert len(plan_trials(SweepParams(method="random", grid=grid, trials=50))) == 6
    with pytest.raises(ParamsError, match=r"sweep\.metric"):
        plan_trials(SweepParams(grid=grid, metric="loss"))
    with pytest.raises(ParamsError, match=r"sweep\.grid\.register\.enabled"):
        plan_trials(SweepParams(grid={"register.enabled": [True, False]}))
    with pytest.raises(ParamsError, match=r"sweep\.grid"):
        plan_trials(SweepParams(grid={}))


def test_sweep_on_local_dask_cluster_registers_the_best_trial(tmp_path, clean_env):
    from mlflow.tracking import MlflowClient

    project = tiny_project(tmp_path / "project", sweep={
        "method": "grid", "grid": {"train.learning_rate": [0.0005, 0.05]}, "metric": "macro_f1",
        "workers": 2})
    scratch = tmp_path / "scratch"  # trial workspaces and Dask's files: checked below
    scratch.mkdir()
    env = child_env(tmp_path / "prefect-home", TMPDIR=str(scratch))
    result = subprocess.run([str(BIN / "rnnpipe"), "sweep"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "trials sorted by macro_f1" in output

    parents = mlflow_runs(project, "tags.`rnnpipe.sweep` = 'parent'")
    assert [p.info.status for p in parents] == ["FINISHED"]
    parent = parents[0]
    trials = mlflow_runs(project, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(t.data.params["train.learning_rate"] for t in trials) == ["0.0005", "0.05"]
    assert all(t.info.status == "FINISHED" and t.data.params["register.enabled"] == "false"
               for t in trials)
    # The shared steps ran once, in the project, and logged into the parent run.
    assert "ingest.documents_kept" in parent.data.metrics
    lock = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))
    assert set(lock["stages"]) == {"ingest", "vocab"}
    assert not (project / "models" / "model.keras").exists()  # trials trained elsewhere
    assert not list(scratch.glob("rnnpipe-trial-*"))  # and cleaned up

    best_score = max(t.data.metrics["test_macro_f1"] for t in trials)
    best_ids = {t.info.run_id for t in trials if t.data.metrics["test_macro_f1"] == best_score}
    client = MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    candidate = client.get_model_version_by_alias("rnnpipe", "candidate")
    champion = client.get_model_version_by_alias("rnnpipe", "champion")
    assert str(candidate.version) == str(champion.version) == "1"  # the first is promoted
    assert candidate.run_id in best_ids
    assert parent.data.tags["rnnpipe.sweep.best_run_id"] == candidate.run_id
