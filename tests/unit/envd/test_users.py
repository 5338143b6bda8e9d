"""Path resolution of ``envd/users.py``: what a path in a request means for a user."""

from __future__ import annotations

import pytest

from hutch.envd.users import User, resolve_path
from hutch.shared.errors import InvalidArgumentError

ALICE = User(name="alice", uid=1000, gid=1000, home="/home/alice", shell="/bin/sh", groups=(1000,))


@pytest.mark.parametrize(
    ("path", "workdir", "expected"),
    [
        ("/etc/hosts", None, "/etc/hosts"),
        ("notes.txt", None, "/home/alice/notes.txt"),
        ("a/../b", None, "/home/alice/b"),
        ("~", None, "/home/alice"),
        ("~/x/y", None, "/home/alice/x/y"),
        ("", None, "/home/alice"),
        ("", "/work", "/work"),
        ("../../etc/passwd", None, "/etc/passwd"),
        ("//etc//hosts/", None, "/etc/hosts"),
    ],
)
def test_resolve_path(path: str, workdir: str | None, expected: str) -> None:
    assert resolve_path(path, user=ALICE, default_workdir=workdir) == expected


@pytest.mark.parametrize("path", ["~bob/x", "a\x00b"])
def test_resolve_path_rejects(path: str) -> None:
    with pytest.raises(InvalidArgumentError):
        resolve_path(path, user=ALICE)
