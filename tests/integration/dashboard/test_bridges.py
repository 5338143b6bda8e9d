"""The sandbox bridges' checks before any sandbox is reached (the fake node's sandboxes
have no envd; tests/e2e/test_dashboard_server.py reaches real ones): another team's
sandbox is the API's 404 through both, the terminal's refusals, an unreachable proxy."""

from __future__ import annotations

import json
from contextlib import closing

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from hutch.dashboard.sessions import COOKIE_NAME

from .conftest import DashboardServer


def _create(board: DashboardServer, key: str) -> str:
    made = httpx.post(f"{board.url}/sandboxes", headers={"X-API-Key": key}, timeout=30,
                      json={"templateID": "busybox", "timeout": 300})  # fmt: skip
    assert made.status_code == 201, made.text
    return str(made.json()["sandboxID"])


def _signed_in(board: DashboardServer, key: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=board.url, timeout=30)
    signed = client.post("/dashboard/session", json={"apiKey": key})
    return client, signed.json()["csrfToken"]


def _terminal(board: DashboardServer, client: httpx.Client, sandbox_id: str, csrf: str,
              origin: str | None = None) -> dict[str, object]:  # fmt: skip
    """The terminal's refusal frame and close code."""
    url = board.url.replace("http://", "ws://")
    cookie = client.cookies.get(COOKIE_NAME)
    headers = {"Origin": origin or board.url, **({"Cookie": f"{COOKIE_NAME}={cookie}"} if
               cookie else {})}  # fmt: skip
    with connect(f"{url}/dashboard/sandboxes/{sandbox_id}/terminal?csrf={csrf}",
                 additional_headers=headers, open_timeout=30) as ws:  # fmt: skip
        frame = json.loads(ws.recv(timeout=30))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None
    return {**frame, "close": closed.value.rcvd.code}


def test_bridges_refuse_another_teams_sandbox_with_the_apis_404(board: DashboardServer) -> None:
    # The seeded templates are the default team's: the other team is the one looking.
    theirs = _create(board, board.key)
    direct = httpx.get(f"{board.url}/sandboxes/{theirs}", headers={"X-API-Key": board.other_key})
    assert direct.status_code == 404
    client, csrf = _signed_in(board, board.other_key)
    with closing(client):
        envd = client.get(f"/dashboard/sandboxes/{theirs}/envd/files", params={"path": "/"})
        assert envd.status_code == 404 and envd.json() == direct.json()
        listed = client.post(f"/dashboard/sandboxes/{theirs}/envd/filesystem.Filesystem/ListDir",
                             json={"path": "/"}, headers={"X-CSRF-Token": csrf})  # fmt: skip
        assert listed.status_code == 404
        refused = _terminal(board, client, theirs, csrf)
        assert refused["status"] == 404 and refused["close"] == 4404
        assert refused["message"] == direct.json()["message"]
        # A malformed id is the same 404, not a 400 that says more.
        bad = client.get("/dashboard/sandboxes/NOT-AN-ID/envd/files", params={"path": "/"})
        assert bad.status_code == 404


def test_bridges_terminal_refusals(board: DashboardServer) -> None:
    mine = _create(board, board.key)
    client, csrf = _signed_in(board, board.key)
    with closing(client):
        assert _terminal(board, client, mine, "wrong")["close"] == 4403
        bad_size = board.url.replace("http://", "ws://")
        with connect(
            f"{bad_size}/dashboard/sandboxes/{mine}/terminal?csrf={csrf}&cols=0",
            additional_headers={"Origin": board.url,
                                "Cookie": f"{COOKIE_NAME}={client.cookies[COOKIE_NAME]}"},
        ) as ws:  # fmt: skip
            assert json.loads(ws.recv(timeout=30))["status"] == 400
        with pytest.raises(InvalidStatus) as cross_site:
            _terminal(board, client, mine, csrf, origin="https://evil.example")
        assert cross_site.value.response.status_code == 403
    with httpx.Client(base_url=board.url) as anonymous:
        assert _terminal(board, anonymous, mine, "x")["close"] == 4401


def test_bridges_envd_needs_csrf_on_posts_and_offers_only_the_file_calls(
    board: DashboardServer,
) -> None:
    mine = _create(board, board.key)
    client, csrf = _signed_in(board, board.key)
    base = f"/dashboard/sandboxes/{mine}/envd"
    with closing(client):
        assert client.post(f"{base}/filesystem.Filesystem/ListDir", json={}).status_code == 403
        for method, path in (("POST", "process.Process/Start"), ("GET", "health"),
                             ("POST", "init"), ("DELETE", "files")):  # fmt: skip
            answer = client.request(method, f"{base}/{path}", headers={"X-CSRF-Token": csrf})
            assert answer.status_code in (404, 405), (method, path, answer.status_code)
        # The proxy of this test is a closed port: the API's 503, said as such.
        down = client.get(f"{base}/files", params={"path": "/etc/hostname"})
        assert down.status_code == 503 and "proxy" in down.json()["message"]
