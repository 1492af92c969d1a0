"""Serve the scheduled deployment `rnnpipe-pipeline/scheduled` from this machine (`rnnpipe serve`).

The schedule comes from `params.yaml` (`schedule.cron`, `schedule.timezone`); the deployment is
registered with whatever Prefect API `PREFECT_API_URL` points to (`make server` starts one on
127.0.0.1:4200) and its runs execute here, in subprocesses, in this project. For a work pool and
workers instead of a serving process, see `prefect.yaml`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rnnpipe.config import PARAMS_FILE, ScheduleParams, load_params
from rnnpipe.errors import ParamsError

DEPLOYMENT_NAME = "scheduled"


def schedule(params: ScheduleParams) -> Any:
    """The Prefect cron schedule for `params`, or `ParamsError` naming the bad key."""
    from prefect.schedules import Cron

    try:
        ZoneInfo(params.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ParamsError(f"schedule.timezone: unknown time zone {params.timezone!r} "
                          f"(use an IANA name such as UTC or Europe/Berlin)") from None
    try:
        return Cron(params.cron, timezone=params.timezone)
    except ValueError as exc:
        raise ParamsError(f"schedule.cron: not a valid cron expression {params.cron!r} "
                          f"({exc})") from None


def deployment_parameters(project: Path) -> dict[str, Any]:
    """What each scheduled run gets: this project, and a fresh read of `ingest.source` (a nightly
    retrain must see new data behind an unchanged path or URL; DVC then skips the rest if the
    data did not change)."""
    return {"root": str(project), "refresh": True}


def serve_scheduled(root: str | Path = ".") -> None:
    """Register `rnnpipe-pipeline/scheduled` with the cron in `params.yaml` and run its flow runs
    (scheduled or triggered) until interrupted. At most one runs at a time: runs share the
    project's workspace, so a second one waits for the first."""
    from prefect.deployments.runner import EntrypointType
    from prefect.settings import PREFECT_API_URL

    from flows.pipeline import pipeline

    project = Path(root).resolve()
    params = load_params(project / PARAMS_FILE)
    cron = schedule(params.schedule)  # a bad cron or time zone fails before anything starts
    if not PREFECT_API_URL.value():
        print("rnnpipe serve: PREFECT_API_URL is not set, so the deployment lives in a temporary "
              "API that stops with this process; for the UI and lasting schedules run `make "
              "server` and export PREFECT_API_URL=http://127.0.0.1:4200/api", file=sys.stderr)
    pipeline.serve(
        name=DEPLOYMENT_NAME,
        schedules=[cron],
        parameters=deployment_parameters(project),
        global_limit=1,
        description=f"rnnpipe pipeline in {project}, on the cron in its params.yaml "
                    f"({params.schedule.cron}, {params.schedule.timezone})",
        tags=["rnnpipe"],
        # The flow is imported as `flows.pipeline` (an installed package), so the run processes
        # find it whichever directory the project is in.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
