"""envd's system routes and access control, over plain HTTP and through the SDK."""

from __future__ import annotations

import base64
import hashlib
import time

import httpx
import pytest

from tests.conftest import EnvdProcess


def test_health_answers_204(envd: EnvdProcess) -> None:
    assert httpx.get(envd.url + "/health").status_code == 204


def test_init_replaces_env_vars_and_envs_returns_them(envd: EnvdProcess) -> None:
    r = httpx.post(envd.url + "/init", json={"envVars": {"A": "1", "B": "2"}})
    assert r.status_code == 204
    httpx.post(envd.url + "/init", json={"envVars": {"C": "3"}})
    assert httpx.get(envd.url + "/envs").json() == {"C": "3"}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"envVars": {"A": 1}}', "envVars"),
        (b'{"defaultUser": "no-such-user-xyz"}', "does not exist"),
        (b'{"defaultWorkdir": "relative"}', "absolute"),
    ],
)
def test_init_rejects_bad_input(envd: EnvdProcess, body: bytes, needle: str) -> None:
    r = httpx.post(envd.url + "/init", content=body)
    assert 400 <= r.status_code < 500
    assert needle in r.json()["message"]
    assert httpx.get(envd.url + "/health").status_code == 204


def test_metrics_reports_cpu_memory_disk(envd: EnvdProcess) -> None:
    m = httpx.get(envd.url + "/metrics").json()
    assert m["cpu_count"] >= 1
    assert 0 < m["mem_used"] <= m["mem_total"]
    assert 0 < m["disk_used"] <= m["disk_total"]


def test_unknown_route_is_json_404(envd: EnvdProcess) -> None:
    r = httpx.get(envd.url + "/nope")
    assert r.status_code == 404
    assert r.json()["code"] == 404


def _signature(path: str, op: str, user: str, token: str, exp: int | None) -> str:
    raw = f"{path}:{op}:{user}:{token}" + (f":{exp}" if exp is not None else "")
    return "v1_" + base64.b64encode(hashlib.sha256(raw.encode()).digest()).rstrip(b"=").decode()


def test_access_token_guards_everything_but_health(envd: EnvdProcess) -> None:
    assert httpx.post(envd.url + "/init", json={"accessToken": "s3cret"}).status_code == 204
    assert httpx.get(envd.url + "/health").status_code == 204
    for method, path in [
        ("GET", "/envs"),
        ("GET", "/metrics"),
        ("POST", "/init"),
        ("POST", "/files/upload/init"),
        ("POST", "/filesystem.Filesystem/Stat"),
        ("POST", "/process.Process/List"),
        ("GET", "/files"),
    ]:
        r = httpx.request(method, envd.url + path, json={})
        assert r.status_code == 401, (method, path)
        # E2B envd's words (internal/api/auth.go): clients compare them.
        message = (
            "missing signature query parameter"
            if path == "/files"
            else "unauthorized access, please provide a valid access token or method "
            "signing if supported"
        )
        assert r.json() == {"code": 401, "message": message}, (method, path)
    ok = httpx.get(envd.url + "/envs", headers={"X-Access-Token": "s3cret"})
    assert ok.status_code == 200
    bad = httpx.get(envd.url + "/envs", headers={"X-Access-Token": "s3cret-not"})
    assert bad.status_code == 401


def test_signed_file_urls_are_checked_exactly(envd: EnvdProcess) -> None:
    httpx.post(envd.url + "/init", json={"accessToken": "tok"})
    exp = int(time.time()) + 60
    sig = _signature("/etc/hostname", "read", "root", "tok", exp)
    params = {
        "path": "/etc/hostname",
        "username": "root",
        "signature": sig,
        "signature_expiration": str(exp),
    }
    assert httpx.get(envd.url + "/files", params=params).status_code != 401
    # The signature of a read does not allow a write, nor another path or an expired time.
    assert httpx.post(envd.url + "/files", params=params, content=b"x").status_code == 401
    other = {**params, "path": "/etc/passwd"}
    assert httpx.get(envd.url + "/files", params=other).status_code == 401
    old = int(time.time()) - 5
    expired = {
        **params,
        "signature": _signature("/etc/hostname", "read", "root", "tok", old),
        "signature_expiration": str(old),
    }
    r = httpx.get(envd.url + "/files", params=expired)
    assert r.json() == {"code": 401, "message": "signature is already expired"}
    r = httpx.get(envd.url + "/files", params={**params, "signature": "v1_nope"})
    assert r.json() == {"code": 401, "message": "invalid signature"}
    r = httpx.get(envd.url + "/files", params={**params, "signature": ""})
    assert r.json() == {"code": 401, "message": "invalid signature"}
    # A wrong token in the header is refused even beside a valid signature, as in E2B.
    r = httpx.get(envd.url + "/files", params=params, headers={"X-Access-Token": "tok-not"})
    assert r.json() == {
        "code": 401,
        "message": "access token present in header but does not match",
    }
    r = httpx.get(envd.url + "/files", params={**params, "signature_expiration": "soon"})
    assert r.status_code == 400
    assert r.json()["message"] == (
        "Invalid format for parameter signature_expiration: error binding string parameter: "
        'strconv.ParseInt: parsing "soon": invalid syntax'
    )
    # A signature is no key to anything but /files.
    assert httpx.post(envd.url + "/files/upload/init", params=params, json={}).status_code == 401
