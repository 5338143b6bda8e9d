"""Volumes through the real API (uvicorn, SQL store, the local ext4 backend): the official
SDK's ``Volume`` class and plain HTTP, every bad input of issue 3."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from e2b import Volume
from e2b.exceptions import (
    AuthenticationException,
    NotFoundException,
    VolumeException,
)

from tests.conftest import machine_lacks
from tests.integration.api.conftest import ApiServer
from tests.integration.volumes.conftest import moto_server  # noqa: F401 - fixture

MIB = 1 << 20


@pytest.fixture(autouse=True)
def _needs_loop_mounts() -> None:
    if os.geteuid() != 0:
        machine_lacks("volumes need root (loop mounts)")
    if shutil.which("mkfs.ext4") is None:
        machine_lacks("mkfs.ext4 (e2fsprogs) is not installed")


@pytest.fixture
def vol_env(sdk_env: ApiServer, monkeypatch: pytest.MonkeyPatch) -> ApiServer:
    """The SDK aimed at the API for both the control plane and the content API."""
    monkeypatch.setenv("E2B_VOLUME_API_URL", sdk_env.url)
    return sdk_env


@pytest.fixture
def http(api: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, headers={"X-API-Key": api.key}, timeout=60) as client:
        yield client


def _create(http: httpx.Client, name: str, size_mb: int | None = None) -> dict:
    body: dict = {"name": name}
    if size_mb is not None:
        body["sizeMB"] = size_mb
    r = http.post("/volumes", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _bearer(vol: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {vol['token']}"}


def _mounts() -> str:
    return open("/proc/self/mountinfo").read()


# -- the official SDK --------------------------------------------------------------------


def test_sdk_volume_lifecycle_and_files(vol_env: ApiServer) -> None:
    vol = Volume.create("data")
    assert vol.volume_id.startswith("vol")
    assert vol.name == "data"
    assert [v.name for v in Volume.list()] == ["data"]
    info = Volume.get_info("data")  # by name
    assert info.volume_id == vol.volume_id and info.token
    assert Volume.get_info(vol.volume_id).name == "data"  # by id

    entry = vol.write_file("/docs/readme.txt", "hello volume")
    assert entry.type.value == "file" and entry.size == 12 and entry.path == "/docs/readme.txt"
    assert vol.read_file("/docs/readme.txt") == "hello volume"
    assert vol.read_file("docs/readme.txt", format="bytes") == b"hello volume"
    assert b"".join(vol.read_file("/docs/readme.txt", format="stream")) == b"hello volume"
    assert vol.exists("/docs") and not vol.exists("/nope")

    d = vol.make_dir("/a/b/c", force=True)
    assert d.type.value == "directory" and d.path == "/a/b/c"
    names = [e.path for e in vol.list("/", depth=3)]
    assert names == ["/a", "/a/b", "/a/b/c", "/docs", "/docs/readme.txt"]
    assert [e.name for e in vol.list("/")] == ["a", "docs"]

    st = vol.get_info("/docs/readme.txt")
    assert st.mode == 0o644 and st.uid == 1000 and st.gid == 1000
    upd = vol.update_metadata("/docs/readme.txt", uid=1234, gid=1235, mode=0o600)
    assert (upd.uid, upd.gid, upd.mode) == (1234, 1235, 0o600)
    w = vol.write_file("/own.txt", b"x", uid=5, gid=6, mode=0o640)
    assert (w.uid, w.gid, w.mode) == (5, 6, 0o640)

    vol.remove("/a")
    assert not vol.exists("/a/b")
    with pytest.raises(NotFoundException):
        vol.remove("/a")
    with pytest.raises(NotFoundException):
        vol.read_file("/missing.txt")

    again = Volume.connect(vol.volume_id)
    assert again.read_file("/docs/readme.txt") == "hello volume"
    assert Volume.destroy(vol.volume_id) is True
    assert Volume.destroy(vol.volume_id) is False
    with pytest.raises(NotFoundException):
        Volume.get_info(vol.volume_id)
    assert vol.volume_id not in _mounts()


def test_sdk_streams_a_file_object_both_ways(vol_env: ApiServer, tmp_path) -> None:
    vol = Volume.create("big")
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(9 * MIB + 123))
    with open(src, "rb") as f:
        assert vol.write_file("/big.bin", f).size == 9 * MIB + 123
    got = b"".join(vol.read_file("/big.bin", format="stream"))
    assert got == src.read_bytes()
    Volume.destroy(vol.volume_id)


def test_sdk_name_clash_is_an_error(vol_env: ApiServer) -> None:
    Volume.create("same")
    with pytest.raises(VolumeException, match="already exists"):
        Volume.create("same")


def test_sdk_wrong_token_is_authentication_error(vol_env: ApiServer) -> None:
    vol = Volume.create("tok")
    bad = Volume(vol.volume_id, vol.name, token=vol.token[:-4] + "0000")
    with pytest.raises(AuthenticationException):
        bad.read_file("/x")


# -- plain HTTP: the control plane --------------------------------------------------------


def test_create_reports_quota_and_usage(api: ApiServer, http: httpx.Client) -> None:
    vol = _create(http, "sized", 64)
    assert vol["sizeMB"] == 64 and vol["token"]
    got = http.get(f"/volumes/{vol['volumeID']}").json()
    assert 0 < got["totalBytes"] <= 64 * MIB
    assert got["usedBytes"] < got["totalBytes"]
    r = http.put(
        f"/volumecontent/{vol['volumeID']}/file",
        params={"path": "f"},
        content=b"z" * (4 * MIB),
        headers=_bearer(vol),
    )
    assert r.status_code == 201
    after = http.get("/volumes/sized").json()
    assert after["usedBytes"] >= got["usedBytes"] + 4 * MIB


def test_default_quota_is_one_gib(http: httpx.Client) -> None:
    vol = _create(http, "dflt")
    assert vol["sizeMB"] == 1024


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"name": "a/b"}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"name": "vol0123456789abcdefghij"}, "volume id"),
        ({"name": 5}, "name"),
        ({}, "name"),
        ({"name": "q", "sizeMB": 0}, "sizeMB"),
        ({"name": "q", "sizeMB": -5}, "sizeMB"),
        ({"name": "q", "sizeMB": 1 << 40}, "more than this node"),
        ({"name": "q", "sizeMB": "10"}, "sizeMB"),
        ({"name": "q", "sizeMB": True}, "sizeMB"),
    ],
)
def test_create_rejects_bad_input(http: httpx.Client, body: dict, fragment: str) -> None:
    r = http.post("/volumes", json=body)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["message"]
    assert http.get("/volumes").json() == []


def test_names_are_unique_per_team_and_teams_are_isolated(
    api: ApiServer, http: httpx.Client
) -> None:
    mine = _create(http, "shared-name")
    assert http.post("/volumes", json={"name": "shared-name"}).status_code == 409
    other = httpx.Client(base_url=api.url, headers={"X-API-Key": api.other_key})
    theirs = other.post("/volumes", json={"name": "shared-name", "sizeMB": 8})
    assert theirs.status_code == 201
    theirs_id = theirs.json()["volumeID"]
    assert [v["volumeID"] for v in other.get("/volumes").json()] == [theirs_id]
    assert [v["volumeID"] for v in http.get("/volumes").json()] == [mine["volumeID"]]
    assert http.get(f"/volumes/{theirs_id}").status_code == 404
    assert http.delete(f"/volumes/{theirs_id}").status_code == 404
    assert other.get(f"/volumes/{mine['volumeID']}").status_code == 404
    # Their token on their volume works; on mine it is 404 (never my data).
    tok = {"Authorization": f"Bearer {theirs.json()['token']}"}
    assert (
        other.get(f"/volumecontent/{theirs_id}/dir", params={"path": "/"}, headers=tok).status_code
        == 200
    )
    r = http.get(f"/volumecontent/{mine['volumeID']}/dir", params={"path": "/"}, headers=tok)
    assert r.status_code == 404
    assert other.delete(f"/volumes/{theirs_id}").status_code == 204
    other.close()


def test_control_plane_needs_a_key(api: ApiServer) -> None:
    for method, path in (
        ("GET", "/volumes"),
        ("POST", "/volumes"),
        ("GET", "/volumes/x"),
        ("DELETE", "/volumes/x"),
    ):
        r = httpx.request(method, api.url + path, json={"name": "n"})
        assert r.status_code == 401, (method, path)


def test_unknown_volume_is_404(http: httpx.Client) -> None:
    assert http.get("/volumes/nope").status_code == 404
    assert http.get("/volumes/vol0123456789abcdefghij").status_code == 404
    assert http.delete("/volumes/nope").status_code == 404


def test_deleting_the_last_key_keeps_the_volumes(api: ApiServer, http: httpx.Client) -> None:
    import asyncio

    from hutch.api.store.sql import open_sql_store

    vol = _create(http, "keep", 8)

    async def rotate() -> str:
        store = await open_sql_store(api.database_url)
        try:
            new = await store.keys.create_api_key(api.team_id, name="new")
            for key in await store.keys.list_api_keys(api.team_id):
                if key.id != new.api_key.id:
                    await store.keys.delete_api_key(key.id, team_id=api.team_id)
            return new.secret
        finally:
            await store.close()

    new_key = asyncio.run(rotate())
    assert http.get("/volumes").status_code == 401
    got = httpx.get(f"{api.url}/volumes", headers={"X-API-Key": new_key}).json()
    assert [v["volumeID"] for v in got] == [vol["volumeID"]]


# -- plain HTTP: the content API ------------------------------------------------------------


def test_content_tokens(api: ApiServer, http: httpx.Client) -> None:
    vol = _create(http, "tokens", 8)
    vid = vol["volumeID"]
    url = f"/volumecontent/{vid}/dir"
    assert httpx.get(api.url + url, params={"path": "/"}).status_code == 401
    for auth in ("Bearer", "Basic abc", "Bearer nonsense", f"Bearer {vid}.x.y"):
        assert (
            httpx.get(
                api.url + url, params={"path": "/"}, headers={"Authorization": auth}
            ).status_code
            == 401
        ), auth
    bad_sig = vol["token"][:-1] + ("0" if vol["token"][-1] != "0" else "1")
    assert (
        httpx.get(
            api.url + url, params={"path": "/"}, headers={"Authorization": f"Bearer {bad_sig}"}
        ).status_code
        == 401
    )
    # A well-signed token whose expiry was pushed forward fails the signature.
    v, exp, sig = vol["token"].split(".")
    forged = f"{v}.{int(exp) + 10**6}.{sig}"
    assert (
        httpx.get(
            api.url + url, params={"path": "/"}, headers={"Authorization": f"Bearer {forged}"}
        ).status_code
        == 401
    )
    # Any token issued for the volume works; X-API-Key does not.
    fresh = http.get(f"/volumes/{vid}").json()["token"]
    assert (
        httpx.get(
            api.url + url, params={"path": "/"}, headers={"Authorization": f"Bearer {fresh}"}
        ).status_code
        == 200
    )
    assert http.get(url, params={"path": "/"}).status_code == 401
    # Another volume's token (same team) is 404.
    second = _create(http, "tokens2", 8)
    assert (
        httpx.get(api.url + url, params={"path": "/"}, headers=_bearer(second)).status_code == 404
    )
    # A deleted volume's token is 404.
    assert http.delete(f"/volumes/{vid}").status_code == 204
    assert httpx.get(api.url + url, params={"path": "/"}, headers=_bearer(vol)).status_code == 404


def test_expired_token_is_401(tmp_path) -> None:
    from tests.integration.api.conftest import _serve

    gen = _serve(f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}", tmp_path, volume_token_ttl_s=1)
    api = next(gen)
    try:
        with httpx.Client(base_url=api.url, headers={"X-API-Key": api.key}) as http:
            vol = _create(http, "short", 8)
            v, exp, _ = vol["token"].split(".")
            import time

            while time.time() < int(exp) + 1:
                time.sleep(0.1)
            r = httpx.get(
                f"{api.url}/volumecontent/{v}/dir", params={"path": "/"}, headers=_bearer(vol)
            )
            assert r.status_code == 401
            assert "expired" in r.json()["message"]
    finally:
        gen.close()


def test_range_reads(api: ApiServer, http: httpx.Client) -> None:
    vol = _create(http, "ranges", 8)
    base = f"/volumecontent/{vol['volumeID']}/file"
    data = bytes(range(256)) * 40
    assert (
        http.put(base, params={"path": "r.bin"}, content=data, headers=_bearer(vol)).status_code
        == 201
    )
    r = httpx.get(
        api.url + base, params={"path": "r.bin"}, headers={**_bearer(vol), "Range": "bytes=10-19"}
    )
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(data)}"
    r = httpx.get(
        api.url + base, params={"path": "r.bin"}, headers={**_bearer(vol), "Range": "bytes=10000-"}
    )
    assert r.status_code == 206 and r.content == data[10000:]
    r = httpx.get(
        api.url + base, params={"path": "r.bin"}, headers={**_bearer(vol), "Range": "bytes=-5"}
    )
    assert r.status_code == 206 and r.content == data[-5:]
    r = httpx.get(
        api.url + base, params={"path": "r.bin"}, headers={**_bearer(vol), "Range": "bytes=99999-"}
    )
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    r = httpx.get(
        api.url + base, params={"path": "r.bin"}, headers={**_bearer(vol), "Range": "pages=1-2"}
    )
    assert r.status_code == 200 and r.content == data


def test_metadata_headers_follow_envds_rules(api: ApiServer, http: httpx.Client) -> None:
    vol = _create(http, "meta", 8)
    base = f"/volumecontent/{vol['volumeID']}"
    r = http.put(
        base + "/file",
        params={"path": "m.txt"},
        content=b"m",
        headers={**_bearer(vol), "X-Metadata-Owner": "me", "X-Metadata-Kind": "note"},
    )
    assert r.status_code == 201 and r.json()["metadata"] == {"owner": "me", "kind": "note"}
    # A new upload replaces the whole set.
    r = http.put(
        base + "/file",
        params={"path": "m.txt"},
        content=b"m2",
        headers={**_bearer(vol), "X-Metadata-Kind": "v2"},
    )
    assert r.json()["metadata"] == {"kind": "v2"}
    assert http.get(base + "/path", params={"path": "m.txt"}, headers=_bearer(vol)).json()[
        "metadata"
    ] == {"kind": "v2"}
    for bad in ({"X-Metadata-K": "caf\u00e9".encode()}, {"X-Metadata-K": "v" * 4100}):
        r = http.put(
            base + "/file",
            params={"path": "bad.txt"},
            content=b"b",
            headers={**_bearer(vol), **bad},
        )
        assert r.status_code == 400, r.text
    assert (
        http.get(base + "/path", params={"path": "bad.txt"}, headers=_bearer(vol)).status_code
        == 404
    )


def test_quota_holds_and_nothing_stored_is_damaged(api: ApiServer, http: httpx.Client) -> None:
    vol = _create(http, "tiny", 16)
    base = f"/volumecontent/{vol['volumeID']}/file"
    keep = os.urandom(4 * MIB)
    assert (
        http.put(base, params={"path": "keep.bin"}, content=keep, headers=_bearer(vol)).status_code
        == 201
    )
    # Overwriting keep.bin with more than fits fails and leaves the old content.
    r = http.put(base, params={"path": "keep.bin"}, content=b"y" * (20 * MIB), headers=_bearer(vol))
    assert r.status_code == 507, r.text
    r = http.put(
        base, params={"path": "other.bin"}, content=b"y" * (20 * MIB), headers=_bearer(vol)
    )
    assert r.status_code == 507
    assert http.get(base, params={"path": "keep.bin"}, headers=_bearer(vol)).content == keep
    listing = http.get(
        f"/volumecontent/{vol['volumeID']}/dir", params={"path": "/"}, headers=_bearer(vol)
    ).json()
    assert [e["name"] for e in listing] == ["keep.bin"]
    # The space of the failed uploads was given back.
    assert (
        http.put(
            base, params={"path": "more.bin"}, content=b"z" * (4 * MIB), headers=_bearer(vol)
        ).status_code
        == 201
    )


@pytest.mark.parametrize(
    "path",
    [
        "..",
        "../x",
        "a/../../x",
        "/../etc/passwd",
        "a/..",
        "x\x00y",
        "new\nline",
        "tab\there",
        "a" * 256 + "/f",
    ],
)
def test_bad_paths_are_400_and_write_nothing(api: ApiServer, http: httpx.Client, path: str) -> None:
    vol = _create(http, "paths", 8)
    vid = vol["volumeID"]
    h = _bearer(vol)
    assert (
        http.put(
            f"/volumecontent/{vid}/file", params={"path": path}, content=b"x", headers=h
        ).status_code
        == 400
    )
    assert (
        http.post(f"/volumecontent/{vid}/dir", params={"path": path}, headers=h).status_code == 400
    )
    assert (
        http.get(f"/volumecontent/{vid}/file", params={"path": path}, headers=h).status_code == 400
    )
    assert (
        http.get(f"/volumecontent/{vid}/path", params={"path": path}, headers=h).status_code == 400
    )
    assert (
        http.delete(f"/volumecontent/{vid}/path", params={"path": path}, headers=h).status_code
        == 400
    )
    assert http.get(f"/volumecontent/{vid}/dir", params={"path": "/"}, headers=h).json() == []


def test_symlinks_never_lead_out(api: ApiServer, http: httpx.Client, tmp_path) -> None:
    vol = _create(http, "links", 8)
    vid = vol["volumeID"]
    h = _bearer(vol)
    mnt = tmp_path / "volumes" / "mnt" / vid
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    os.symlink(str(tmp_path), mnt / "abs")  # absolute, out
    os.symlink("../../../..", mnt / "up")  # relative, climbing out
    os.symlink(str(secret), mnt / "file-out")
    os.mkdir(mnt / "in")
    (mnt / "in" / "ok.txt").write_text("inside")
    os.symlink("in", mnt / "rel-in")  # stays inside: followed
    for path in ("abs/secret.txt", "up/etc/passwd", "file-out"):
        r = http.get(f"/volumecontent/{vid}/file", params={"path": path}, headers=h)
        assert r.status_code == 400 and "outside the volume" in r.json()["message"], (path, r.text)
        assert (
            http.put(
                f"/volumecontent/{vid}/file",
                params={"path": path + "/x" if path != "file-out" else "abs/x"},
                content=b"x",
                headers=h,
            ).status_code
            == 400
        )
        assert (
            http.get(f"/volumecontent/{vid}/dir", params={"path": path}, headers=h).status_code
            == 400
        )
    assert not (tmp_path / "x").exists()
    assert (
        http.get(f"/volumecontent/{vid}/file", params={"path": "rel-in/ok.txt"}, headers=h).text
        == "inside"
    )
    # stat shows a symlink as itself, with its target; removing it removes the link only.
    st = http.get(f"/volumecontent/{vid}/path", params={"path": "file-out"}, headers=h).json()
    assert st["type"] == "symlink" and st["target"] == str(secret)
    assert (
        http.delete(f"/volumecontent/{vid}/path", params={"path": "abs"}, headers=h).status_code
        == 204
    )
    assert secret.read_text() == "host secret"
    # Overwriting a symlink through the API replaces the link, not its target.
    assert (
        http.put(
            f"/volumecontent/{vid}/file", params={"path": "file-out"}, content=b"new", headers=h
        ).status_code
        == 201
    )
    assert secret.read_text() == "host secret"
    # PATCH refuses symlinks (it would otherwise chmod the target).
    os.symlink(str(secret), mnt / "link2")
    r = http.patch(
        f"/volumecontent/{vid}/path", params={"path": "link2"}, json={"mode": 0o777}, headers=h
    )
    assert r.status_code == 400
    assert (secret.stat().st_mode & 0o777) != 0o777


def test_content_operations_and_their_errors(api: ApiServer, http: httpx.Client) -> None:
    vol = _create(http, "ops", 8)
    vid = vol["volumeID"]
    h = _bearer(vol)
    c = f"/volumecontent/{vid}"
    # mkdir without force needs the parent; an existing one is 409 (force: 201).
    assert http.post(c + "/dir", params={"path": "p/q"}, headers=h).status_code == 404
    assert http.post(c + "/dir", params={"path": "p"}, headers=h).status_code == 201
    assert http.post(c + "/dir", params={"path": "p"}, headers=h).status_code == 409
    assert (
        http.post(c + "/dir", params={"path": "p", "force": "true"}, headers=h).status_code == 201
    )
    r = http.post(
        c + "/dir", params={"path": "p/q", "mode": "448", "uid": "7", "gid": "8"}, headers=h
    )
    assert r.status_code == 201 and (r.json()["mode"], r.json()["uid"], r.json()["gid"]) == (
        0o700,
        7,
        8,
    )
    # Uploads create missing parents; a directory cannot be overwritten by a file.
    assert (
        http.put(c + "/file", params={"path": "deep/er/f.txt"}, content=b"1", headers=h).status_code
        == 201
    )
    assert http.put(c + "/file", params={"path": "p"}, content=b"1", headers=h).status_code == 400
    assert http.get(c + "/file", params={"path": "p"}, headers=h).status_code == 400
    assert http.get(c + "/dir", params={"path": "deep/er/f.txt"}, headers=h).status_code == 400
    # Root: listable, stat-able, but never removed, moved or overwritten.
    assert http.get(c + "/path", params={"path": "/"}, headers=h).json()["type"] == "directory"
    assert http.delete(c + "/path", params={"path": "/"}, headers=h).status_code == 400
    assert http.put(c + "/file", params={"path": "/"}, content=b"1", headers=h).status_code == 400
    # Depth.
    assert len(http.get(c + "/dir", params={"path": "/", "depth": "1"}, headers=h).json()) == 2
    assert len(http.get(c + "/dir", params={"path": "/", "depth": "3"}, headers=h).json()) == 5
    for bad in ("0", "-1", "x", "1.5"):
        assert (
            http.get(c + "/dir", params={"path": "/", "depth": bad}, headers=h).status_code == 400
        )
    # Move (hutch's extension).
    r = http.post(c + "/move", params={"path": "deep/er/f.txt", "to": "p/g.txt"}, headers=h)
    assert r.status_code == 200 and r.json()["path"] == "/p/g.txt"
    assert http.get(c + "/file", params={"path": "p/g.txt"}, headers=h).text == "1"
    assert (
        http.post(c + "/move", params={"path": "p/g.txt", "to": "p/q"}, headers=h).status_code
        == 409
    )
    assert (
        http.post(c + "/move", params={"path": "p", "to": "p/q/inside"}, headers=h).status_code
        == 400
    )
    assert http.post(c + "/move", params={"path": "nope", "to": "x"}, headers=h).status_code == 404
    assert (
        http.post(c + "/move", params={"path": "p/g.txt", "to": "../x"}, headers=h).status_code
        == 400
    )
    # Bad query values and bodies.
    for params in (
        {"path": "f", "uid": "-1"},
        {"path": "f", "mode": "abc"},
        {"path": "f", "force": "maybe"},
    ):
        assert http.put(c + "/file", params=params, content=b"1", headers=h).status_code == 400
    assert (
        http.put(
            c + "/file", params={"path": "f", "mode": str(0o4755)}, content=b"1", headers=h
        ).status_code
        == 400
    )
    assert http.get(c + "/path", headers=h).status_code == 400  # no path
    assert (
        http.patch(c + "/path", params={"path": "p"}, json={"mode": "x"}, headers=h).status_code
        == 400
    )
    assert (
        http.patch(c + "/path", params={"path": "p"}, content=b"[]", headers=h).status_code == 400
    )
    assert (
        http.patch(
            c + "/path", params={"path": "missing"}, json={"mode": 0o700}, headers=h
        ).status_code
        == 404
    )
    assert http.delete(c + "/path", params={"path": "missing"}, headers=h).status_code == 404
    assert http.get(c + "/path", params={"path": "missing"}, headers=h).status_code == 404
    # Nothing of the failed calls was written.
    names = sorted(
        e["path"]
        for e in http.get(c + "/dir", params={"path": "/", "depth": "5"}, headers=h).json()
    )
    assert names == ["/deep", "/deep/er", "/p", "/p/g.txt", "/p/q"]


def test_delete_releases_the_mount_and_image(api: ApiServer, http: httpx.Client, tmp_path) -> None:
    vol = _create(http, "gone", 8)
    vid = vol["volumeID"]
    assert vid in _mounts()
    assert (tmp_path / "volumes" / "images" / f"{vid}.ext4").exists()
    assert http.delete("/volumes/gone").status_code == 204
    assert vid not in _mounts()
    assert not (tmp_path / "volumes" / "images" / f"{vid}.ext4").exists()
    losetup = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert vid not in losetup


def test_sdk_on_the_s3_backend(tmp_path, monkeypatch: pytest.MonkeyPatch, request) -> None:
    """The same SDK calls with ``HUTCH_VOLUME_BACKEND=s3`` (moto on loopback)."""
    import uuid

    import boto3

    from tests.integration.api.conftest import _serve
    from tests.integration.volumes.conftest import S3_ENV

    endpoint = request.getfixturevalue("moto_server")
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    bucket = f"hutch-api-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    gen = _serve(
        f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}",
        tmp_path,
        volume_backend="s3",
        volume_s3_bucket=bucket,
        volume_s3_endpoint_url=endpoint,
    )
    api = next(gen)
    try:
        monkeypatch.setenv("E2B_API_URL", api.url)
        monkeypatch.setenv("E2B_API_KEY", api.key)
        monkeypatch.setenv("E2B_VOLUME_API_URL", api.url)
        vol = Volume.create("in-s3")
        vol.write_file("/a/b.txt", "stored in S3")
        assert vol.read_file("/a/b.txt") == "stored in S3"
        assert [e.path for e in vol.list("/", depth=2)] == ["/a", "/a/b.txt"]
        info = httpx.get(f"{api.url}/volumes/in-s3", headers={"X-API-Key": api.key}).json()
        assert info["totalBytes"] == 1024 * MIB and info["usedBytes"] >= 12
        # Objects, not a filesystem: sandboxes cannot mount it.
        r = httpx.post(
            f"{api.url}/sandboxes",
            json={"templateID": "base", "volumeMounts": [{"name": "in-s3", "path": "/mnt"}]},
            headers={"X-API-Key": api.key},
        )
        assert r.status_code == 400 and "cannot mount" in r.json()["message"]
        assert Volume.destroy(vol.volume_id) is True
        keys = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").list_objects_v2(
            Bucket=bucket
        )
        assert keys.get("KeyCount", 0) == 0
    finally:
        gen.close()


async def test_async_sdk_volume(vol_env: ApiServer) -> None:
    from e2b import AsyncVolume

    vol = await AsyncVolume.create("async-vol")
    await vol.write_file("/x/y.txt", "async")
    assert await vol.read_file("/x/y.txt") == "async"
    assert [e.path for e in await vol.list("/", depth=2)] == ["/x", "/x/y.txt"]
    assert (await AsyncVolume.get_info("async-vol")).volume_id == vol.volume_id
    assert await AsyncVolume.destroy(vol.volume_id) is True


def test_sdk_volume_past_the_teams_bytes_quota_is_a_rate_limit(vol_env: ApiServer) -> None:
    from e2b.exceptions import RateLimitException

    with httpx.Client(base_url=vol_env.url, headers={"X-API-Key": vol_env.admin_key}) as admin:
        r = admin.patch("/admin/teams/default/quotas", json={"maxVolumeBytes": 1536 << 20})
        assert r.status_code == 200, r.text
    Volume.create("first")  # the SDK sends no size: the 1024 MiB default
    with pytest.raises(RateLimitException, match="quota maxVolumeBytes"):
        Volume.create("second")
    assert [v.name for v in Volume.list()] == ["first"]
