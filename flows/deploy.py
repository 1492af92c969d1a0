"""Serve the scheduled deployment `rnnpipe-pipeline/scheduled` from this machine
(`rnnpipe schedule`; `rnnpipe serve` is its old name).

The schedule comes from `params.yaml` (`schedule.cron`, `schedule.timezone`, validated with the
rest of the params); the deployment is registered with whatever Prefect API `PREFECT_API_URL`
points to (`make server` starts one on 127.0.0.1:4200) and its runs execute here, in
subprocesses, in this project. For a work pool and workers instead, see `prefect.yaml`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rnnpipe.config import load_params
from rnnpipe.paths import PARAMS_FILE

DEPLOYMENT_NAME = "scheduled"


def deployment_parameters(project: Path, overrides: dict[str, Any] | None = None) -> dict:
    """What each scheduled run gets: this project, a fresh read of `ingest.source` (a nightly
    retrain must see new data behind an unchanged path or URL; DVC then skips the rest if the
    data did not change), and `schedule -S` overrides."""
    return {"root": str(project), "refresh": True, **({"overrides": overrides}
                                                     if overrides else {})}


def serve_scheduled(root: str | Path = ".", overrides: dict[str, Any] | None = None) -> None:
    """Register `rnnpipe-pipeline/scheduled` with the cron in `params.yaml` and run its flow runs
    (scheduled or triggered) until interrupted. At most one runs at a time: runs share the
    project's workspace, so a second one waits for the first."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron
    from prefect.settings import PREFECT_API_URL

    from flows.pipeline import pipeline

    project = Path(root).resolve()
    params = load_params(project / PARAMS_FILE, overrides)
    if not PREFECT_API_URL.value():
        print("rnnpipe schedule: PREFECT_API_URL is not set, so the deployment lives in a "
              "temporary API that stops with this process; for the UI and lasting schedules run "
              "`make server` and export PREFECT_API_URL=http://127.0.0.1:4200/api",
              file=sys.stderr)
    pipeline.serve(
        name=DEPLOYMENT_NAME,
        schedules=[Cron(params.schedule.cron, timezone=params.schedule.timezone)],
        parameters=deployment_parameters(project, overrides),
        global_limit=1,
        description=f"rnnpipe pipeline in {project}, on the cron in its params.yaml "
                    f"({params.schedule.cron}, {params.schedule.timezone})",
        tags=["rnnpipe"],
        # The flow is imported as `flows.pipeline` (an installed package), so the run processes
        # find it whichever directory the project is in.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
