"""The dashboard's server side on the session's real ``hutch serve`` (issue 15,
docs/dashboard.md): sign-in and its cookie, the API bridge with CSRF, a revoked key signed
out, and the two sandbox bridges (envd for files, the PTY WebSocket) with real runc
sandboxes, real envd and the real proxy, against the official SDK's view of the same
sandbox. Another team's sandbox is 404 through both bridges.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass

import httpx
import pytest
from e2b import Sandbox
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from hutch.dashboard.security import APP_CSP, DATA_CSP
from hutch.dashboard.sessions import COOKIE_NAME

from .serveproc import Serve

pytestmark = pytest.mark.root


def _hutch(serve: Serve, *args: str) -> str:
    argv = [sys.executable, "-m", "hutch", *args[:2], "--home", str(serve.home), *args[2:]]
    done = subprocess.run(argv, env=serve.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@dataclass
class Board:
    serve: Serve
    admin: str
    key_a: str
    sandbox_a: Sandbox
    sandbox_b: Sandbox

    def browser(self) -> httpx.Client:
        """A client as the browser is: same-origin, cookies kept."""
        return httpx.Client(
            base_url=self.serve.api_url, timeout=60, headers={"Origin": self.serve.api_url}
        )

    def signed_in(self, key: str) -> tuple[httpx.Client, str]:
        client = self.browser()
        response = client.post("/dashboard/session", json={"apiKey": key})
        assert response.status_code == 200, response.text
        return client, response.json()["csrfToken"]


@pytest.fixture(scope="module")
def board(serve: Serve) -> Iterator[Board]:
    admin = json.loads(_hutch(serve, "keys", "create", "--admin", "--json"))["key"]
    for name in ("dash-a", "dash-b"):
        _hutch(serve, "team", "create", name, "--api-key", admin)
    key_a = json.loads(_hutch(serve, "keys", "create", "--team", "dash-a", "--json"))["key"]
    key_b = json.loads(_hutch(serve, "keys", "create", "--team", "dash-b", "--json"))["key"]
    sandbox_a = Sandbox.create("busybox", api_key=key_a, timeout=300)
    sandbox_b = Sandbox.create("busybox", api_key=key_b, timeout=300)
    try:
        yield Board(serve, admin, key_a, sandbox_a, sandbox_b)
    finally:
        for team in ("dash-a", "dash-b"):
            _hutch(serve, "team", "delete", team, "--force", "--api-key", admin)


def _ws_url(board: Board, sandbox_id: str, csrf: str) -> str:
    base = board.serve.api_url.replace("http://", "ws://")
    return f"{base}/dashboard/sandboxes/{sandbox_id}/terminal?csrf={csrf}&cols=100&rows=30"


def _ws_headers(client: httpx.Client | str, origin: str) -> dict[str, str]:
    """A browser's upgrade headers: the session cookie (``client``'s, or this value)."""
    value = client if isinstance(client, str) else client.cookies[COOKIE_NAME]
    return {"Cookie": f"{COOKIE_NAME}={value}", "Origin": origin}


def test_dashboard_sign_in_cookie_and_csp_on_serve(board: Board) -> None:
    page = httpx.get(f"{board.serve.api_url}/dashboard", timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert page.headers["content-security-policy"] == APP_CSP
    with board.browser() as client:
        response = client.post("/dashboard/session", json={"apiKey": board.key_a})
        assert response.status_code == 200
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert board.key_a not in response.text and board.key_a not in cookie
        assert response.json()["team"]["name"] == "dash-a" and response.json()["admin"] is False
        listed = client.get("/dashboard/api/v2/sandboxes")
        assert listed.headers["content-security-policy"] == DATA_CSP
        assert [s["sandboxID"] for s in listed.json()] == [board.sandbox_a.sandbox_id]
        assert client.delete("/dashboard/session").status_code == 204
        assert client.get("/dashboard/api/v2/sandboxes").status_code == 401
    with board.browser() as admin:
        assert admin.post("/dashboard/session", json={"apiKey": board.admin}).json()["admin"]


def test_dashboard_envd_bridge_uploads_lists_and_downloads(board: Board) -> None:
    sandbox_id = board.sandbox_a.sandbox_id
    client, csrf = board.signed_in(board.key_a)
    base = f"/dashboard/sandboxes/{sandbox_id}/envd"
    with closing(client):
        files = {"file": ("up.txt", b"from the dashboard\n", "text/plain")}
        refused = client.post(f"{base}/files", params={"path": "/tmp/up.txt"}, files=files)
        assert refused.status_code == 403  # no CSRF token
        uploaded = client.post(
            f"{base}/files", params={"path": "/tmp/up.txt"}, files=files,
            headers={"X-CSRF-Token": csrf, "X-Metadata-Owner": "dashboard"},
        )  # fmt: skip
        assert uploaded.status_code == 200, uploaded.text
        # The SDK sees what the dashboard wrote.
        assert board.sandbox_a.files.read("/tmp/up.txt") == "from the dashboard\n"
        board.sandbox_a.files.write("/tmp/page.html", "<script>alert(1)</script>")
        listed = client.post(
            f"{base}/filesystem.Filesystem/ListDir", json={"path": "/tmp", "depth": 1},
            headers={"X-CSRF-Token": csrf},
        )  # fmt: skip
        assert listed.status_code == 200, listed.text
        names = {entry["name"] for entry in listed.json()["entries"]}
        assert {"up.txt", "page.html"} <= names
        stat = client.post(
            f"{base}/filesystem.Filesystem/Stat", json={"path": "/tmp/up.txt"},
            headers={"X-CSRF-Token": csrf},
        )  # fmt: skip
        assert stat.status_code == 200 and stat.json()["entry"]["name"] == "up.txt"
        assert stat.json()["entry"]["metadata"] == {"owner": "dashboard"}  # X-Metadata-* kept
        # A download is an attachment of opaque bytes, never a page of this origin.
        page = client.get(f"{base}/files", params={"path": "/tmp/page.html"})
        assert page.status_code == 200 and page.content == b"<script>alert(1)</script>"
        assert page.headers["content-type"] == "application/octet-stream"
        assert page.headers["content-disposition"].startswith("attachment;")
        assert page.headers["content-security-policy"] == DATA_CSP
        assert page.headers["x-content-type-options"] == "nosniff"
        # Not a file browser's call: not bridged.
        start = client.post(
            f"{base}/process.Process/Start", json={}, headers={"X-CSRF-Token": csrf}
        )
        assert start.status_code == 404


def test_dashboard_terminal_runs_a_command(board: Board) -> None:
    client, csrf = board.signed_in(board.key_a)
    with closing(client), connect(
        _ws_url(board, board.sandbox_a.sandbox_id, csrf),
        additional_headers=_ws_headers(client, board.serve.api_url), open_timeout=60,
    ) as ws:  # fmt: skip
        ws.send(json.dumps({"type": "resize", "cols": 120, "rows": 40}))
        ws.send(json.dumps({"type": "input", "data": "echo hi$((40+2)); exit 3\n"}))
        output = b""
        while True:
            frame = ws.recv(timeout=60)
            if isinstance(frame, bytes):
                output += frame
                continue
            message = json.loads(frame)
            assert message["type"] == "exit", message
            break
        assert b"hi42" in output  # the shell's answer, not the echo of what was typed
        assert message["code"] == 3


def test_dashboard_terminal_closed_by_the_browser_kills_the_shell(board: Board) -> None:
    client, csrf = board.signed_in(board.key_a)
    with closing(client), connect(
        _ws_url(board, board.sandbox_a.sandbox_id, csrf),
        additional_headers=_ws_headers(client, board.serve.api_url), open_timeout=60,
    ) as ws:  # fmt: skip
        ws.send(json.dumps({"type": "input", "data": "echo shell=$$\n"}))
        output = b""
        while (found := re.search(rb"shell=(\d+)", output)) is None:
            frame = ws.recv(timeout=60)
            assert isinstance(frame, bytes), frame
            output += frame
        pid = int(found.group(1))
        assert pid in {p.pid for p in board.sandbox_a.commands.list()}
    deadline = time.monotonic() + 30
    while pid in {p.pid for p in board.sandbox_a.commands.list()}:
        assert time.monotonic() < deadline, "the shell outlived its terminal"
        time.sleep(0.1)


def test_dashboard_other_teams_sandbox_is_404_through_both_bridges(board: Board) -> None:
    theirs = board.sandbox_b.sandbox_id
    client, csrf = board.signed_in(board.key_a)
    with closing(client):
        got = client.get(
            f"/dashboard/sandboxes/{theirs}/envd/files", params={"path": "/etc/hostname"}
        )
        assert got.status_code == 404, got.text
        listed = client.post(
            f"/dashboard/sandboxes/{theirs}/envd/filesystem.Filesystem/ListDir",
            json={"path": "/"}, headers={"X-CSRF-Token": csrf},
        )  # fmt: skip
        assert listed.status_code == 404
        assert client.get(f"/dashboard/api/sandboxes/{theirs}").status_code == 404
        _assert_refused(client, board, _ws_url(board, theirs, csrf), 404)


def test_dashboard_terminal_refuses_a_wrong_csrf_or_origin(board: Board) -> None:
    client, csrf = board.signed_in(board.key_a)
    mine = board.sandbox_a.sandbox_id
    with closing(client):
        _assert_refused(client, board, _ws_url(board, mine, "wrong"), 403)
        with pytest.raises(InvalidStatus) as refused:  # another site's page: no upgrade
            connect(
                _ws_url(board, mine, csrf),
                additional_headers=_ws_headers(client, "https://evil.example"),
            ).close()  # fmt: skip
        assert refused.value.response.status_code == 403


def _assert_refused(client: httpx.Client | str, board: Board, url: str, status: int) -> None:
    """The terminal's refusal: an error frame naming ``status``, then close 4000+status."""
    with connect(
        url, additional_headers=_ws_headers(client, board.serve.api_url), open_timeout=30
    ) as ws:
        frame = json.loads(ws.recv(timeout=30))
        assert frame["type"] == "error" and frame["status"] == status, frame
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000 + status


def test_dashboard_revoked_key_is_signed_out(board: Board) -> None:
    made = json.loads(_hutch(board.serve, "keys", "create", "--team", "dash-a", "--json"))
    client, csrf = board.signed_in(made["key"])
    sandbox_id = board.sandbox_a.sandbox_id
    with closing(client):
        assert client.get("/dashboard/api/v2/sandboxes").status_code == 200
        cookie = client.cookies[COOKIE_NAME]
        _hutch(
            board.serve, "keys", "revoke", made["id"], "--team", "dash-a", "--api-key", board.admin
        )
        envd = client.get(
            f"/dashboard/sandboxes/{sandbox_id}/envd/files", params={"path": "/tmp/up.txt"}
        )
        assert envd.status_code == 401
        assert client.get("/dashboard/api/v2/sandboxes").status_code == 401
        assert COOKIE_NAME not in client.cookies  # the 401s cleared it
        # The copy taken before: its key no longer works on the terminal either.
        _assert_refused(cookie, board, _ws_url(board, sandbox_id, csrf), 401)
        assert client.get("/dashboard/session").status_code == 401
