"""``envd/filesystem/permissions.py`` against real files, modes and a real non-root account."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hutch.envd.filesystem.permissions import check_read, check_write
from hutch.envd.users import get_user
from hutch.shared.errors import PermissionDeniedError


@pytest.fixture
def tree(test_user: pwd.struct_passwd) -> Iterator[Path]:
    # Not pytest's tmp_path: its ancestors are 0700, which no other user can search.
    tmp_path = Path(tempfile.mkdtemp(prefix="hutch-perm-", dir="/tmp"))
    tmp_path.chmod(0o755)
    (tmp_path / "mine").mkdir()
    os.chown(tmp_path / "mine", test_user.pw_uid, test_user.pw_gid)
    (tmp_path / "roots").mkdir(mode=0o755)
    (tmp_path / "roots" / "f").write_text("x")
    (tmp_path / "secret").write_text("s")
    (tmp_path / "secret").chmod(0o600)
    (tmp_path / "sticky").mkdir()
    (tmp_path / "sticky").chmod(0o1777)
    (tmp_path / "sticky" / "rootfile").write_text("r")
    (tmp_path / "sticky" / "rootfile").chmod(0o666)
    try:
        yield tmp_path
    finally:
        shutil.rmtree(tmp_path)


def test_user_may_write_in_own_dir_and_create_parents(tree: Path, test_user) -> None:
    user = get_user(test_user.pw_name)
    check_write(str(tree / "mine" / "a" / "b" / "c.txt"), user)


def test_user_may_not_write_in_root_dir_or_replace_root_file(tree: Path, test_user) -> None:
    user = get_user(test_user.pw_name)
    for target in (tree / "roots" / "new", tree / "roots" / "f", tree / "roots" / "x" / "y"):
        with pytest.raises(PermissionDeniedError):
            check_write(str(target), user)


def test_sticky_dir_protects_other_users_files(tree: Path, test_user) -> None:
    user = get_user(test_user.pw_name)
    check_write(str(tree / "sticky" / "new"), user)
    with pytest.raises(PermissionDeniedError):
        check_write(str(tree / "sticky" / "rootfile"), user)


def test_read_permission(tree: Path, test_user) -> None:
    user = get_user(test_user.pw_name)
    check_read(str(tree / "roots" / "f"), user)
    with pytest.raises(PermissionDeniedError):
        check_read(str(tree / "secret"), user)
    check_read(str(tree / "secret"), get_user("root"))
