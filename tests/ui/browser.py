"""A real headless browser for the dashboard: Debian's chromium (scripts/install-chromium) driven
by Playwright, which never downloads a browser of its own here. Each launch gets a new, empty
profile; networking to anything but the server under test is off."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, sync_playwright

CHROMIUM = Path(os.environ.get("N8N_GATE_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def require_chromium() -> None:
    """Skip without chromium, naming the script that installs it; under CI, fail instead."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return
    reason = f"{CHROMIUM} is missing: run scripts/install-chromium (Debian's chromium package)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def browser(viewport: dict[str, int] = DESKTOP, *, scale: float = 1) -> Iterator[BrowserContext]:
    """A fresh chromium profile (a new, empty --user-data-dir), closed afterwards."""
    with (
        tempfile.TemporaryDirectory(prefix="n8n-gate-chromium-") as profile,
        sync_playwright() as p,
    ):
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport=viewport,
            device_scale_factor=scale,
            is_mobile=viewport["width"] < 500,
            has_touch=viewport["width"] < 500,
            timezone_id="UTC",
            locale="en-US",
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()
