"""End-to-end: the local team stack (tools/stack.py) comes up, each server works through its
real client, and `down` leaves nothing running.

One stack serves the module (starting it costs ~30-40 s on 2 cores): the CLI starts its S3 part
first (`up --only s3`), then the API starts the rest, which must keep the running S3 server.
The state folder is a fresh one under /tmp, which the `postgres` user can reach when the tests
run as root (pytest's own tmp dirs are 0700).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# `team`: skipped without the servers' extra packages (tests/e2e/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.team]

REPO = Path(__file__).resolve().parents[2]
STACK_PY = REPO / "tools" / "stack.py"
BIN = Path(sys.executable).parent

_spec = importlib.util.spec_from_file_location("rnnpipe_tools_stack", STACK_PY)
assert _spec is not None and _spec.loader is not None
stack_mod = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = stack_mod
_spec.loader.exec_module(stack_mod)
Stack = stack_mod.Stack

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def cli(state: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, str(STACK_PY), "--dir", str(state), *args],
                          capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def http_status(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        import base64

        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with NO_PROXY.open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def client_env(stack: Any, **extra: str) -> dict[str, str]:
    """This process's environment with the stack's client variables (and no stale ones)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_TRACKING", "PREFECT_API", "AWS_"))}
    env.update(stack.env())
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def state() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rnnpipe-stack-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(state: Path) -> Iterator[Any]:
    first = cli(state, "up", "--only", "s3")
    assert "export AWS_ENDPOINT_URL_S3=http://127.0.0.1:" in first.stdout
    moto_pid = json.loads((state / "stack.json").read_text())["services"]["moto"]["pid"]
    the_stack = Stack(state)
    try:
        started = time.monotonic()
        info = the_stack.up()
        the_stack.up_seconds = time.monotonic() - started
        assert info["services"]["moto"]["pid"] == moto_pid, "up restarted a running server"
        assert info["services"]["moto"]["reused"] is True
        yield the_stack
    finally:
        cli(state, "down")
        # Nothing the stack started may survive it: no process carries its marker.
        assert stack_mod._marked(str(state)) == []
        assert not (state / "postgres" / "data" / "postmaster.pid").exists()


def test_resolve_adds_dependencies_and_groups() -> None:
    resolve = stack_mod.resolve
    assert resolve(["mlflow"]) == ["postgres", "mlflow"]
    assert resolve(["prefect-worker"]) == ["prefect-server", "prefect-worker"]
    assert resolve(["dask", "s3"]) == ["dask-scheduler", "dask-workers", "moto"]
    assert resolve(None) == list(stack_mod.DEPENDS)
    with pytest.raises(ValueError, match="unknown service 'redis'"):
        resolve(["redis"])


def test_up_records_ports_urls_credentials(stack: Any, state: Path) -> None:
    info = json.loads((state / "stack.json").read_text())
    services = info["services"]
    assert set(services) == set(stack_mod.DEPENDS)
    assert all(record["running"] for record in services.values())
    ports = [record[key] for record in services.values()
             for key in ("port", "dashboard_port") if key in record]
    assert len(ports) == len(set(ports)) == 6
    for unit, record in services.items():
        assert Path(record["log"]) == state / "logs" / f"{unit}.log"
        assert Path(record["log"]).stat().st_size > 0
    # Every server listens on loopback only.
    for port in ports:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    # Credentials are in files only their owner can read.
    for name in ("stack.json", "env.sh", "secrets.json", "mlflow/basic_auth.ini"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    env_sh = (state / "env.sh").read_text()
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "PREFECT_API_URL", "RNNPIPE_DASK_ADDRESS", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3"):
        assert f"export {key}=" in env_sh
    print(f"\nstack up in {stack.up_seconds:.1f} s: " + ", ".join(
        f"{unit} {record.get('start_seconds', 0):.1f} s" for unit, record in services.items()))


def test_up_again_is_idempotent_and_status_is_healthy(stack: Any, state: Path) -> None:
    before = {unit: r["pid"] for unit, r in stack.info()["services"].items()}
    again = cli(state, "up")
    assert again.stdout.count("already running") == len(stack_mod.DEPENDS)
    after = json.loads((state / "stack.json").read_text())["services"]
    assert {unit: r["pid"] for unit, r in after.items()} == before
    status = cli(state, "status")
    assert status.stdout.count("healthy") == len(stack_mod.DEPENDS)
    assert "NOT" not in status.stdout and "stopped" not in status.stdout


def test_mlflow_needs_credentials_and_tracks_to_postgres(stack: Any, state: Path,
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    env = stack.env()
    url = env["MLFLOW_TRACKING_URI"]
    user, password = env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_status(search) == 401
    assert http_status(search, (user, password + "x")) == 401
    assert http_status(search, (user, password)) == 200

    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    experiment_id = client.create_experiment("stack-e2e")
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "units", 8)
    client.log_metric(run.info.run_id, "accuracy", 0.75)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.txt").write_text("lstm")
    client.log_artifacts(run.info.run_id, str(model_dir), artifact_path="model")
    client.set_terminated(run.info.run_id)

    client.create_registered_model("stack-e2e-model")
    version = client.create_model_version("stack-e2e-model",
                                          source=f"{run.info.artifact_uri}/model",
                                          run_id=run.info.run_id)
    client.set_registered_model_alias("stack-e2e-model", "champion", version.version)
    assert client.get_model_version_by_alias("stack-e2e-model", "champion").version == \
        version.version

    # Artifacts go through the server (proxied) into the state folder ...
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    fetched = client.download_artifacts(run.info.run_id, "model/weights.txt", str(tmp_path))
    assert Path(fetched).read_text() == "lstm"
    assert list((state / "mlflow-artifacts").rglob("weights.txt"))
    # ... and runs into PostgreSQL, as the `mlflow` role.
    creds = stack.info()["credentials"]["postgres"]
    pg = stack.info()["services"]["postgres"]
    rows = subprocess.run(
        [str(Path(pg["bin"]) / "psql"), "-X", "-At", "-h", "127.0.0.1", "-p", str(pg["port"]),
         "-U", creds["user"], "-d", "mlflow", "-c",
         "SELECT count(*) FROM runs WHERE experiment_id = " + experiment_id],
        capture_output=True, text=True, check=True,
        env={**os.environ, "PGPASSWORD": creds["password"]})
    assert rows.stdout.strip() == "1"

    # STACK_MLFLOW_PASSWORD changes the admin's password on the running server.
    monkeypatch.setenv("STACK_MLFLOW_PASSWORD", "rotated-password-123")
    Stack(state).up(["mlflow"])
    assert http_status(search, (user, password)) == 401
    assert http_status(search, (user, "rotated-password-123")) == 200
    assert stack.env()["MLFLOW_TRACKING_PASSWORD"] == "rotated-password-123"


def test_dvc_pushes_to_and_pulls_from_the_s3_endpoint(stack: Any, tmp_path: Path) -> None:
    env = stack.env()
    endpoint = env["AWS_ENDPOINT_URL_S3"]
    repo = tmp_path / "repo"
    repo.mkdir()
    # No AWS_* variables: DVC must find endpoint and credentials in its own config.
    dvc_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}

    def run(*argv: str) -> str:
        done = subprocess.run(argv, cwd=repo, env=dvc_env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
        return done.stdout

    dvc = str(BIN / "dvc")
    run("git", "init", "-q")
    run(dvc, "init", "-q")
    run(dvc, "remote", "add", "-d", "shared", "s3://rnnpipe/dvc")
    run(dvc, "remote", "modify", "shared", "endpointurl", endpoint)
    run(dvc, "remote", "modify", "--local", "shared", "access_key_id", env["AWS_ACCESS_KEY_ID"])
    run(dvc, "remote", "modify", "--local", "shared", "secret_access_key",
        env["AWS_SECRET_ACCESS_KEY"])
    assert env["AWS_SECRET_ACCESS_KEY"] not in (repo / ".dvc" / "config").read_text()
    assert env["AWS_SECRET_ACCESS_KEY"] in (repo / ".dvc" / "config.local").read_text()
    assert "config.local" in (repo / ".dvc" / ".gitignore").read_text()

    payload = os.urandom(50_000)
    (repo / "data.bin").write_bytes(payload)
    run(dvc, "add", "-q", "data.bin")
    run(dvc, "push")
    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / "data.bin").unlink()
    run(dvc, "pull")
    assert (repo / "data.bin").read_bytes() == payload

    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=env["AWS_DEFAULT_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="rnnpipe", Prefix="dvc/")["Contents"]]
    assert any(key.startswith("dvc/files/md5/") for key in keys)


def test_dask_computes_on_the_external_cluster(stack: Any, state: Path) -> None:
    from distributed import Client

    address = stack.env()["RNNPIPE_DASK_ADDRESS"]
    assert address.startswith("tcp://127.0.0.1:")
    with Client(address, timeout=30) as client:
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 2
        assert all(info["nthreads"] == 1 for info in workers.values())
        squares = client.map(pow, range(20), [2] * 20)
        assert client.submit(sum, squares).result(timeout=30) == sum(i * i for i in range(20))
        pids = client.run(os.getpid)
    # The work ran in the stack's worker processes, not in this one.
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    assert set(stack_mod._marked(str(state))) >= set(pids.values())


FLOW = '''
import os

from prefect import flow


@flow(log_prints=True)
def hello(name: str = "world") -> str:
    print(f"hello {name} from pid {os.getpid()}")
    return f"hello {name}"
'''

DEPLOY = '''
import sys

from prefect import flow
from prefect.deployments import run_deployment

source, = sys.argv[1:]
remote = flow.from_source(source=source, entrypoint="hello_flow.py:hello")
remote.deploy(name="e2e", work_pool_name="rnnpipe", print_next_steps=False)
run = run_deployment("hello/e2e", parameters={"name": "stack"}, timeout=120)
print("STATE", run.state.type.value, run.id)
'''


def test_prefect_worker_runs_a_deployed_flow(stack: Any, state: Path, tmp_path: Path) -> None:
    source = tmp_path / "flows"
    source.mkdir()
    (source / "hello_flow.py").write_text(textwrap.dedent(FLOW))
    done = subprocess.run([sys.executable, "-c", DEPLOY, str(source)], env=client_env(stack),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("STATE"))
    _, state_type, run_id = line.split()
    assert state_type == "COMPLETED", done.stdout + done.stderr
    # It was the stack's worker that ran it.
    assert run_id in (state / "logs" / "prefect-worker.log").read_text()


def test_a_service_that_does_not_come_up_names_itself_and_its_log() -> None:
    path = Path(tempfile.mkdtemp(prefix="rnnpipe-stack-fail-"))
    try:
        broken = Stack(path)
        with pytest.raises(stack_mod.StackError) as err:
            broken.up(["s3"], timeout=0.01)
        message = str(err.value)
        assert message.startswith("moto: not healthy in time; see ")
        assert str(path / "logs" / "moto.log") in message and "\n" not in message
        broken.down()
        assert stack_mod._marked(str(path)) == []
        broken.down(purge=True)  # idempotent, and deletes the folder it made
        assert not path.exists()
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_down_purge_deletes_only_a_stack_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("not a stack")
    Stack(tmp_path).down(purge=True)
    assert (tmp_path / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
