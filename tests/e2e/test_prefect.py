"""Prefect in production: the served, scheduled deployment (`rnnpipe schedule`) against a real
Prefect server; triggered runs that complete, are tracked in MLflow and re-use finished steps;
a stage failing on bad data fails the run with the step's own error and is not retried; URL
ingestion with a checksum and transient failures; the retry condition.

Every server and process started here binds to 127.0.0.1 and is stopped (its whole process
group) when its fixture ends, whatever the outcome. (`rnnpipe run`, the flow run in this
process's terminal, is covered by tests/e2e/test_mlflow.py and test_record.py.)
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from flows.stages import retry_unless_user_error
from rnnpipe.config import IngestParams
from rnnpipe.corpus.sources import download
from rnnpipe.errors import DataError, ErrorRecord, ParamsError, StepFailed, StepUserError
from rnnpipe.steps.ingest import ingest

DEPLOYMENT = "rnnpipe-pipeline/scheduled"
CRON, TIMEZONE = "17 4 * * 1-5", "Europe/Berlin"  # not the defaults: they must come from params
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
BIN = Path(sys.executable).parent


# --- helpers -----------------------------------------------------------------------------------

@contextlib.contextmanager
def prefect_client(api: SimpleNamespace) -> Iterator[Any]:
    """A sync Prefect client for the test server (settings scoped to the block)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api.url}), \
            get_client(sync_client=True) as client:
        yield client



def wait_for(check, what: str, timeout: float, log: Path) -> Any:
    """Poll `check` until it returns something truthy; fail with `log`'s tail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if result := check():
                return result
        time.sleep(1)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    raise AssertionError(f"{what} not ready after {timeout}s:\n{tail}")


def run_deployment(served: SimpleNamespace, parameters: dict[str, Any],
                   timeout: float = 600) -> Any:
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


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory, server, port) -> Iterator[SimpleNamespace]:
    """A real Prefect server on a free 127.0.0.1 port, with its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect-home")
    number = port()
    url = f"http://127.0.0.1:{number}/api"
    with server([BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                 str(number)], f"{url}/health", home / "server.log",
                env={"PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false"}, timeout=180):
        yield SimpleNamespace(url=url, home=home)


@pytest.fixture(scope="module")
def served(prefect_api, tmp_path_factory, new_project, corpora,
           server) -> Iterator[SimpleNamespace]:
    """`rnnpipe schedule` running in a tiny project against the test server, its deployment
    registered. Character tokens: the tests here do not exercise jieba's dictionary."""
    root = tmp_path_factory.mktemp("served") / "project"
    corpora.write(root / "corpus" / "reviews.tsv", corpora.zh())
    project = new_project(root, "corpus/reviews.tsv", "char",
                          params={"schedule": {"cron": CRON, "timezone": TIMEZONE}})
    log = project.parent / "schedule.log"
    env = {"PREFECT_API_URL": prefect_api.url,
           "PREFECT_RUNNER_POLL_FREQUENCY": "2"}  # pick triggered runs up quickly
    # The API's health is the readiness check: the process only has to be started.
    with server([BIN / "rnnpipe", "schedule"], f"{prefect_api.url}/health", log, env=env,
                cwd=project):
        served = SimpleNamespace(api=prefect_api, project=project, log=log)

        def registered() -> Any:
            with prefect_client(prefect_api) as client:
                return client.read_deployment_by_name(DEPLOYMENT)

        served.deployment = wait_for(registered, "deployment", 180, log)
        yield served


@pytest.fixture
def http_corpus(tmp_path: Path, corpora) -> Iterator[SimpleNamespace]:
    """A corpus on a local HTTP server (a thread) that can answer 503 a few times first."""
    root = tmp_path / "www"
    payload = corpora.write(root / "reviews.tsv", corpora.zh()).read_bytes()
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

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_port}/reviews.tsv",
                              sha256=hashlib.sha256(payload).hexdigest(), state=state)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


# --- the served deployment ---------------------------------------------------------------------

@pytest.mark.slow
def test_served_deployment_has_the_schedule_from_params(served) -> None:
    deployment = served.deployment
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules] == [
        (CRON, TIMEZONE, True)]
    assert deployment.parameters == {"root": str(served.project.resolve()), "refresh": True}
    # Runs share the project's workspace, so they queue instead of overlapping.
    assert deployment.global_concurrency_limit.limit == 1


@pytest.mark.slow
def test_triggered_run_completes_is_tracked_and_rerun_reuses_steps(served, sh) -> None:
    overrides = {"train.fc_units": 4}
    first = run_deployment(served, {"overrides": overrides})
    assert first.state.type.value == "COMPLETED", first.state.message
    runs = mlflow_runs(served.project, f"tags.`prefect.flow_run_id` = '{first.id}'")
    assert [r.info.status for r in runs] == ["FINISHED"]
    tracked = runs[0]
    assert tracked.data.params["train.fc_units"] == "4" and "test_macro_f1" in tracked.data.metrics
    assert tracked.data.tags["prefect.flow_run_name"] == first.name
    assert tracked.data.tags["prefect.deployment"] == "scheduled"
    assert tracked.data.tags["rnnpipe.promotion"] == "champion"
    # The flow ran the DVC stages: the workspace agrees with dvc.lock, the params were written.
    assert "fc_units: 4" in (served.project / "params.yaml").read_text(encoding="utf-8")
    assert "up to date" in sh(["dvc", "status"], served.project).stdout

    model = served.project / "models" / "model.keras"
    trained_at = model.stat().st_mtime_ns
    again = run_deployment(served, {"overrides": overrides})  # nothing changed
    assert again.state.type.value == "COMPLETED", again.state.message
    assert model.stat().st_mtime_ns == trained_at  # DVC skipped train and evaluate
    assert again.total_run_time < first.total_run_time
    assert task_run_counts(served.api, again.id) == {
        "ingest": 1, "vocab": 1, "train": 1, "evaluate": 1}
    # The scheduled deployment re-reads the source (refresh): that execution is recorded too,
    # as a FINISHED run that says why it logged no model.
    reruns = mlflow_runs(served.project, f"tags.`prefect.flow_run_id` = '{again.id}'")
    assert [r.info.status for r in reruns] == ["FINISHED"]
    assert "test_macro_f1" not in reruns[0].data.metrics
    assert "evaluate was up to date" in reruns[0].data.tags["rnnpipe.note"]


@pytest.mark.slow
def test_failing_stage_fails_the_run_clearly_and_user_errors_are_not_retried(
        served, http_corpus) -> None:
    # Last of the deployment's tests: its overrides stay in the project's params.yaml.
    bad = {"ingest.source": http_corpus.url, "ingest.sha256": "f" * 64}
    run = run_deployment(served, {"overrides": bad})
    assert run.state.type.value == "FAILED"
    message = f"{http_corpus.url}: sha256 mismatch: expected {'f' * 64}, got {http_corpus.sha256}"
    assert message in run.state.message  # the step's own error, not just "exit 2"
    assert task_run_counts(served.api, run.id) == {"ingest": 1}  # bad data: no retries
    runs = mlflow_runs(served.project, f"tags.`prefect.flow_run_id` = '{run.id}'")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert message in runs[0].data.tags["error"]
    assert runs[0].data.tags["rnnpipe.failed_step"] == "ingest"


# --- resilience --------------------------------------------------------------------------------

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


def test_retry_condition_retries_transient_failures_only() -> None:
    def failed(exc: BaseException) -> Any:
        return SimpleNamespace(result=lambda raise_on_failure=True: exc)

    def retried(exc: BaseException) -> bool:
        return retry_unless_user_error(None, None, failed(exc))

    # What a step process recorded in its error file, as the task raises it.
    user = ErrorRecord("ingest", 2, "DataError", "corpus/x.tsv:3: malformed line").exception()
    environment = ErrorRecord("evaluate", 1, "OSError", "database is locked").exception()
    assert isinstance(user, StepUserError) and not retried(user)
    assert type(environment) is StepFailed and retried(environment)
    assert not retried(DataError("bad data")) and not retried(ParamsError("train.x: bad"))
    # A step killed before it could record anything (OOM, a signal): retried.
    assert retried(StepFailed("stage 'train' failed: exited with -9", "train"))
    assert retried(OSError("No space left on device"))
