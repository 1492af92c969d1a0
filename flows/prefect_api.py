"""One temporary Prefect API for `rnnpipe run` and `rnnpipe sweep` when none is configured.

With no `PREFECT_API_URL`, Prefect starts a temporary API server in each process that runs a
flow. rnnpipe starts that same server itself, earlier (`TemporaryPrefectApi.unless_configured`),
for two reasons: it starts while this process imports Prefect instead of after (about 4 s less on
2 cores), and a sweep's Dask workers then share it (its URL travels with each task's settings)
instead of each starting its own.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


class TemporaryPrefectApi:
    """Prefect's temporary API server, started before this process imports Prefect.

    With no API configured, the flow starts this same server itself (Prefect's
    `SubprocessASGIServer`: uvicorn serving `prefect.server.api.server:create_app` on a local
    port, UI off, ephemeral services), but only after this process has imported Prefect and the
    server's modules, and then waits for it to start: on 2 cores about 3 s of imports plus 4 s
    of start-up, one after the other. Started first, the server starts while Prefect is
    imported, and this process never imports the server's modules. Used only when nothing could
    point Prefect at another API (`prefect_configured`); otherwise Prefect does what it does.
    """

    def __init__(self) -> None:
        import atexit
        import socket
        import subprocess

        # The socket is bound here and handed to uvicorn (`--fd`): the port is known before
        # Prefect reads its settings, and no other process can take it in between.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.api_url = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--fd", str(sock.fileno()), "--factory",
                 "prefect.server.api.server:create_app", "--log-level", "error",
                 "--lifespan", "on"],
                env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                     "PREFECT__SERVER_FINAL": "1"},
                pass_fds=[sock.fileno()])
        finally:
            sock.close()
        os.environ["PREFECT_API_URL"] = self.api_url
        # No "View at <url>" link per run: this server has no UI, and is gone when the run is.
        os.environ.setdefault("PREFECT_UI_URL", "")
        # At exit, after Prefect's own exit hooks have sent their last logs and events, as
        # Prefect stops the server it starts.
        atexit.register(self.stop)

    @classmethod
    @contextlib.contextmanager
    def unless_configured(cls) -> Iterator[TemporaryPrefectApi | None]:
        """Run a block with the server started and ready (None when Prefect may be configured
        to use another API). It stops when this process exits, after Prefect's own exit hooks
        have sent their last logs, as Prefect's own temporary server does."""
        if prefect_configured():
            yield None
            return
        server = cls()
        # The server starts on the other core meanwhile: import what the flows need.
        import dvc.repo  # noqa: F401
        import prefect  # noqa: F401

        server.wait_until_ready()
        yield server

    def wait_until_ready(self) -> None:
        """Wait until the API answers (`PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`)."""
        import time
        import urllib.error
        import urllib.request

        timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 120))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        code = self.process.poll()
        self.stop()
        raise RuntimeError(f"the temporary Prefect API server did not start "
                           f"({'exit status ' + str(code) if code is not None else 'timed out'})"
                           f"; `make server` runs one to point PREFECT_API_URL at")

    def stop(self) -> None:
        """Stop the server (what Prefect's own temporary server does at exit)."""
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def prefect_configured(cwd: Path | None = None) -> bool:
    """Whether anything could make Prefect use another API than its temporary server, or
    settings this process cannot see before importing Prefect: then `rnnpipe run` leaves the
    server to Prefect. Cautious: any Prefect settings file counts, whatever it sets.

    Prefect reads settings from the environment, the active profile in `profiles.toml`, and
    `prefect.toml`, `pyproject.toml` (`[tool.prefect]`) and `.env` in the working directory.
    """
    if any(key in os.environ for key in ("PREFECT_API_URL", "PREFECT_PROFILE",
                                         "PREFECT_PROFILES_PATH",
                                         "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE",
                                         "PREFECT_SERVER_EPHEMERAL_ENABLED")):
        return True
    cwd = cwd or Path.cwd()
    if (cwd / "prefect.toml").exists():
        return True
    for name, marker in ((".env", "PREFECT_"), ("pyproject.toml", "tool.prefect")):
        try:
            if marker in (cwd / name).read_text(encoding="utf-8", errors="replace"):
                return True
        except OSError:
            pass
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    try:
        text = (home / "profiles.toml").read_text(encoding="utf-8")
    except OSError:
        return False  # no profiles: Prefect's defaults, the temporary server
    import tomllib

    try:
        profiles = tomllib.loads(text)
        active = profiles.get("profiles", {}).get(profiles.get("active", "ephemeral"), {})
    except (tomllib.TOMLDecodeError, AttributeError):
        return True
    return any(key in active for key in ("PREFECT_API_URL", "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE",
                                         "PREFECT_SERVER_EPHEMERAL_ENABLED"))

