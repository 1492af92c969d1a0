"""Headless Chromium for end-to-end checks of web UIs (the MLflow UI), driven by Playwright.

The browser is the system one (Debian: `apt-get install chromium`, /usr/bin/chromium), launched
through the `playwright` pip package's bundled driver: `playwright install`, which downloads
browsers, is never run. Each page gets a fresh profile (`--user-data-dir`) and the flags that keep
Chromium off the network: on a closed network its background services would only fail.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, sync_playwright

CHROMIUM = Path(os.environ.get("RNNPIPE_CHROMIUM", "/usr/bin/chromium"))
# Playwright adds --headless (headless=True) and --user-data-dir (the persistent context's dir).
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync")
VIEWPORT = {"width": 1920, "height": 1080}


@contextmanager
def browser_page(viewport: dict[str, int] | None = None) -> Iterator[Page]:
    """A page in a fresh headless Chromium; the browser and Playwright's driver end on exit."""
    with (tempfile.TemporaryDirectory(prefix="rnnpipe-chromium-") as profile,
          sync_playwright() as playwright):
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS),
            viewport=viewport or VIEWPORT, locale="en-US", timezone_id="UTC")
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def open_page(page: Page, url: str, wait_for_text: str, timeout: float = 30.0) -> None:
    """Load `url` and wait until `wait_for_text` is visible; on timeout, fail with what showed."""
    page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)
    try:
        page.get_by_text(wait_for_text).filter(visible=True).first.wait_for(
            timeout=timeout * 1000)
    except PlaywrightError as error:
        shown = page.inner_text("body")[:2000] if page.locator("body").count() else ""
        raise AssertionError(f"{wait_for_text!r} did not show within {timeout:g} s at "
                             f"{page.url}; the page shows:\n{shown}") from error


def page_text(url: str, wait_for_text: str, timeout: float = 30.0) -> str:
    """The rendered text of the page at `url`, once `wait_for_text` is visible on it."""
    with browser_page() as page:
        open_page(page, url, wait_for_text, timeout)
        return page.inner_text("body")
