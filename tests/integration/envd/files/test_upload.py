"""``POST /files``: SDK writes (every data kind, sync and async), ownership, atomicity, errors."""

from __future__ import annotations

import gzip
import io
import json
import os
import pwd
import socket
import time
from pathlib import Path

import httpx
import pytest
from e2b import InvalidArgumentException, NotEnoughSpaceException
from e2b.exceptions import AuthenticationException

from tests.conftest import EnvdProcess
from tests.integration.envd.files.conftest import assert_healthy, leftovers


def test_write_every_data_kind(sbx, work: Path) -> None:
    info = sbx.files.write(str(work / "s.txt"), "héllo")
    assert (info.name, info.path, info.type.value) == ("s.txt", str(work / "s.txt"), "file")
    assert (work / "s.txt").read_text() == "héllo"
    sbx.files.write(str(work / "b.bin"), b"\x00\x01\x02")
    assert (work / "b.bin").read_bytes() == b"\x00\x01\x02"
    big = os.urandom(5 * 1024 * 1024 + 3)
    sbx.files.write(str(work / "f.bin"), io.BytesIO(big))  # octet-stream, streamed
    assert (work / "f.bin").read_bytes() == big
    sbx.files.write(str(work / "t.txt"), io.StringIO("text io"))
    assert (work / "t.txt").read_text() == "text io"
    sbx.files.write(str(work / "i.bin"), (bytes([i]) * 70_000 for i in range(20)))
    assert (work / "i.bin").read_bytes() == b"".join(bytes([i]) * 70_000 for i in range(20))
    sbx.files.write(str(work / "m.bin"), io.BytesIO(big), use_octet_stream=False)  # multipart
    assert (work / "m.bin").read_bytes() == big
    sbx.files.write(str(work / "g.bin"), big, gzip=True)
    assert (work / "g.bin").read_bytes() == big
    sbx.files.write(str(work / "empty"), b"")
    assert (work / "empty").read_bytes() == b""
    assert leftovers(work) == []


def test_write_files_in_one_multipart_request(sbx, work: Path) -> None:
    entries = [{"path": str(work / f"d{i % 3}" / f"f{i}"), "data": f"file {i}"} for i in range(12)]
    infos = sbx.files.write_files(entries)
    assert [i.path for i in infos] == [e["path"] for e in entries]
    for e in entries:
        assert Path(e["path"]).read_text() == e["data"]


async def test_async_write_kinds(files_sdk_env: EnvdProcess, work: Path) -> None:
    from e2b import AsyncSandbox

    sbx = await AsyncSandbox.create()
    await sbx.files.write(str(work / "a.txt"), "async")
    assert (work / "a.txt").read_text() == "async"

    async def chunks():
        for i in range(10):
            yield bytes([65 + i]) * 100_000

    await sbx.files.write(str(work / "it.bin"), chunks(), gzip=True)
    assert (work / "it.bin").read_bytes() == b"".join(bytes([65 + i]) * 100_000 for i in range(10))
    infos = await sbx.files.write_files(
        [
            {"path": str(work / "x" / "1"), "data": b"1"},
            {"path": str(work / "x" / "2"), "data": b"2"},
        ]
    )
    assert [i.name for i in infos] == ["1", "2"]


def test_relative_and_home_paths(sbx) -> None:
    name = f"hutch-write-{os.getpid()}"
    home = Path(pwd.getpwnam("root").pw_dir)
    try:
        info = sbx.files.write(f"{name}/rel.txt", "r")
        assert info.path == str(home / name / "rel.txt")
        assert (home / name / "rel.txt").read_text() == "r"
        sbx.files.write(f"~/{name}/tilde.txt", "t")
        assert (home / name / "tilde.txt").read_text() == "t"
    finally:
        for f in (home / name).glob("*"):
            f.unlink()
        (home / name).rmdir()


def test_overwrite_is_atomic_and_keeps_mode(sbx, work: Path) -> None:
    target = work / "script.sh"
    target.write_text("old")
    target.chmod(0o750)
    old_inode = target.stat().st_ino
    reader = open(target, "rb")  # noqa: SIM115 - a reader holding the old file sees the old content
    sbx.files.write(str(target), "new")
    assert target.read_text() == "new"
    assert reader.read() == b"old"
    reader.close()
    assert target.stat().st_ino != old_inode
    assert target.stat().st_mode & 0o777 == 0o750
    sbx.files.write(str(work / "fresh"), "x")
    assert (work / "fresh").stat().st_mode & 0o777 == 0o644


def test_write_through_symlink(sbx, work: Path) -> None:
    (work / "real").write_text("old")
    (work / "link").symlink_to(work / "real")
    sbx.files.write(str(work / "link"), "new")
    assert (work / "link").is_symlink()
    assert (work / "real").read_text() == "new"


def test_write_as_user_owns_file_and_parents(sbx, shared_dir: Path, test_user) -> None:
    target = shared_dir / "mine" / "a" / "b" / "c.txt"
    info = sbx.files.write(str(target), "mine", user=test_user.pw_name)
    assert info.path == str(target)
    for p in (shared_dir / "mine" / "a", shared_dir / "mine" / "a" / "b", target):
        st = p.stat()
        assert (st.st_uid, st.st_gid) == (test_user.pw_uid, test_user.pw_gid), p
    assert (shared_dir / "mine" / "a").stat().st_mode & 0o777 == 0o755
    home = Path(test_user.pw_dir)
    sbx.files.write("hutch-upload-test.txt", "home", user=test_user.pw_name)
    try:
        assert (home / "hutch-upload-test.txt").stat().st_uid == test_user.pw_uid
    finally:
        (home / "hutch-upload-test.txt").unlink()


def test_write_as_user_in_a_root_dir_is_owned_by_them(
    sbx, files_envd: EnvdProcess, shared_dir: Path, test_user
) -> None:
    # E2B's envd writes as root for the user and chowns to them (ADR 12).
    roots = shared_dir / "roots"
    (roots / "theirs.txt").write_text("root's")
    infos = sbx.files.write_files(
        [
            {"path": str(roots / "new.txt"), "data": "n"},
            {"path": str(roots / "sub" / "new.txt"), "data": "s"},
            {"path": str(roots / "theirs.txt"), "data": "replaced"},
        ],
        user=test_user.pw_name,
    )
    assert [i.path for i in infos] == [
        str(roots / "new.txt"),
        str(roots / "sub" / "new.txt"),
        str(roots / "theirs.txt"),
    ]
    for made in (roots / "new.txt", roots / "sub", roots / "sub" / "new.txt", roots / "theirs.txt"):
        st = made.stat()
        assert (st.st_uid, st.st_gid) == (test_user.pw_uid, test_user.pw_gid), made
    assert (roots / "theirs.txt").read_text() == "replaced"
    assert roots.stat().st_uid == 0
    assert leftovers(roots) == []


def test_write_unknown_user_is_401(sbx, work: Path) -> None:
    with pytest.raises(AuthenticationException):
        sbx.files.write(str(work / "x"), "x", user="no-such-user-xyz")
    assert not (work / "x").exists()


def _post(envd: EnvdProcess, **kw) -> httpx.Response:
    return httpx.post(envd.url + "/files", **kw)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"content": b"x", "headers": {"Content-Type": "application/octet-stream"}}, "path"),
        ({"content": b"x", "headers": {"Content-Type": "multipart/form-data"}}, "boundary"),
        (
            {
                "content": (
                    b'--b\r\nContent-Disposition: form-data; name="file"; filename="{P}"\r\n\r\nabc'
                ),
                "headers": {"Content-Type": "multipart/form-data; boundary=b"},
            },
            "final boundary",
        ),
        (
            {"content": b"garbage", "headers": {"Content-Type": "multipart/form-data; boundary=b"}},
            "multipart",
        ),
        ({"files": [("other", ("x", b"x"))]}, "no part named 'file'"),
        ({"files": [("file", ("", b"x"))]}, "no filename"),
        ({"files": [("file", ("{P}", b"x")), ("file", ("{P}", b"y"))]}, "named twice"),
        (
            {
                "content": b"x",
                "params": {"path": "{P}"},
                "headers": {"Content-Type": "application/octet-stream", "Content-Encoding": "br"},
            },
            "Content-Encoding",
        ),
        (
            {
                "content": b"not gzip at all",
                "params": {"path": "{P}"},
                "headers": {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"},
            },
            "gzip",
        ),
        (
            {
                "content": gzip.compress(os.urandom(300_000))[:-100],
                "params": {"path": "{P}"},
                "headers": {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"},
            },
            "truncated",
        ),
    ],
)
def test_bad_uploads_are_400_and_leave_nothing(
    files_envd: EnvdProcess, work: Path, kwargs, needle
) -> None:
    target = str(work / "t.bin")

    def fill(value):
        if isinstance(value, str):
            return value.replace("{P}", target)
        if isinstance(value, bytes):
            return value.replace(b"{P}", target.encode())
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(fill(v) for v in value)
        return value

    r = _post(files_envd, **fill(kwargs))
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"]
    assert not Path(target).exists()
    assert leftovers(work) == []
    assert_healthy(files_envd)


def test_failed_upload_leaves_existing_file_unchanged(files_envd: EnvdProcess, work: Path) -> None:
    (work / "keep").write_bytes(b"original")
    body = gzip.compress(os.urandom(2_000_000))
    r = _post(
        files_envd,
        params={"path": str(work / "keep")},
        content=body[:1_000_000] + b"\x00" * 10,
        headers={"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 400
    assert (work / "keep").read_bytes() == b"original"
    assert leftovers(work) == []


def test_gzip_multipart_body(files_envd: EnvdProcess, work: Path) -> None:
    req = httpx.Request(
        "POST", files_envd.url + "/files", files=[("file", (str(work / "gz.txt"), b"zipped"))]
    )
    body = gzip.compress(req.read())
    r = _post(
        files_envd,
        content=body,
        headers={"Content-Type": req.headers["content-type"], "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200, r.text
    assert (work / "gz.txt").read_bytes() == b"zipped"


def test_upload_answer_has_metadata_only_when_the_file_has_some(
    files_envd: EnvdProcess, work: Path
) -> None:
    plain = _post(
        files_envd,
        params={"path": str(work / "plain")},
        content=b"x",
        headers={"Content-Type": "application/octet-stream"},
    )
    # E2B's Go EntryInfo: metadata omitempty, fields in Go's order.
    assert plain.text == json.dumps(
        [{"name": "plain", "path": str(work / "plain"), "type": "file"}], separators=(",", ":")
    )
    tagged = _post(
        files_envd,
        params={"path": str(work / "plain")},
        content=b"y",
        headers={"Content-Type": "application/octet-stream", "X-Metadata-Team": "blue"},
    )
    assert list(tagged.json()[0]) == ["metadata", "name", "path", "type"]
    assert tagged.json()[0]["metadata"] == {"team": "blue"}
    req = httpx.Request(
        "POST",
        files_envd.url + "/files",
        files=[("file", (str(work / "m1"), b"1")), ("file", (str(work / "m2"), b"2"))],
    )
    multi = _post(
        files_envd, content=req.read(), headers={"Content-Type": req.headers["content-type"]}
    )
    assert multi.json() == [
        {"name": "m1", "path": str(work / "m1"), "type": "file"},
        {"name": "m2", "path": str(work / "m2"), "type": "file"},
    ]


def test_path_is_directory_is_400(sbx, work: Path) -> None:
    (work / "dir").mkdir()
    with pytest.raises(InvalidArgumentException, match="directory"):
        sbx.files.write(str(work / "dir"), "x")
    (work / "file").write_text("f")
    with pytest.raises(InvalidArgumentException, match="not a directory"):
        sbx.files.write(str(work / "file" / "below"), "x")
    assert (work / "file").read_text() == "f"


def test_client_disconnect_removes_temp_file(files_envd: EnvdProcess, work: Path) -> None:
    target = work / "cut.bin"
    request = (
        f"POST /files?path={target} HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {50 * 1024 * 1024}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", files_envd.port)) as s:
        s.sendall(request)
        for _ in range(8):
            s.sendall(b"x" * 512 * 1024)
        # Wait until envd has created the temp file, so the disconnect happens mid-upload.
        deadline = time.monotonic() + 20
        while not leftovers(work) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert leftovers(work), "the upload never started"
    deadline = time.monotonic() + 20
    while leftovers(work) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(work) == []
    assert not target.exists()
    assert_healthy(files_envd)


def test_out_of_space_is_507_and_leaves_nothing(sbx, files_envd: EnvdProcess, mount_fs) -> None:
    small = mount_fs("tmpfs", "size=1m")
    (small / "keep").write_bytes(b"k" * 1000)
    with pytest.raises(NotEnoughSpaceException):
        sbx.files.write(str(small / "big"), os.urandom(2 * 1024 * 1024))
    with pytest.raises(NotEnoughSpaceException):
        sbx.files.write(str(small / "keep"), io.BytesIO(os.urandom(2 * 1024 * 1024)))
    r = _post(
        files_envd,
        params={"path": str(small / "big")},
        content=os.urandom(2 * 1024 * 1024),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 507 and r.json()["code"] == 507
    assert sorted(p.name for p in small.iterdir()) == ["keep"]
    assert (small / "keep").read_bytes() == b"k" * 1000
    assert_healthy(files_envd)
    sbx.files.write(str(small / "fits"), b"ok")  # space is back: the failed temp files are gone
    assert (small / "fits").read_bytes() == b"ok"


def test_upload_and_download_urls_with_token(sandbox, envd: EnvdProcess, tmp_path: Path) -> None:
    from e2b.sandbox.signature import get_signature

    assert httpx.post(envd.url + "/init", json={"accessToken": "tok3n"}).status_code == 204
    sandbox._SandboxBase__envd_access_token = "tok3n"  # what a secured create would have set
    target = str(tmp_path / "signed.txt")
    url = sandbox.upload_url(target)
    assert "signature=" in url
    r = httpx.post(url, files=[("file", ("ignored-name", b"signed upload"))])
    assert r.status_code == 200, r.text
    assert r.json()[0]["path"] == target
    assert Path(target).read_bytes() == b"signed upload"
    down = sandbox.download_url(target, use_signature_expiration=60)
    assert httpx.get(down).content == b"signed upload"
    # A read signature does not allow writing, and a bare request needs the token.
    assert httpx.post(down, files=[("file", ("x", b"x"))]).status_code == 401
    assert httpx.get(envd.url + "/files", params={"path": target}).status_code == 401
    sig = get_signature(target, "read", None, "tok3n", None)
    ok = httpx.get(envd.url + "/files", params={"path": target, "signature": sig["signature"]})
    assert ok.content == b"signed upload"
    assert (
        httpx.get(
            envd.url + "/files", params={"path": target}, headers={"X-Access-Token": "tok3n"}
        ).content
        == b"signed upload"
    )
