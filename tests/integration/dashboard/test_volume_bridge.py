"""The volume file browser's bridge (``/dashboard/volumes/{id}/content/...``) on the real
API app, the real SQLite store and the local ext4 volume backend: the session's key finds
the volume, a token minted server-side reaches the content API, another team's volume is
the API's 404, mutations need the CSRF token, downloads are locked-down attachments."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import closing

import httpx
import pytest

from hutch.dashboard.security import DATA_CSP
from tests.conftest import machine_lacks

from .conftest import DashboardServer


@pytest.fixture(autouse=True)
def _needs_loop_mounts() -> None:
    if os.geteuid() != 0:
        machine_lacks("volumes need root (loop mounts)")
    if shutil.which("mkfs.ext4") is None:
        machine_lacks("mkfs.ext4 (e2fsprogs) is not installed")


@pytest.fixture
def volumes(board: DashboardServer) -> Iterator[dict[str, str]]:
    """One small volume of the board's team and one of the other team; deleted after."""
    made: dict[str, str] = {}
    keys = {"mine": board.key, "theirs": board.other_key}
    try:
        for who, key in keys.items():
            r = httpx.post(f"{board.url}/volumes", headers={"X-API-Key": key}, timeout=60,
                           json={"name": f"dashvol-{who}", "sizeMB": 16})  # fmt: skip
            assert r.status_code == 201, r.text
            made[who] = r.json()["volumeID"]
        yield made
    finally:
        for who, volume_id in made.items():
            httpx.delete(f"{board.url}/volumes/{volume_id}", headers={"X-API-Key": keys[who]},
                         timeout=60)  # fmt: skip


def _signed_in(board: DashboardServer) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=board.url, timeout=60)
    signed = client.post("/dashboard/session", json={"apiKey": board.key})
    assert signed.status_code == 200, signed.text
    return client, signed.json()["csrfToken"]


def test_volume_bridge_lists_uploads_downloads_and_deletes(
    board: DashboardServer, volumes: dict[str, str]
) -> None:
    client, csrf = _signed_in(board)
    base = f"/dashboard/volumes/{volumes['mine']}/content"
    with closing(client):
        made = client.post(f"{base}/dir", params={"path": "/docs"}, headers={"X-CSRF-Token": csrf})
        assert made.status_code == 201, made.text
        body = b"<script>alert(1)</script>\n"
        put = client.put(f"{base}/file", params={"path": "/docs/page.html"}, content=body,
                         headers={"X-CSRF-Token": csrf, "X-Metadata-owner": "ann"})  # fmt: skip
        assert put.status_code == 201, put.text
        assert put.json()["metadata"] == {"owner": "ann"}
        listed = client.get(f"{base}/dir", params={"path": "/docs"})
        assert listed.status_code == 200 and [e["name"] for e in listed.json()] == ["page.html"]
        root = client.get(f"{base}/dir", params={"path": "/"})
        assert {e["name"]: e["type"] for e in root.json()}["docs"] == "directory"
        got = client.get(f"{base}/file", params={"path": "/docs/page.html"})
        assert got.status_code == 200 and got.content == body
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["content-disposition"] == "attachment; filename*=UTF-8''page.html"
        assert got.headers["content-security-policy"] == DATA_CSP
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["cache-control"] == "no-store"
        # The content API's own answers come through: bad input, a missing file.
        assert client.get(f"{base}/dir").status_code == 400
        missing = client.get(f"{base}/file", params={"path": "/nope"})
        assert missing.status_code == 404 and "content-disposition" not in missing.headers
        # By name, as GET /volumes/{idOrName}.
        by_name = client.get("/dashboard/volumes/dashvol-mine/content/dir", params={"path": "/"})
        assert by_name.status_code == 200 and by_name.json() == root.json()
        gone = client.delete(f"{base}/path", params={"path": "/docs/page.html"},
                             headers={"X-CSRF-Token": csrf})  # fmt: skip
        assert gone.status_code == 204, gone.text
        assert client.get(f"{base}/dir", params={"path": "/docs"}).json() == []


def test_volume_bridge_refuses_another_teams_volume_with_the_apis_404(
    board: DashboardServer, volumes: dict[str, str]
) -> None:
    theirs = volumes["theirs"]
    direct = httpx.get(f"{board.url}/volumes/{theirs}", headers={"X-API-Key": board.key})
    assert direct.status_code == 404
    client, csrf = _signed_in(board)
    with closing(client):
        for method, op in (("GET", "dir"), ("GET", "file"), ("PUT", "file"), ("DELETE", "path")):
            r = client.request(method, f"/dashboard/volumes/{theirs}/content/{op}",
                               params={"path": "/x"}, headers={"X-CSRF-Token": csrf})  # fmt: skip
            assert r.status_code == 404, (method, op, r.text)
            assert r.json() == direct.json()
        unknown = client.get("/dashboard/volumes/no-such-volume/content/dir", params={"path": "/"})
        assert unknown.status_code == 404


def test_volume_bridge_needs_a_session_csrf_and_offers_only_the_browsers_calls(
    board: DashboardServer, volumes: dict[str, str]
) -> None:
    base = f"/dashboard/volumes/{volumes['mine']}/content"
    anonymous = httpx.get(f"{board.url}{base}/dir", params={"path": "/"})
    assert anonymous.status_code == 401
    client, csrf = _signed_in(board)
    with closing(client):
        for method, op in (("PUT", "file"), ("POST", "dir"), ("DELETE", "path")):
            for headers in ({}, {"X-CSRF-Token": "wrong"}):
                r = client.request(method, f"{base}/{op}", params={"path": "/f"},
                                   content=b"x", headers=headers)  # fmt: skip
                assert r.status_code == 403, (method, op, r.text)
                assert "CSRF" in r.json()["message"]
        assert client.get(f"{base}/dir", params={"path": "/"}).json() == []  # nothing written
        evil = {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
        cross = client.put(f"{base}/file", params={"path": "/f"}, content=b"x", headers=evil)
        assert cross.status_code == 403
        for method, op in (("PATCH", "path"), ("POST", "move"), ("GET", "other")):
            r = client.request(method, f"{base}/{op}", params={"path": "/f"},
                               headers={"X-CSRF-Token": csrf})  # fmt: skip
            assert r.status_code == 404, (method, op, r.text)
        # The browser's own Authorization never reaches the content API as a credential.
        forged = client.get(f"{base}/dir", params={"path": "/"},
                            headers={"Authorization": "Bearer forged"})  # fmt: skip
        assert forged.status_code == 200
