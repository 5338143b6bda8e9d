"""``X-Metadata-*`` on ``POST /files``: stored as ``user.e2b.*`` xattrs, every rule enforced."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.conftest import EnvdProcess
from tests.integration.envd.files.conftest import assert_healthy, leftovers


def e2b_xattrs(path: Path) -> dict[str, str]:
    return {
        n[len("user.e2b.") :]: os.getxattr(path, n).decode()
        for n in os.listxattr(path)
        if n.startswith("user.e2b.")
    }


def test_metadata_is_stored_and_returned(sbx, work: Path) -> None:
    info = sbx.files.write(
        str(work / "m.txt"), "x", metadata={"Owner": "alice", "stage": "raw data"}
    )
    assert info.metadata == {"owner": "alice", "stage": "raw data"}
    assert e2b_xattrs(work / "m.txt") == {"owner": "alice", "stage": "raw data"}


def test_overwrite_replaces_the_set_and_keeps_foreign_xattrs(sbx, work: Path) -> None:
    target = work / "m.txt"
    sbx.files.write(str(target), "1", metadata={"a": "1", "b": "2"})
    os.setxattr(target, "user.other", b"foreign")
    info = sbx.files.write(str(target), "2", metadata={"b": "3", "c": "4"})
    assert info.metadata == {"b": "3", "c": "4"}
    assert e2b_xattrs(target) == {"b": "3", "c": "4"}
    assert os.getxattr(target, "user.other") == b"foreign"
    info = sbx.files.write(str(target), "3")
    assert info.metadata is None  # no headers: the set is cleared
    assert e2b_xattrs(target) == {}
    assert os.getxattr(target, "user.other") == b"foreign"
    assert target.read_text() == "3"


def test_every_file_of_a_multipart_upload_gets_the_set(sbx, work: Path) -> None:
    infos = sbx.files.write_files(
        [{"path": str(work / f"f{i}"), "data": str(i)} for i in range(3)], metadata={"k": "v"}
    )
    assert [i.metadata for i in infos] == [{"k": "v"}] * 3
    for i in range(3):
        assert e2b_xattrs(work / f"f{i}") == {"k": "v"}


def test_first_of_duplicate_headers_wins(files_envd: EnvdProcess, work: Path) -> None:
    r = httpx.post(
        files_envd.url + "/files",
        params={"path": str(work / "d.txt")},
        content=b"x",
        headers=[
            ("Content-Type", "application/octet-stream"),
            ("X-Metadata-Key", "first"),
            ("x-metadata-key", "second"),
            ("X-METADATA-KEY", "third"),
        ],
    )
    assert r.status_code == 200, r.text
    assert r.json()[0]["metadata"] == {"key": "first"}
    assert e2b_xattrs(work / "d.txt") == {"key": "first"}


LONG_KEY = "k" * 247
_VIOLATIONS = [
    ([("X-Metadata-" + LONG_KEY, "v")], LONG_KEY[:32]),
    ([("X-Metadata-Good", "v"), ("X-Metadata-Bad", "caf\xe9".encode("latin-1"))], "'bad'"),
    ([("X-Metadata-Tab", "a\tb")], "'tab'"),
    ([("X-Metadata-", "v")], "empty"),
    ([(f"X-Metadata-k{i}", "v" * 500) for i in range(9)], "exceeds 4096"),
]


@pytest.mark.parametrize(("headers", "needle"), _VIOLATIONS)
def test_rule_violations_are_400_and_write_nothing(
    files_envd: EnvdProcess, work: Path, headers, needle
) -> None:
    existing = work / "existing.txt"
    existing.write_text("unchanged")
    os.setxattr(existing, "user.e2b.keep", b"me")
    for target in (work / "new.txt", existing):
        r = httpx.post(
            files_envd.url + "/files",
            params={"path": str(target)},
            content=b"payload",
            headers=[("Content-Type", "application/octet-stream"), *headers],
        )
        assert r.status_code == 400, r.text
        assert needle in r.json()["message"]
    r = httpx.post(
        files_envd.url + "/files", files=[("file", (str(work / "mp.txt"), b"x"))], headers=headers
    )
    assert r.status_code == 400
    assert not (work / "new.txt").exists() and not (work / "mp.txt").exists()
    assert existing.read_text() == "unchanged"
    assert e2b_xattrs(existing) == {"keep": "me"}
    assert leftovers(work) == []
    assert_healthy(files_envd)


def test_limits_are_inclusive(files_envd: EnvdProcess, work: Path, mount_fs) -> None:
    key = "k" * 246
    # key + value = 4096 bytes exactly: allowed by the rules. tmpfs stores it; ext4 keeps all
    # xattrs of an inode in one block, so there the same set is out of space: 507, no file.
    headers = [
        ("Content-Type", "application/octet-stream"),
        ("X-Metadata-" + key, "v" * (4096 - 246)),
    ]
    tmpfs = mount_fs("tmpfs", "size=4m")
    r = httpx.post(
        files_envd.url + "/files",
        params={"path": str(tmpfs / "max")},
        content=b"x",
        headers=headers,
    )
    assert r.status_code == 200, r.text
    assert e2b_xattrs(tmpfs / "max") == {key: "v" * (4096 - 246)}
    r = httpx.post(
        files_envd.url + "/files", params={"path": str(work / "max")}, content=b"x", headers=headers
    )
    assert r.status_code in (200, 507), r.text
    if r.status_code == 507:
        assert not (work / "max").exists()
        assert leftovers(work) == []


def test_filesystem_without_xattrs_is_best_effort(sbx, files_envd: EnvdProcess, mount_fs) -> None:
    ramfs = mount_fs("ramfs")  # ramfs has no user xattrs (ENOTSUP)
    info = sbx.files.write(str(ramfs / "f.txt"), "stored", metadata={"k": "v"})
    assert (ramfs / "f.txt").read_text() == "stored"
    assert info.metadata is None
    assert "no user xattrs" in files_envd.log()
