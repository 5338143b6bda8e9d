"""Stat, ListDir, MakeDir, Move, Remove through the official SDK and plain Connect."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest
from e2b import FileType
from e2b.exceptions import FileNotFoundException, InvalidArgumentException

from tests.conftest import TEST_USER, EnvdProcess
from tests.integration.envd.filesystem.conftest import assert_healthy, unary


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """d/{a.txt (metadata + a foreign xattr), sub/deep/, link -> a.txt, dangling -> nope}."""
    root = tmp_path / "d"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "sub" / "deep" / "bottom.txt").write_text("b")
    (root / "a.txt").write_text("hello")
    os.setxattr(root / "a.txt", "user.e2b.owner-team", b"blue")
    os.setxattr(root / "a.txt", "user.other", b"never shown")
    (root / "link").symlink_to("a.txt")
    (root / "dangling").symlink_to("nope")
    (root / "sub" / "up").symlink_to("..")  # a loop, if followed
    return root


def test_stat_describes_a_file_with_its_metadata(sandbox, tree: Path) -> None:
    info = sandbox.files.get_info(str(tree / "a.txt"))
    assert info.name == "a.txt"
    assert info.type == FileType.FILE
    assert info.path == str(tree / "a.txt")
    assert info.size == 5
    assert info.mode == 0o644
    assert info.permissions == "-rw-r--r--"
    assert (info.owner, info.group) == ("root", "root")
    assert info.modified_time.timestamp() == pytest.approx(os.stat(tree / "a.txt").st_mtime)
    assert info.symlink_target is None
    assert info.metadata == {"owner-team": "blue"}  # user.other is not e2b's


def test_stat_directory_and_raw_fields(envd: EnvdProcess, tree: Path) -> None:
    r = unary(envd, "Stat", {"path": str(tree / "sub")})
    assert r.status_code == 200
    entry = r.json()["entry"]
    assert entry["type"] == "FILE_TYPE_DIRECTORY"
    assert entry["permissions"] == "drwxr-xr-x"
    assert entry["mode"] == 0o755
    assert "isSymlink" not in entry and "symlinkTarget" not in entry
    assert "modifiedTime" in entry


def test_stat_symlink_reports_target_type(envd: EnvdProcess, tree: Path) -> None:
    entry = unary(envd, "Stat", {"path": str(tree / "link")}).json()["entry"]
    assert entry["type"] == "FILE_TYPE_FILE"
    assert entry["isSymlink"] is True
    assert entry["symlinkTarget"] == str(tree / "a.txt")
    assert entry["permissions"].startswith("L")
    assert entry["mode"] == 0o644  # the target's
    assert entry["metadata"] == {"owner-team": "blue"}


def test_stat_dangling_symlink(sandbox, tree: Path) -> None:
    info = sandbox.files.get_info(str(tree / "dangling"))
    assert info.type == FileType.SYMLINK
    assert info.symlink_target == "nope"
    assert sandbox.files.exists(str(tree / "dangling"))


def test_exists_and_missing_path(sandbox, envd: EnvdProcess, tree: Path) -> None:
    assert sandbox.files.exists(str(tree / "a.txt"))
    assert not sandbox.files.exists(str(tree / "missing"))
    with pytest.raises(FileNotFoundException):
        sandbox.files.get_info(str(tree / "missing"))
    r = unary(envd, "Stat", {"path": str(tree / "missing")})
    assert (r.status_code, r.json()["code"]) == (404, "not_found")


def test_list_depth_one_and_two(sandbox, tree: Path) -> None:
    one = sandbox.files.list(str(tree))
    assert [e.name for e in one] == ["a.txt", "dangling", "link", "sub"]
    assert all(e.path == str(tree / e.name) for e in one)
    by_name = {e.name: e for e in one}
    assert by_name["a.txt"].metadata == {"owner-team": "blue"}
    assert by_name["link"].type == FileType.SYMLINK  # SDK shows is_symlink as SYMLINK
    assert by_name["dangling"].type == FileType.SYMLINK
    assert by_name["sub"].type == FileType.DIR

    two = sandbox.files.list(str(tree), depth=2)
    paths = [e.path for e in two]
    assert str(tree / "sub" / "deep") in paths
    assert str(tree / "sub" / "up") in paths
    assert str(tree / "sub" / "deep" / "bottom.txt") not in paths
    # each directory is followed by its own entries
    assert paths.index(str(tree / "sub" / "deep")) == paths.index(str(tree / "sub")) + 1


def test_list_never_follows_symlinked_dirs(envd: EnvdProcess, tree: Path) -> None:
    r = unary(envd, "ListDir", {"path": str(tree), "depth": 50})
    paths = [e["path"] for e in r.json()["entries"]]
    assert str(tree / "sub" / "deep" / "bottom.txt") in paths
    assert not any(p.startswith(str(tree / "sub" / "up") + "/") for p in paths)
    assert len(paths) == len(set(paths))


def test_list_depth_zero_means_one(envd: EnvdProcess, tree: Path) -> None:
    r = unary(envd, "ListDir", {"path": str(tree)})
    assert sorted(e["name"] for e in r.json()["entries"]) == ["a.txt", "dangling", "link", "sub"]


def test_list_errors(envd: EnvdProcess, sandbox, tree: Path) -> None:
    r = unary(envd, "ListDir", {"path": str(tree / "a.txt")})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_argument")
    r = unary(envd, "ListDir", {"path": str(tree / "missing")})
    assert r.json()["code"] == "not_found"
    with pytest.raises(InvalidArgumentException):
        sandbox.files.list(str(tree / "a.txt"))
    assert_healthy(envd)


def test_make_dir_creates_parents_and_reports_existing(sandbox, envd: EnvdProcess, tmp_path):
    target = tmp_path / "x" / "y" / "z"
    assert sandbox.files.make_dir(str(target)) is True
    assert target.is_dir()
    assert sandbox.files.make_dir(str(target)) is False
    r = unary(envd, "MakeDir", {"path": str(target)})
    assert (r.status_code, r.json()["code"]) == (409, "already_exists")
    (tmp_path / "file").write_text("f")
    r = unary(envd, "MakeDir", {"path": str(tmp_path / "file")})
    assert r.json()["code"] == "invalid_argument"
    r = unary(envd, "MakeDir", {"path": str(tmp_path / "file" / "below")})
    assert r.json()["code"] == "invalid_argument"
    assert_healthy(envd)


def test_make_dir_entry_carries_metadata_and_fields(envd: EnvdProcess, tmp_path: Path) -> None:
    r = unary(envd, "MakeDir", {"path": str(tmp_path / "new")})
    entry = r.json()["entry"]
    assert entry["name"] == "new"
    assert entry["type"] == "FILE_TYPE_DIRECTORY"
    assert entry["path"] == str(tmp_path / "new")
    assert entry["owner"] == "root"


def test_make_dir_as_user_is_owned_by_them(sandbox, test_user: pwd.struct_passwd) -> None:
    base = Path(test_user.pw_dir) / f"hutch-fs-{os.getpid()}"
    try:
        assert sandbox.files.make_dir(f"{base.name}/a/b", user=TEST_USER) is True
        for path in (base, base / "a", base / "a" / "b"):
            st = path.stat()
            assert (st.st_uid, st.st_gid) == (test_user.pw_uid, test_user.pw_gid)
        info = sandbox.files.get_info(str(base / "a"), user=TEST_USER)
        assert info.owner == TEST_USER
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_make_dir_as_user_in_a_root_dir_is_owned_by_them(
    sandbox, envd: EnvdProcess, test_user: pwd.struct_passwd
) -> None:
    # E2B's envd acts as root for the user (ADR 12): the user owns what is made for them.
    parent = Path(tempfile.mkdtemp(prefix="hutch-fs-root-"))
    try:
        parent.chmod(0o755)  # root-owned, not writable by others
        assert sandbox.files.make_dir(str(parent / "a" / "b"), user=TEST_USER) is True
        for made in (parent / "a", parent / "a" / "b"):
            assert made.stat().st_uid == test_user.pw_uid, made
        assert parent.stat().st_uid == 0  # what existed is left alone
    finally:
        shutil.rmtree(parent)
    assert_healthy(envd)


def test_rename_moves_and_creates_destination_parents(sandbox, tree: Path) -> None:
    info = sandbox.files.rename(str(tree / "a.txt"), str(tree / "new" / "dir" / "b.txt"))
    assert info.path == str(tree / "new" / "dir" / "b.txt")
    assert info.name == "b.txt"
    assert info.metadata == {"owner-team": "blue"}
    assert not (tree / "a.txt").exists()
    assert (tree / "new" / "dir" / "b.txt").read_text() == "hello"


def test_rename_missing_source_is_not_found(sandbox, envd: EnvdProcess, tree: Path) -> None:
    with pytest.raises(FileNotFoundException):
        sandbox.files.rename(str(tree / "missing"), str(tree / "other"))
    r = unary(envd, "Move", {"source": str(tree / "missing"), "destination": str(tree / "o")})
    assert r.json()["code"] == "not_found"
    assert not (tree / "o").exists()


def test_rename_as_user_into_a_root_dir(envd: EnvdProcess, test_user: pwd.struct_passwd) -> None:
    home = Path(test_user.pw_dir)
    mine = home / f"hutch-mv-{os.getpid()}"
    mine.write_text("m")
    parent = Path(tempfile.mkdtemp(prefix="hutch-fs-root-"))
    try:
        parent.chmod(0o755)
        r = unary(
            envd,
            "Move",
            {"source": str(mine), "destination": str(parent / "new" / "m")},
            user=TEST_USER,
        )
        assert r.status_code == 200, r.text
        assert (parent / "m").exists() is False and (parent / "new" / "m").read_text() == "m"
        assert (parent / "new").stat().st_uid == test_user.pw_uid
    finally:
        mine.unlink(missing_ok=True)
        shutil.rmtree(parent)


def test_remove_file_symlink_and_tree(sandbox, envd: EnvdProcess, tree: Path) -> None:
    sandbox.files.remove(str(tree / "link"))
    assert not (tree / "link").exists() and (tree / "a.txt").exists()
    sandbox.files.remove(str(tree / "dangling"))
    assert not os.path.lexists(tree / "dangling")
    sandbox.files.remove(str(tree / "sub"))
    assert not (tree / "sub").exists()
    sandbox.files.remove(str(tree / "a.txt"))
    assert list(tree.iterdir()) == []
    # Nothing there is success, like rm -rf (E2B's os.RemoveAll): clean up, then start.
    sandbox.files.remove(str(tree / "a.txt"))
    sandbox.files.remove(str(tree / "never" / "was"))
    r = unary(envd, "Remove", {"path": str(tree / "a.txt")})
    assert (r.status_code, r.json()) == (200, {})
    r = unary(envd, "Remove", {"path": "/"})
    assert r.json()["code"] == "invalid_argument"


def test_remove_as_user_of_a_root_file(envd: EnvdProcess, test_user: pwd.struct_passwd) -> None:
    parent = Path(tempfile.mkdtemp(prefix="hutch-fs-root-"))
    try:
        parent.chmod(0o755)
        (parent / "f").write_text("f")
        (parent / "tree" / "deep").mkdir(parents=True)
        r = unary(envd, "Remove", {"path": str(parent / "f")}, user=TEST_USER)
        assert (r.status_code, r.json()) == (200, {})
        r = unary(envd, "Remove", {"path": str(parent / "tree")}, user=TEST_USER)
        assert (r.status_code, r.json()) == (200, {})
        assert list(parent.iterdir()) == []
    finally:
        shutil.rmtree(parent)


def test_relative_paths_resolve_against_home(sandbox, test_user: pwd.struct_passwd) -> None:
    name = f"hutch-rel-{os.getpid()}"
    try:
        assert sandbox.files.make_dir(name, user=TEST_USER)
        info = sandbox.files.get_info(name, user=TEST_USER)
        assert info.path == os.path.join(test_user.pw_dir, name)
    finally:
        shutil.rmtree(os.path.join(test_user.pw_dir, name), ignore_errors=True)


async def test_async_sdk_round_trip(async_sandbox, tree: Path) -> None:
    files = async_sandbox.files
    assert await files.exists(str(tree / "a.txt"))
    assert not await files.exists(str(tree / "missing"))
    assert [e.name for e in await files.list(str(tree))] == ["a.txt", "dangling", "link", "sub"]
    assert await files.make_dir(str(tree / "n1" / "n2"))
    assert not await files.make_dir(str(tree / "n1" / "n2"))
    moved = await files.rename(str(tree / "a.txt"), str(tree / "n1" / "a.txt"))
    assert moved.metadata == {"owner-team": "blue"}
    assert (await files.get_info(str(tree / "n1" / "a.txt"))).size == 5
    await files.remove(str(tree / "n1"))
    with pytest.raises(FileNotFoundException):
        await files.get_info(str(tree / "n1"))


@pytest.mark.parametrize(
    ("method", "body", "content_type"),
    [
        ("Stat", b"{not json", "application/json"),
        ("Stat", b'{"path": 5}', "application/json"),
        ("ListDir", b'{"depth": "deep"}', "application/json"),
        ("ListDir", b"\xff\xff\xff", "application/proto"),
        ("MakeDir", b"[]", "application/json"),
    ],
)
def test_malformed_bodies_are_invalid_argument(
    envd: EnvdProcess, method: str, body: bytes, content_type: str
) -> None:
    r = unary(envd, method, body, headers={"Content-Type": content_type})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_argument"
    assert_healthy(envd)


def test_bad_paths_and_users_get_precise_errors(envd: EnvdProcess) -> None:
    r = unary(envd, "Stat", {"path": "/tmp/a\u0000b"})
    assert r.json()["code"] == "invalid_argument"
    r = unary(envd, "Stat", {"path": "~nobody-here/x"})
    assert r.json()["code"] == "invalid_argument"
    r = unary(envd, "Stat", {"path": "/"}, user="no-such-user-xyz")
    assert r.json()["code"] == "unauthenticated"
    assert_healthy(envd)
