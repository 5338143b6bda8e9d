"""The web dashboard in a real browser (issue 15): Debian's headless Chromium driven over
WebDriver (``browser.py``) against the session's real ``hutch serve``, with a sandbox the
official SDK created. What a person does: a wrong key is refused; sign in; the sandbox
appears in the live list with hostile metadata shown as text; its page draws the metrics
chart; the terminal runs a command; a file uploaded from the browser is in the sandbox and
downloads back the same; kill makes it go; sign out. No console error (a CSP violation
is one) on any page. Screenshots of each page, the page weight and the time to
interactive are written to ``SCREENSHOTS``."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

from tests.imagebuild import BUSYBOX_CONFIG, busybox_layers, write_docker_archive

from .browser import chromium, console_errors, wait_for
from .serveproc import SLOT, Serve

pytestmark = pytest.mark.root

#: Where the run leaves its screenshots and numbers (outside the checkout).
SCREENSHOTS = (
    Path(os.environ.get("HUTCH_TEST_SCREENSHOTS") or f"/var/tmp/hutch-test-screenshots/slot{SLOT}")
    / "dashboard"
)
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chrome]:
    base = tmp_path_factory.mktemp("chromium")
    with chromium(base / "profile", base / "downloads") as b:
        b.downloads = base / "downloads"  # type: ignore[attr-defined]
        yield b


def _shot(browser: Chrome, name: str, at: str | None = None) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    if at is not None:
        browser.execute_script("arguments[0].scrollIntoView()", _one(browser, at))
    browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def _css(browser: Chrome | WebElement, selector: str) -> list[WebElement]:
    return browser.find_elements(By.CSS_SELECTOR, selector)


def _one(browser: Chrome, selector: str, what: str | None = None) -> WebElement:
    return wait_for(what or selector, lambda: (_css(browser, selector) or [None])[0])


def _errors(browser: Chrome) -> list[str]:
    # Signed out, GET /dashboard/session answers 401: that is how the page learns it.
    return [e for e in console_errors(browser) if "/dashboard/session" not in e]


def _no_alert(browser: Chrome) -> None:
    try:
        text = browser.switch_to.alert.text
    except NoAlertPresentException:
        return
    raise AssertionError(f"the page opened an alert: {text!r}")


def _sign_in(browser: Chrome, key: str, *, keyboard: bool = False) -> None:
    field = _one(browser, "#api-key")
    field.clear()
    if keyboard:  # the label's field takes focus, Enter submits
        field.send_keys(key + Keys.ENTER)
        return
    field.send_keys(key)
    _one(browser, "form button[type=submit]").click()


def _fresh(browser: Chrome, url: str) -> None:
    """``url`` in a signed-out browser (the last page gone, its cookie and console too)."""
    browser.get("about:blank")
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})
    console_errors(browser)
    browser.get(url)


def _page_numbers(browser: Chrome) -> dict[str, float]:
    """The page's weight: bytes over the wire for the document and the app's files
    (API calls left out), and how many files."""
    return browser.execute_script("""
        const nav = performance.getEntriesByType('navigation')[0];
        const res = performance.getEntriesByType('resource')
            .filter(r => ['/assets/', '/favicon'].some(p => r.name.includes('/dashboard' + p)));
        const sum = (k) => res.reduce((n, r) => n + r[k], 0);
        return {transferBytes: nav.transferSize + sum('transferSize'),
                decodedBytes: nav.decodedBodySize + sum('decodedBodySize'),
                files: res.length + 1};
    """)


def test_dashboard_in_a_browser(serve: Serve, browser: Chrome, tmp_path: Path) -> None:
    key = os.environ["E2B_API_KEY"]
    sbx = Sandbox.create("busybox", metadata={"owner": "dash", "evil": HOSTILE}, timeout=300)
    try:
        numbers: dict[str, object] = {}
        started = time.monotonic()
        browser.get(f"{serve.api_url}/dashboard")
        _one(browser, "#api-key", "the sign-in form")
        numbers["signInUsableS"] = round(time.monotonic() - started, 3)
        numbers.update(_page_numbers(browser))
        browser.execute_script("document.activeElement.blur()")

        # A wrong key is refused, with the reason, and the form stays.
        _sign_in(browser, "e2b_" + "0" * 40)
        alert = _one(browser, "#signin-error", "the sign-in error")
        assert alert.text and _css(browser, "#api-key")
        _shot(browser, "01-signin-refused")

        # Signed in: the SDK's sandbox is in the live list; hostile metadata is text.
        started = time.monotonic()
        _sign_in(browser, key, keyboard=True)
        row = _one(browser, f"tr[data-sandbox-id='{sbx.sandbox_id}']", "the sandbox's row")
        numbers["listShownAfterSignInS"] = round(time.monotonic() - started, 3)
        cell = row.find_element(By.CSS_SELECTOR, ".metadata")
        assert f"evil={HOSTILE}" in cell.text and "owner=dash" in cell.text
        assert not _css(browser, "table img"), "metadata was rendered as markup"
        _no_alert(browser)
        _shot(browser, "02-sandboxes")
        browser.set_window_size(390, 844)  # a phone: rows become labelled cards
        _shot(browser, "02-sandboxes-phone")
        browser.set_window_size(1280, 900)

        # Filters by metadata, as the API filters.
        meta = _one(browser, "#f-meta")
        meta.send_keys("owner=nobody")
        meta.submit()
        wait_for("the filter to hide the row", lambda: not _css(browser, "tr[data-sandbox-id]"))
        meta.clear()
        meta.send_keys("owner=dash")
        meta.submit()
        row = _one(browser, f"tr[data-sandbox-id='{sbx.sandbox_id}']", "the filtered row")

        # Its page: the metrics chart draws (two samples or more), and nothing is markup.
        row.find_element(By.CSS_SELECTOR, "a").click()
        wait_for(
            "the CPU chart to plot two samples",
            lambda: (
                int(_one(browser, "[data-testid=chart-cpu]").get_attribute("data-points") or 0) >= 2
            ),
            timeout=60,
        )
        assert _css(browser, "[data-testid=chart-cpu] canvas")
        assert HOSTILE in _one(browser, "[data-testid=sandbox-metadata]").text
        _no_alert(browser)
        _shot(browser, "03-sandbox", at="#metrics")

        # Edit metadata and set the timeout from the page; the SDK sees both.
        _one(browser, "#metadata-edit button[aria-label='Remove evil']").click()
        _one(browser, "#metadata-edit button[type=button]:not([aria-label])").click()  # Add key
        _one(browser, "input[aria-label='Key 2']").send_keys("stage")
        _one(browser, "input[aria-label='Value 2']").send_keys("tested")
        _one(browser, "#metadata-edit button[type=submit]").click()
        wait_for("the saved metadata", lambda: sbx.get_info().metadata == {
            "owner": "dash", "stage": "tested"
        })  # fmt: skip
        before = sbx.get_info().end_at
        timeout = _one(browser, "#timeout-s")
        timeout.clear()
        timeout.send_keys("900")
        timeout.submit()
        wait_for("the new timeout", lambda: sbx.get_info().end_at > before)

        # The terminal runs a command: the shell's output, not the echo of what was typed.
        _one(browser, "#terminal button").click()
        # (xterm.js draws only while on screen; the page scrolls it into view when opened.)
        wait_for(
            "the terminal to connect",
            lambda: "connected" in _one(browser, "[data-testid=terminal-state]").text,
            timeout=60,
        )
        # As a person would: type once the shell shows its prompt (input that reaches the
        # PTY before the shell set its line editor up may be discarded by it).
        try:
            wait_for(
                "the shell's prompt",
                lambda: re.search(r"[$#]\s*$", _one(browser, ".xterm-rows").text, re.M),
                timeout=60,
            )
            _one(browser, ".xterm-helper-textarea").send_keys("echo dash-$((6*7))\n")
            wait_for(
                "the command's output in the terminal",
                lambda: "dash-42" in _one(browser, ".xterm-rows").text.replace("$((6*7))", ""),
                timeout=60,
            )
        except AssertionError as exc:
            _shot(browser, "04-terminal-failed", at="#terminal")
            rows = _one(browser, ".xterm-rows").text
            state = _one(browser, "[data-testid=terminal-state]").text
            raise AssertionError(f"{exc}; {state}; the terminal shows: {rows!r}") from None
        _shot(browser, "04-terminal", at="#terminal")
        numbers["sandboxPageWithTerminal"] = _page_numbers(browser)
        assert _errors(browser) == []  # xterm.js drew without inline styles (CSP)

        # Upload from the browser: the file is in the sandbox; download it back.
        path = _one(browser, "#files-path")
        path.clear()
        path.send_keys("/tmp")
        path.submit()
        local = tmp_path / "from-browser.txt"
        local.write_text("uploaded through the dashboard\n")
        _one(browser, "#upload-meta").send_keys("source=browser")
        _one(browser, "#upload-file").send_keys(str(local))
        wait_for(
            "the upload to finish",
            lambda: "Uploaded from-browser.txt" in _one(browser, "#files .status").text,
        )
        assert sbx.files.read("/tmp/from-browser.txt") == local.read_text()
        link = _one(browser, "tr[data-name='from-browser.txt'] a", "the uploaded file's row")
        entry = _one(browser, "tr[data-name='from-browser.txt']")
        wait_for("its metadata", lambda: "source=browser" in entry.text)
        link.click()
        downloaded = browser.downloads / "from-browser.txt"  # type: ignore[attr-defined]
        wait_for("the download", lambda: downloaded.is_file() and downloaded.read_text())
        assert downloaded.read_text() == local.read_text()
        _shot(browser, "05-files", at="#files")

        # Kill: back on the list, without it; the API agrees.
        _one(browser, "#actions-heading")
        kill = [b for b in _css(browser, "button.danger") if b.text == "Kill"]
        kill[0].click()
        _one(browser, ".confirm button.danger").click()
        wait_for("the list again", lambda: browser.current_url.endswith("#/sandboxes"))
        wait_for(
            "the killed sandbox to leave the list",
            lambda: (
                _css(browser, "[data-testid=sandboxes]")
                and not _css(browser, f"tr[data-sandbox-id='{sbx.sandbox_id}']")
            ),
        )
        gone = httpx.get(
            f"{serve.api_url}/sandboxes/{sbx.sandbox_id}", headers={"X-API-Key": key}, timeout=30
        )
        assert gone.status_code == 404, gone.text

        for page, shown in (
            ("templates", "[data-testid=templates] tbody tr"),
            ("storage", "#volumes p.muted, [data-testid=volumes] tbody tr"),
            ("keys", "[data-testid=keys] tbody tr"),
        ):
            browser.get(f"{serve.api_url}/dashboard#/{page}")
            _one(browser, shown, f"the {page} page's content")
            _shot(browser, f"06-{page}")
        # The sandbox page's polls (details, metrics, logs) may have been in flight when
        # the kill answered: a 404 for the killed sandbox, and nothing else.
        assert [e for e in _errors(browser) if sbx.sandbox_id not in e or "404" not in e] == []

        # Sign out: the session is gone, a reload shows the sign-in form.
        [out] = [b for b in _css(browser, "header button") if b.text == "Sign out"]
        out.click()
        _one(browser, "#api-key", "the sign-in form after sign-out")
        browser.refresh()
        _one(browser, "#api-key", "the sign-in form after a reload")
        assert _errors(browser) == []

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / "numbers.json").write_text(json.dumps(numbers, indent=2) + "\n")
        print(f"dashboard: screenshots and numbers in {SCREENSHOTS}: {numbers}")
    finally:
        sbx.kill()


def test_dashboard_nodes_for_an_admin_key(serve: Serve, browser: Chrome) -> None:
    admin = serve.hutch("keys", "create", "--admin").strip()
    _fresh(browser, f"{serve.api_url}/dashboard#/nodes")
    _sign_in(browser, admin)
    _one(browser, ".badge", "the admin badge")
    browser.get(f"{serve.api_url}/dashboard#/nodes")
    row = _one(browser, "[data-testid=nodes] tbody tr", "a node's row")
    assert row.find_element(By.CSS_SELECTOR, ".state").text in ("ready", "draining", "lost")
    assert len(row.find_elements(By.CSS_SELECTOR, "meter")) == 2  # CPU and memory allocated
    _shot(browser, "07-nodes")
    assert _errors(browser) == []


def test_dashboard_imports_an_image_with_progress(
    serve: Serve, browser: Chrome, tmp_path: Path
) -> None:
    archive = write_docker_archive(tmp_path / "bb.tar", busybox_layers(), **BUSYBOX_CONFIG)
    _fresh(browser, f"{serve.api_url}/dashboard#/templates")
    _sign_in(browser, os.environ["E2B_API_KEY"])
    _one(browser, "#img-source").send_keys(f"docker-archive:{archive}")
    _one(browser, "#img-name").send_keys("bbdash")
    _one(browser, "#import button[type=submit]").click()
    wait_for(
        "the import's result",
        lambda: "Imported bbdash" in _one(browser, "#import .status").text,
        timeout=120,
    )
    stages = [p.get_attribute("id") for p in _css(browser, "#import progress")]
    assert "stage-seal" in stages and any(s.startswith("stage-layer") for s in stages), stages
    _shot(browser, "08-template-imported", at="#import")
    link = _one(browser, "[data-testid=templates] a[href='#/templates/bbdash']", "its row")
    link.click()
    _one(browser, "#template-detail tbody tr", "its build")
    _one(browser, "#template-detail .card-head button.danger").click()
    _one(browser, "#template-detail .confirm button.danger").click()
    wait_for(
        "the deleted template to leave the list",
        lambda: not _css(browser, "[data-testid=templates] a[href='#/templates/bbdash']"),
    )
    assert _errors(browser) == []


def _button(browser: Chrome, scope: str, label: str) -> WebElement:
    return wait_for(
        f"the {label!r} button",
        lambda: next((b for b in _css(browser, f"{scope} button") if b.text == label), None),
    )


def test_dashboard_pause_resume_and_snapshot(serve: Serve, browser: Chrome) -> None:
    sbx = Sandbox.create("busybox", timeout=300)
    try:
        _fresh(browser, f"{serve.api_url}/dashboard#/sandboxes/{sbx.sandbox_id}")
        _sign_in(browser, os.environ["E2B_API_KEY"])
        state = "[data-testid=sandbox-state]"
        _button(browser, "#actions", "Pause").click()
        wait_for("paused", lambda: _one(browser, state).text == "paused", timeout=60)
        assert sbx.get_info().state.value == "paused"
        _button(browser, "#actions", "Resume").click()
        wait_for("running again", lambda: _one(browser, state).text == "running", timeout=60)
        assert sbx.get_info().state.value == "running"

        _one(browser, "#snapshot-name").send_keys("dash-snap")
        _button(browser, "#actions", "Snapshot").click()
        wait_for(
            "the snapshot",
            lambda: "Snapshot dash-snap taken" in _one(browser, "main > .status").text,
            timeout=60,
        )
        browser.get(f"{serve.api_url}/dashboard#/storage")
        row = wait_for(
            "the snapshot's row",
            lambda: next(
                (r for r in _css(browser, "[data-testid=snapshots] tbody tr")
                 if "dash-snap" in r.text), None,
            ),
        )  # fmt: skip
        _shot(browser, "09-storage-snapshot")
        row.find_element(By.CSS_SELECTOR, "button.danger").click()
        _one(browser, "[data-testid=snapshots] .confirm button.danger").click()
        wait_for(
            "the deleted snapshot to leave the list",
            lambda: "dash-snap" not in _one(browser, "#snapshots").text,
        )
        assert _errors(browser) == []
    finally:
        sbx.kill()


def test_dashboard_key_shown_once_then_revoked(serve: Serve, browser: Chrome) -> None:
    _fresh(browser, f"{serve.api_url}/dashboard#/keys")
    _sign_in(browser, os.environ["E2B_API_KEY"])
    _one(browser, "#key-name").send_keys("from-the-dashboard")
    _button(browser, "#new-key", "Create key").click()
    secret = _one(browser, "#new-secret").get_attribute("value") or ""
    assert secret.startswith("e2b_")
    listed = httpx.get(f"{serve.api_url}/sandboxes", headers={"X-API-Key": secret}, timeout=30)
    assert listed.status_code == 200  # a working key
    _button(browser, "#new-key", "Done").click()
    assert not _css(browser, "#new-secret") and secret not in browser.page_source
    row = wait_for(
        "the new key's row",
        lambda: next(
            (r for r in _css(browser, "[data-testid=keys] tbody tr")
             if "from-the-dashboard" in r.text), None,
        ),
    )  # fmt: skip
    row.find_element(By.CSS_SELECTOR, "button.danger").click()
    _one(browser, "[data-testid=keys] .confirm button.danger").click()
    wait_for(
        "the revoked key to leave the list",
        lambda: "from-the-dashboard" not in _one(browser, "[data-testid=keys]").text,
    )
    refused = httpx.get(f"{serve.api_url}/sandboxes", headers={"X-API-Key": secret}, timeout=30)
    assert refused.status_code == 401
    assert _errors(browser) == []


def test_dashboard_browses_a_volumes_files(serve: Serve, browser: Chrome, tmp_path: Path) -> None:
    key = os.environ["E2B_API_KEY"]
    api = httpx.Client(base_url=serve.api_url, headers={"X-API-Key": key}, timeout=60)
    made = api.post("/volumes", json={"name": "dash-vol", "sizeMB": 16})
    assert made.status_code == 201, made.text
    volume_id, token = made.json()["volumeID"], made.json()["token"]
    content = httpx.Client(base_url=f"{serve.api_url}/volumecontent/{volume_id}", timeout=60,
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    try:
        readme = {"path": "/docs/vol-readme.txt"}
        put = content.put("/file", params=readme, content=b"in a volume\n")
        assert put.status_code == 201, put.text
        _fresh(browser, f"{serve.api_url}/dashboard#/storage")
        _sign_in(browser, key)
        _one(browser, "button[aria-label='Browse the files of dash-vol']", "Browse").click()
        # A directory made through the content API: go into it, download its file.
        _one(browser, "#files tr[data-name=docs] button.link", "the docs/ directory").click()
        link = _one(browser, "tr[data-name='vol-readme.txt'] a", "the volume file's row")
        link.click()
        downloaded = browser.downloads / "vol-readme.txt"  # type: ignore[attr-defined]
        wait_for("the download", lambda: downloaded.is_file() and downloaded.read_text())
        assert downloaded.read_text() == "in a volume\n"
        # Upload into it, with metadata: the content API reads it back.
        local = tmp_path / "to-volume.txt"
        local.write_text("uploaded to a volume\n")
        _one(browser, "#upload-meta").send_keys("source=browser")
        _one(browser, "#upload-file").send_keys(str(local))
        wait_for(
            "the upload to finish",
            lambda: "Uploaded to-volume.txt" in _one(browser, "#files .status").text,
        )
        got = content.get("/file", params={"path": "/docs/to-volume.txt"})
        assert got.status_code == 200 and got.text == local.read_text()
        entry = _one(browser, "#files tr[data-name='to-volume.txt']")
        wait_for("its metadata", lambda: "source=browser" in entry.text)
        _shot(browser, "10-volume-files", at="#files")
        # Delete it from the browser: gone from the list and from the volume.
        entry.find_element(By.CSS_SELECTOR, "button.danger").click()
        _one(browser, "#files .confirm button.danger").click()
        wait_for("the deleted file to leave the list",
                 lambda: not _css(browser, "#files tr[data-name='to-volume.txt']"))  # fmt: skip
        assert content.get("/path", params={"path": "/docs/to-volume.txt"}).status_code == 404
        assert _errors(browser) == []
    finally:
        content.close()
        api.delete(f"/volumes/{volume_id}")
        api.close()
