"""Debian's headless Chromium, driven over WebDriver by Debian's chromedriver (both
installed by test.sh; nothing downloads a browser): the dashboard's browser tests.

Every run gets a fresh profile and download directory; the flags keep Chromium off the
network (no background fetches, updates, sync or QUIC) and inside the test's sandbox.
The page's console (CSP violations included) is read through ``goog:loggingPrefs``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service

from tests.conftest import machine_lacks

T = TypeVar("T")

CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,900",
)  # fmt: skip


def _binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        machine_lacks("Debian's chromium and chromium-driver are needed (test.sh installs them)")
    return chromium, driver


@contextlib.contextmanager
def chromium(profile: Path, downloads: Path) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a fresh ``--user-data-dir``; quit at the end."""
    binary, driver = _binaries()
    profile.mkdir(parents=True, exist_ok=True)
    downloads.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.set_capability("unhandledPromptBehavior", "ignore")
    # Selenium Manager must not look for drivers or browsers on the network.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["SE_OFFLINE"] = "true"
    service = Service(executable_path=driver, env=env, log_output=str(profile / "driver.log"))
    browser = webdriver.Chrome(service=service, options=options)
    try:
        browser.set_page_load_timeout(60)
        browser.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        yield browser
    finally:
        browser.quit()


def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float = 30) -> T:
    """``probe()``'s first truthy answer within ``timeout`` s; an element gone stale while
    probed is probed again. Fails naming ``what`` and the last error."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except (StaleElementReferenceException, WebDriverException) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")
        time.sleep(0.1)


def console_errors(browser: webdriver.Chrome) -> list[str]:
    """The page's console errors since the last call (CSP violations are among them)."""
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
