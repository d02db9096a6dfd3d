"""Browser fixtures: Debian's Chromium driven by Playwright (its executable path; no browser download)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS

SCREENSHOTS = ARTIFACTS / "screenshots"
# The flags the machine's network needs: no background calls to Google's hosts, no sandbox as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("JUICE_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            "Chromium not found: run `bash scripts/browser.sh` (scripts/test.sh does) "
            "or set JUICE_TEST_CHROMIUM",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def signed_in_page(browser, base_url: str, key: str):
    """A fresh browser context whose session already holds the API key (as the sign-in page leaves it)."""
    context = browser.new_context(
        viewport={"width": 1400, "height": 1000}, base_url=base_url, accept_downloads=True
    )
    context.add_init_script(f"window.sessionStorage.setItem('juice.apiKey', {key!r});")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.js_errors = errors  # type: ignore[attr-defined]  # our own attribute on Playwright's Page
    return page


def shoot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
