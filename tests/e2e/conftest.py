"""Fixtures for end-to-end tests in a browser: headless Chromium (servers: tests/conftest.py);
and the skip of team-mode tests (marked `team`) where its extra packages are not installed.

The browser is the system one (Debian: `apt-get install chromium`, /usr/bin/chromium), driven
through the `playwright` pip package's bundled driver: `playwright install`, which downloads
browsers, is never run. Each page gets a fresh profile and the flags that keep Chromium off the
network: on a closed network its background services would only fail.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("RNNPIPE_CHROMIUM", "/usr/bin/chromium"))
# Playwright adds --headless (headless=True) and --user-data-dir (the persistent context's dir).
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync")
VIEWPORT = {"width": 1920, "height": 1080}
# What the team stack needs beyond the base install (pyproject's `team` extra).
TEAM_PACKAGES = (("psycopg", "psycopg[binary]"), ("flask_wtf", "mlflow[auth]"),
                 ("moto", "moto[server]"), ("dvc_s3", "dvc-s3"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a `team` test, before its fixtures start anything, without team mode's packages."""
    if item.get_closest_marker("team"):
        missing = [package for module, package in TEAM_PACKAGES
                   if importlib.util.find_spec(module) is None]
        if missing:
            pytest.skip(f"team mode needs {missing[0]} (pip install -e '.[team]')")


@contextmanager
def _browser_page(viewport: dict[str, int] | None = None):
    from playwright.sync_api import sync_playwright

    with (tempfile.TemporaryDirectory(prefix="rnnpipe-chromium-") as profile,
          sync_playwright() as playwright):
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS),
            viewport=viewport or VIEWPORT, locale="en-US", timezone_id="UTC")
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


@pytest.fixture
def browser_page():
    """A page in a fresh headless Chromium (skips when Chromium is not installed)."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with _browser_page() as page:
        yield page
