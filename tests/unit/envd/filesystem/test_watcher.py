"""Pure parts of watcher.py: inotify mask mapping and network-filesystem detection."""

from __future__ import annotations

import pytest

from hutch.envd.filesystem import watcher
from hutch.envd.filesystem.watcher import EventKind, filesystem_type, is_network_filesystem

MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:40 / /mnt/nfs rw - nfs4 server:/export rw
41 27 0:41 / /home/user/my\\040share rw - cifs //srv/share rw
42 27 0:42 / /mnt/sshfs rw - fuse.sshfs user@host:/ rw
43 40 0:43 / /mnt/nfs/local rw - tmpfs tmpfs rw
44 27 0:44 / /mnt/nfsish rw - ext4 /dev/vdb rw
"""


@pytest.mark.parametrize(
    ("path", "fs_type"),
    [
        ("/", "ext4"),
        ("/home/user", "ext4"),
        ("/mnt/nfs", "nfs4"),
        ("/mnt/nfs/deeper/dir", "nfs4"),
        ("/mnt/nfs/local/x", "tmpfs"),
        ("/mnt/nfsish", "ext4"),  # a prefix of the name is not a parent directory
        ("/home/user/my share/docs", "cifs"),
        ("/mnt/sshfs", "fuse.sshfs"),
    ],
)
def test_filesystem_type_picks_the_innermost_mount(path: str, fs_type: str) -> None:
    assert filesystem_type(path, mountinfo=MOUNTINFO) == fs_type


def test_later_mounts_shadow_earlier_ones_on_the_same_point() -> None:
    stacked = MOUNTINFO + "50 27 0:50 / /mnt/nfs rw - ext4 /dev/vdc rw\n"
    assert filesystem_type("/mnt/nfs/x", mountinfo=stacked) == "ext4"


@pytest.mark.parametrize(
    ("fs_type", "network"),
    [
        ("nfs", True),
        ("nfs4", True),
        ("cifs", True),
        ("smb3", True),
        ("fuse", True),
        ("fuse.sshfs", True),
        ("fuseblk", True),
        ("ext4", False),
        ("tmpfs", False),
        ("overlay", False),
        (None, False),
    ],
)
def test_is_network_filesystem(fs_type: str | None, network: bool) -> None:
    assert is_network_filesystem(fs_type) is network


@pytest.mark.parametrize(
    ("mask", "kinds"),
    [
        (watcher.IN_CREATE, [EventKind.CREATE]),
        (watcher.IN_MOVED_TO, [EventKind.CREATE]),
        (watcher.IN_MODIFY, [EventKind.WRITE]),
        (watcher.IN_DELETE, [EventKind.REMOVE]),
        (watcher.IN_MOVED_FROM, [EventKind.RENAME]),
        (watcher.IN_ATTRIB, [EventKind.CHMOD]),
        (watcher.IN_CREATE | watcher.IN_ISDIR, [EventKind.CREATE]),
        (watcher.IN_ATTRIB | watcher.IN_MODIFY, [EventKind.CHMOD, EventKind.WRITE]),
        (0x20, []),  # IN_OPEN is not an event clients see
    ],
)
def test_inotify_masks_map_like_e2b(mask: int, kinds: list[EventKind]) -> None:
    assert watcher._kinds(mask) == kinds
