"""rootfs: real overlayfs mounts under tmp_path, always unmounted by a finalizer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hutch.node import rootfs
from hutch.shared.errors import AlreadyExistsError, InvalidArgumentError

pytestmark = pytest.mark.root


@pytest.fixture
def sandbox_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sb"
    path.mkdir()
    yield path
    for mount in rootfs.find_mounts_under(tmp_path):
        rootfs.unmount_rootfs(mount.parent)


@pytest.fixture
def layers(tmp_path: Path) -> tuple[Path, Path]:
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    for layer, text in ((top, "top"), (bottom, "bottom")):
        layer.mkdir()
        (layer / "shared").write_text(text)
        (layer / f"only-{text}").write_text(text)
    return top, bottom


def test_mount_rootfs_stacks_lowers_top_first(sandbox_dir, layers):
    top, bottom = layers
    mounted = rootfs.mount_rootfs(sandbox_dir, lower=f"{top}:{bottom}")
    assert rootfs.is_mounted(mounted)
    assert (mounted / "shared").read_text() == "top"
    assert (mounted / "only-bottom").read_text() == "bottom"
    assert rootfs.find_mounts_under(sandbox_dir) == [mounted]


def test_mount_rootfs_writes_go_to_upper(sandbox_dir, layers):
    top, bottom = layers
    mounted = rootfs.mount_rootfs(sandbox_dir, lower=[top, bottom])
    (mounted / "new").write_text("x")
    (mounted / "shared").unlink()
    assert (rootfs.upper_dir(sandbox_dir) / "new").read_text() == "x"
    assert (top / "shared").read_text() == "top"


def test_mount_rootfs_twice_is_already_exists(sandbox_dir, layers):
    rootfs.mount_rootfs(sandbox_dir, lower=[layers[0]])
    with pytest.raises(AlreadyExistsError):
        rootfs.mount_rootfs(sandbox_dir, lower=[layers[0]])


def test_mount_rootfs_missing_lower_is_invalid(sandbox_dir, tmp_path):
    with pytest.raises(InvalidArgumentError):
        rootfs.mount_rootfs(sandbox_dir, lower=[tmp_path / "absent"])
    assert rootfs.find_mounts_under(sandbox_dir) == []


def test_unmount_rootfs_is_idempotent_and_detaches_busy_mounts(sandbox_dir, layers):
    mounted = rootfs.mount_rootfs(sandbox_dir, lower=[layers[0]])
    with open(mounted / "shared") as held:  # an open file makes a plain umount EBUSY
        rootfs.unmount_rootfs(sandbox_dir)
        assert not rootfs.is_mounted(mounted)
        assert held.read() == "top"  # the detached mount lives on for its last user
    rootfs.unmount_rootfs(sandbox_dir)


def test_remove_rootfs_deletes_upper_and_keeps_the_template(sandbox_dir, layers):
    mounted = rootfs.mount_rootfs(sandbox_dir, lower=[layers[0]])
    (mounted / "scratch").write_text("x")
    rootfs.remove_rootfs(sandbox_dir)
    assert sorted(p.name for p in sandbox_dir.iterdir()) == []
    assert (layers[0] / "shared").read_text() == "top"
    rootfs.remove_rootfs(sandbox_dir)  # nothing left: still fine


def test_find_mounts_under_decodes_spaces(tmp_path, layers):
    odd = tmp_path / "with space"
    odd.mkdir()
    try:
        mounted = rootfs.mount_rootfs(odd, lower=[layers[0]])
        assert rootfs.find_mounts_under(tmp_path) == [mounted]
    finally:
        rootfs.unmount_rootfs(odd)
