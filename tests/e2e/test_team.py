"""Team mode on loopback: the same pipeline against real shared servers (tools/stack.py).

One stack serves the module: PostgreSQL, an MLflow server on it with proxied artifacts and
basic-auth, a Prefect server with the work pool `rnnpipe`, a Dask scheduler, and moto as the S3
endpoint of the DVC remote. The workers are started here, each in a Linux mount namespace with a
fresh tmpfs over the module's folder (`unshare -m`, as root), where the project, its origin, the
stack's state, every client's temporary files (`TMPDIR`) and this test's files all live: a
worker sees none of them, only the installed code, the honest stand-in for another machine. The repository reaches them through `git daemon` on
127.0.0.1, the data through the S3 remote, the record through the MLflow server.

Checked: a pipeline run, a gate decision and `rnnpipe predict` against MLflow on PostgreSQL with
basic-auth; a deployment run through the work pool by an isolated worker (Completed, outputs in
S3, its MLflow run linked to the flow run, with commit, params.yaml and dvc.lock); `rnnpipe
restore` of that run giving the same model bytes; a sweep on a separately started Dask cluster
whose isolated workers get the workspace as a bundle from the MLflow server; and the MLflow
password appearing in no run's params or tags, no log, and no file git tracks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

# `team`: skipped without team mode's extra packages (tests/e2e/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.team]
if os.geteuid() != 0 or shutil.which("unshare") is None:
    pytest.skip("isolated workers need root and unshare (mount namespaces)",
                allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TIMEOUT = 600


def load_stack_module():
    spec = importlib.util.spec_from_file_location("rnnpipe_tools_stack_team",
                                                  REPO / "tools" / "stack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Team:
    """The stack, the isolated workers, the project and its origin, and their logs."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.logs = root / "logs"
        self.logs.mkdir()
        self.processes: list[subprocess.Popen] = []

    def client_env(self, **extra: str) -> dict[str, str]:
        """This machine's environment for rnnpipe, dvc and prefect commands on the stack (their
        temporary files under the module's folder, which the workers cannot see)."""
        (self.root / "tmp").mkdir(exist_ok=True)
        return {**os.environ, **self.env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                "TMPDIR": str(self.root / "tmp"), **extra}

    def run(self, cmd: list, cwd: Path, check: bool = True, timeout: float = TIMEOUT,
            **extra: str) -> subprocess.CompletedProcess:
        result = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                                env=self.client_env(**extra), timeout=timeout)
        (self.logs / f"cmd-{len(list(self.logs.iterdir()))}.log").write_text(
            f"$ {cmd}\n{result.stdout}\n{result.stderr}", encoding="utf-8")
        if check and result.returncode != 0:
            raise AssertionError(f"{cmd} exited {result.returncode}\n{result.stdout}\n"
                                 f"{result.stderr}")
        return result

    def isolated(self, name: str, command: str) -> subprocess.Popen:
        """Start `command` in a new mount namespace with an empty tmpfs over the module's folder
        (wherever the checkout and its venv are, even under /tmp, they stay visible): it cannot see
        the project, the stack's state or this test's files."""
        home = self.root / name
        script = f"mount -t tmpfs rnnpipe-isolated {self.root} && mkdir -p {home}/tmp && " \
                 f"cd {home} && exec {command}"
        env = self.client_env(PREFECT_HOME=f"{home}/prefect-home", TMPDIR=f"{home}/tmp",
                              PREFECT_WORKER_QUERY_SECONDS="2")
        with open(self.logs / f"{name}.log", "wb") as log:
            process = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                        script], env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        import signal

        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def team(port) -> Iterator[Team]:
    """The stack (no workers of its own), `git daemon` serving the origin, and two isolated Dask
    workers; everything under one fresh /tmp folder (reachable by the `postgres` user)."""
    root = Path(tempfile.mkdtemp(prefix="rnnpipe-team-"))
    os.chmod(root, 0o755)
    stack = load_stack_module().Stack(root / "stack")
    try:
        stack.up(["mlflow", "prefect-server", "dask-scheduler", "moto"], timeout=300)
        team = Team(root, stack.env())
        (root / "git").mkdir()
        team.git_port = port()
        daemon = subprocess.Popen(["git", "daemon", "--export-all", "--reuseaddr",
                                   f"--base-path={root / 'git'}", "--listen=127.0.0.1",
                                   f"--port={team.git_port}", str(root / "git")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        team.processes.append(daemon)
        for n in (1, 2):
            team.isolated(f"dask-worker-{n}", f"{BIN / 'dask'} worker "
                          f"{team.env['RNNPIPE_DASK_ADDRESS']} --nworkers 1 --nthreads 1 "
                          f"--no-dashboard --host 127.0.0.1")
        yield team
        team.stop()
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def project(team: Team, corpora, new_project) -> Path:
    """A tiny project whose corpus is `dvc add`ed, whose DVC remote is the S3 bucket, and whose
    `origin` is the git daemon; committed and pushed."""
    root = team.root / "project"
    corpora.write(root / "corpus" / "reviews.tsv", corpora.zh(n_per_class=40))
    new_project(root, "corpus/reviews.tsv", "jieba", train={"max_epochs": 1})
    shutil.copy(REPO / "prefect.yaml", root / "prefect.yaml")
    shutil.copytree(REPO / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    team.run(["git", "rm", "-q", "--cached", "corpus/reviews.tsv"], root)
    team.run([BIN / "dvc", "add", "-q", "corpus/reviews.tsv"], root)
    team.run([BIN / "dvc", "remote", "add", "-d", "shared", "s3://rnnpipe/dvc"], root)
    team.run(["git", "add", "-A"], root)
    team.run(["git", "commit", "-qm", "team project"], root)
    bare = team.root / "git" / "rnnpipe.git"
    team.run(["git", "init", "-q", "--bare", "--initial-branch=main", bare], team.root)
    team.run(["git", "push", "-q", str(bare), "HEAD:refs/heads/main"], root)
    team.run(["git", "remote", "add", "origin",
              f"git://127.0.0.1:{team.git_port}/rnnpipe.git"], root)
    team.run([BIN / "dvc", "push", "-q"], root)
    return root


def mlflow_client(team: Team):
    from mlflow.tracking import MlflowClient

    os.environ.update({k: v for k, v in team.env.items() if k.startswith("MLFLOW_")})
    return MlflowClient(team.env["MLFLOW_TRACKING_URI"])


def test_pipeline_gate_and_predict_on_mlflow_with_postgres_and_basic_auth(
        team: Team, project: Path) -> None:
    result = team.run([BIN / "rnnpipe", "run"], project)
    assert "registry        rnnpipe-reviews v1: champion" in result.stdout, result.stdout
    assert team.env["MLFLOW_TRACKING_URI"] in result.stdout  # the run's link on the server
    client = mlflow_client(team)
    experiment = client.get_experiment_by_name("rnnpipe")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`rnnpipe.entry_point` = "
                                "'prefect'")
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied, no local path
    assert {"reports/metrics.json", "dvc.lock", "params.yaml"} <= {
        f.path for f in client.list_artifacts(run.info.run_id)} | {
        f"reports/{f.path.rsplit('/', 1)[-1]}" for f in
        client.list_artifacts(run.info.run_id, "reports")}
    version = client.get_model_version_by_alias("rnnpipe-reviews", "champion")
    assert version.tags["promotion"] == "champion" and version.tags["rnnpipe.data_md5"]
    elsewhere = team.root / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    answer = team.run([BIN / "rnnpipe", "predict", "-m", "models:/rnnpipe-reviews@champion",
                       "质量很好，非常满意"], elsewhere)
    assert json.loads(answer.stdout)["label"] in ("pos", "neg")
    assert "models:/rnnpipe-reviews@champion" in answer.stderr
    refused = team.run([BIN / "rnnpipe", "predict", "-m", "models:/rnnpipe-reviews@champion",
                        "hi"], elsewhere, check=False, MLFLOW_TRACKING_PASSWORD="wrong-password")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "401" in refused.stderr or "auth" in refused.stderr.lower()


def test_gates_at_once_on_the_server_are_serialised(team: Team) -> None:
    """Two gates of one model at the same moment against the PostgreSQL-backed server: the
    registry lock lets one in at a time, so the better model ends as champion."""
    import threading

    import mlflow
    import pandas as pd

    from rnnpipe.config import params_from_dict
    from rnnpipe.tracking import registry
    from rnnpipe.tracking.runs import RunLog, create_run
    from rnnpipe.tracking.store import client, fluent

    class Answers(mlflow.pyfunc.PythonModel):
        """Fixed answers, so that the champion re-scored on the candidate's data scores what it
        claimed when it was registered."""

        def __init__(self, labels: list[str]) -> None:
            self.labels = labels

        def predict(self, context, model_input, params=None):
            return pd.DataFrame({"label": self.labels[:len(model_input)]})

    mlflow_client(team)
    store = client(params_from_dict({}))
    texts, truth = ["a", "b", "c", "d"], ["pos", "pos", "neg", "neg"]
    answers = {0.25: ["neg", "neg", "neg", "pos"], 0.5: ["pos"] * 4,
               0.75: ["pos", "pos", "neg", "pos"]}
    decisions = {}

    def gate(accuracy: float) -> None:
        run = RunLog(store, create_run(store, params_from_dict({}), "test"))
        with fluent(store), mlflow.start_run(run_id=run.run_id):
            uri = mlflow.pyfunc.log_model(name="model", python_model=Answers(answers[accuracy]),
                                          pip_requirements=[]).model_uri
        decisions[accuracy] = registry.gate(store, run, "race-team", uri, "accuracy", 0.0,
                                            {"accuracy": accuracy, "macro_f1": accuracy},
                                            ["neg", "pos"], (texts, truth), "0" * 32)

    gate(0.25)
    # Whichever gate goes first, the 0.75 model must end as champion: without the lock both
    # could read v1 as champion, both promote, and the 0.5 model could set the alias last.
    threads = [threading.Thread(target=gate, args=(a,)) for a in (0.75, 0.5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    champion = store.get_model_version_by_alias("race-team", "champion")
    assert str(champion.version) == decisions[0.75].version
    assert "race-team--gate-lock" not in {m.name for m in store.search_registered_models()}


@pytest.fixture(scope="module")
def deployed_run(team: Team, project: Path) -> str:
    """`prefect deploy --all` from the project; an isolated worker runs `nightly`; its MLflow
    run id."""
    team.run([BIN / "prefect", "deploy", "--all"], project, timeout=300)
    worker = team.isolated("prefect-worker", f"{BIN / 'prefect'} worker start --pool rnnpipe "
                           f"--type process --name isolated")
    started = team.run([BIN / "prefect", "deployment", "run", "rnnpipe-pipeline/nightly",
                        "--param", 'overrides={"train.seed": 7}'], project)
    flow_run_id = next(line.split()[-1] for line in started.stdout.splitlines()
                       if "UUID" in line)
    deadline = time.monotonic() + TIMEOUT
    while True:
        state = json.loads(urllib.request.urlopen(
            f"{team.env['PREFECT_API_URL']}/flow_runs/{flow_run_id}", timeout=10).read())
        if state["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        assert time.monotonic() < deadline and worker.poll() is None, \
            (team.logs / "prefect-worker.log").read_text()
        time.sleep(3)
    assert state["state_type"] == "COMPLETED", (team.logs / "prefect-worker.log").read_text()
    client = mlflow_client(team)
    experiment = client.get_experiment_by_name("rnnpipe")
    (run,) = client.search_runs([experiment.experiment_id],
                                f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    return run.info.run_id


def test_a_worker_that_cannot_see_the_project_runs_the_deployment(
        team: Team, project: Path, deployed_run: str) -> None:
    client = mlflow_client(team)
    run = client.get_run(deployed_run)
    commit = team.run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["git.commit"] == commit
    assert tags["mlflow.source.git.repoURL"] == f"git://127.0.0.1:{team.git_port}/rnnpipe.git"
    assert tags["prefect.deployment"] and int(tags["rnnpipe.dvc_pushed"]) > 0
    assert {"dvc.lock", "params.yaml"} <= {f.path for f in client.list_artifacts(deployed_run)}
    import boto3

    s3 = boto3.client("s3", endpoint_url=team.env["AWS_ENDPOINT_URL_S3"],
                      aws_access_key_id=team.env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=team.env["AWS_SECRET_ACCESS_KEY"],
                      region_name=team.env["AWS_DEFAULT_REGION"])
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="rnnpipe", Prefix="dvc/")["Contents"]]
    model_md5 = tags["dvc.md5.models/model.keras"]
    assert any(k.endswith(model_md5[2:]) for k in keys), keys  # the model is in the remote


def test_restore_rebuilds_the_deployed_run_with_the_same_model(
        team: Team, deployed_run: str) -> None:
    target = team.root / "restored"
    result = team.run([BIN / "rnnpipe", "restore", deployed_run, target], team.root)
    assert "DVC hashes match" in result.stdout
    tags = mlflow_client(team).get_run(deployed_run).data.tags
    from rnnpipe.tracking.runs import file_md5

    assert file_md5(target / "models" / "model.keras") == tags["dvc.md5.models/model.keras"]
    assert yaml.safe_load((target / "params.yaml").read_text())["train"]["seed"] == 7


def test_sweep_on_an_external_dask_cluster_whose_workers_cannot_see_the_project(
        team: Team, project: Path) -> None:
    dead = [p.args for p in team.processes if p.poll() is not None]
    assert not dead, f"workers exited: {dead}"
    result = team.run([BIN / "rnnpipe", "sweep", "--address", team.env["RNNPIPE_DASK_ADDRESS"],
                       "-S", "sweep.grid={train.lstm_units: [[4], [8]]}", "--apply-best"],
                      project, timeout=900)
    output = result.stdout + result.stderr  # the flow's prints go through Prefect's logger
    assert "trials ranked by val_macro_f1" in output, output
    assert output.count("FINISHED") >= 2 and "applied the best trial" in output
    client = mlflow_client(team)
    experiment = client.get_experiment_by_name("rnnpipe")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`rnnpipe.sweep` = 'parent'")
    trials = client.search_runs([experiment.experiment_id],
                                f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(trials) == 2 and all(t.info.status == "FINISHED" for t in trials)
    assert "sweep/workspace.tar.gz" in {f.path for f in client.list_artifacts(
        parent.info.run_id, "sweep")}
    status = team.run([BIN / "dvc", "status"], project)
    assert "up to date" in status.stdout, status.stdout  # applied from the S3 remote


def test_the_password_is_in_no_run_log_or_tracked_file(team: Team, project: Path) -> None:
    password = team.env["MLFLOW_TRACKING_PASSWORD"]
    client = mlflow_client(team)
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            values = [*run.data.params.values(), *run.data.tags.values()]
            assert not any(password in v for v in values), run.info.run_id
    for log in team.root.rglob("*.log"):
        assert password not in log.read_text(errors="replace"), log
    tracked = team.run(["git", "ls-files"], project).stdout.split()
    for name in tracked:
        path = project / name
        if path.is_file():
            assert password not in path.read_text(errors="replace"), name
    assert password not in team.run(["git", "log", "-p"], project).stdout
