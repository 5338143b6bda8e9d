"""``GET /files``: SDK reads (text, bytes, stream, gzip), Range, errors, signed URLs."""

from __future__ import annotations

import gzip
import os
import pwd
from pathlib import Path

import httpx
import pytest
from e2b import FileNotFoundException, InvalidArgumentException
from e2b.exceptions import AuthenticationException

from tests.conftest import EnvdProcess
from tests.integration.envd.files.conftest import assert_healthy

BLOB = os.urandom(3 * 1024 * 1024 + 17)  # crosses envd's 1 MiB read chunks


def test_read_text_bytes_and_stream(sbx, work: Path) -> None:
    (work / "t.txt").write_text("héllo\nwörld")
    (work / "b.bin").write_bytes(BLOB)
    assert sbx.files.read(str(work / "t.txt")) == "héllo\nwörld"
    assert bytes(sbx.files.read(str(work / "b.bin"), format="bytes")) == BLOB
    stream = sbx.files.read(str(work / "b.bin"), format="stream")
    assert b"".join(stream) == BLOB


def test_read_gzip_is_compressed_on_the_wire(sbx, files_envd: EnvdProcess, work: Path) -> None:
    data = b"compressible " * 100_000
    (work / "z.txt").write_bytes(data)
    assert bytes(sbx.files.read(str(work / "z.txt"), format="bytes", gzip=True)) == data
    with httpx.stream(
        "GET",
        files_envd.url + "/files",
        params={"path": str(work / "z.txt")},
        headers={"Accept-Encoding": "gzip"},
    ) as r:
        assert r.headers["content-encoding"] == "gzip"
        raw = b"".join(r.iter_raw())
    assert len(raw) < len(data) // 10
    assert gzip.decompress(raw) == data


def test_read_gzip_refused_by_q0_serves_identity(files_envd: EnvdProcess, work: Path) -> None:
    (work / "f").write_bytes(b"abc")
    r = httpx.get(
        files_envd.url + "/files",
        params={"path": str(work / "f")},
        headers={"Accept-Encoding": "gzip;q=0"},
    )
    assert "content-encoding" not in r.headers
    assert r.content == b"abc"


async def test_async_read_and_stream(files_sdk_env: EnvdProcess, work: Path) -> None:
    from e2b import AsyncSandbox

    sbx = await AsyncSandbox.create()
    (work / "b.bin").write_bytes(BLOB)
    assert bytes(await sbx.files.read(str(work / "b.bin"), format="bytes")) == BLOB
    assert bytes(await sbx.files.read(str(work / "b.bin"), format="bytes", gzip=True)) == BLOB
    chunks = [c async for c in await sbx.files.read(str(work / "b.bin"), format="stream")]
    assert b"".join(chunks) == BLOB


def test_download_headers(files_envd: EnvdProcess, work: Path) -> None:
    (work / "name with space.bin").write_bytes(b"12345")
    r = httpx.get(
        files_envd.url + "/files",
        params={"path": str(work / "name with space.bin")},
        headers={"Accept-Encoding": "identity"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == 'inline; filename="name with space.bin"'
    assert r.headers["content-length"] == "5"
    assert r.headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize(
    ("header", "status", "body", "content_range"),
    [
        ("bytes=10-19", 206, BLOB[10:20], f"bytes 10-19/{len(BLOB)}"),
        ("bytes=-5", 206, BLOB[-5:], f"bytes {len(BLOB) - 5}-{len(BLOB) - 1}/{len(BLOB)}"),
        (
            f"bytes={len(BLOB) - 3}-",
            206,
            BLOB[-3:],
            f"bytes {len(BLOB) - 3}-{len(BLOB) - 1}/{len(BLOB)}",
        ),
        (f"bytes=5-{len(BLOB) + 100}", 206, BLOB[5:], f"bytes 5-{len(BLOB) - 1}/{len(BLOB)}"),
        (f"bytes={len(BLOB)}-", 416, None, f"bytes */{len(BLOB)}"),
        ("bytes=-0", 416, None, f"bytes */{len(BLOB)}"),
        ("bytes=0-1,5-6", 200, BLOB, None),  # several ranges: ignored (RFC 9110 allows it)
        ("lines=1-2", 200, BLOB, None),
    ],
)
def test_range(files_envd: EnvdProcess, work: Path, header, status, body, content_range) -> None:
    (work / "b.bin").write_bytes(BLOB)
    r = httpx.get(
        files_envd.url + "/files",
        params={"path": str(work / "b.bin")},
        headers={"Range": header, "Accept-Encoding": "gzip"},
    )
    assert r.status_code == status
    assert r.headers.get("content-range") == content_range
    if body is not None:
        assert r.content == body
    if status == 206:
        assert "content-encoding" not in r.headers  # a range is never compressed
    if status == 416:
        assert r.json()["code"] == 416


def test_read_errors(sbx, files_envd: EnvdProcess, work: Path) -> None:
    with pytest.raises(FileNotFoundException):
        sbx.files.read(str(work / "missing"))
    with pytest.raises(InvalidArgumentException, match="directory"):
        sbx.files.read(str(work))
    with pytest.raises(AuthenticationException):
        sbx.files.read(str(work / "missing"), user="no-such-user-xyz")
    r = httpx.get(files_envd.url + "/files", params={"path": str(work)})
    assert r.status_code == 400 and r.json()["code"] == 400
    assert_healthy(files_envd)


def test_read_relative_path_is_in_home(sbx, files_envd: EnvdProcess) -> None:
    name = f"hutch-read-{os.getpid()}.txt"
    home = Path(pwd.getpwnam("root").pw_dir)
    (home / name).write_text("home")
    try:
        assert sbx.files.read(name) == "home"
        assert sbx.files.read("~/" + name) == "home"
    finally:
        (home / name).unlink()


def test_read_as_user_of_a_root_only_file(
    sbx, files_envd: EnvdProcess, shared_dir: Path, test_user
) -> None:
    # E2B's envd reads as root for the user (ADR 12).
    secret = shared_dir / "roots" / "secret"
    secret.write_text("s")
    secret.chmod(0o600)
    r = httpx.get(
        files_envd.url + "/files", params={"path": str(secret), "username": test_user.pw_name}
    )
    assert (r.status_code, r.text) == (200, "s")
    assert sbx.files.read(str(secret), user=test_user.pw_name) == "s"


def test_default_client_accept_encoding_gets_identity(files_envd: EnvdProcess, work: Path) -> None:
    # httpx (and so the SDK without gzip=True) sends "gzip, deflate" by default: that is no
    # request for compression, and compressing every download would make it CPU-bound.
    data = b"plain " * 1000
    (work / "plain.txt").write_bytes(data)
    with httpx.stream(
        "GET",
        files_envd.url + "/files",
        params={"path": str(work / "plain.txt")},
        headers={"Accept-Encoding": "gzip, deflate"},
    ) as r:
        assert "content-encoding" not in r.headers
        assert r.read() == data
