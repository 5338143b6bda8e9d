"""A sandbox disk leaves the node's reserve free (issue 19: a burst of 100 creates).

Without it a burst allocated the node's disk to its last byte and the node's own writes
(the next sandbox's directory, the api's SQLite commit) met ENOSPC as 500s. The host's
free space is faked (the logic under test is the admission); reaching ``mkfs.ext4`` means
the image was allocated.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hutch.node import disk
from hutch.shared.errors import InsufficientStorageError

MIB = 1 << 20


class Allocated(Exception):
    """The image was allocated and mkfs.ext4 would run."""


def fake_host(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    monkeypatch.setattr(disk, "free_bytes", lambda path: free)

    def mkfs(*args: object, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        raise Allocated

    monkeypatch.setattr(disk.subprocess, "run", mkfs)


def test_a_disk_that_would_eat_the_reserve_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_host(monkeypatch, free=16 * MIB + disk.RESERVE_BYTES - 1)
    with pytest.raises(InsufficientStorageError, match="no room on the node for a 16 MiB"):
        disk.create_disk(tmp_path, size_mb=16)
    assert not disk.image_path(tmp_path).exists()


def test_a_disk_that_leaves_the_reserve_is_allocated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_host(monkeypatch, free=16 * MIB + disk.RESERVE_BYTES)
    with pytest.raises(Allocated):
        disk.create_disk(tmp_path, size_mb=16)
    assert not disk.image_path(tmp_path).exists()
