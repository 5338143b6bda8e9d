"""Pure parts of rootfs: overlay option strings and mountinfo decoding."""

from __future__ import annotations

from pathlib import Path

import pytest

from hutch.node import rootfs
from hutch.shared.errors import InvalidArgumentError


def test_overlay_options_joins_lowers_top_first():
    opts = rootfs.overlay_options(
        [Path("/t/a"), Path("/t/b")], upper=Path("/s/upper"), work=Path("/s/work")
    )
    assert opts == "lowerdir=/t/a:/t/b,upperdir=/s/upper,workdir=/s/work"


@pytest.mark.parametrize("bad", ["/t/a:b", "/t/a,b", "relative", "/t/nl\n"])
def test_overlay_options_rejects_unusable_paths(bad):
    with pytest.raises(InvalidArgumentError):
        rootfs.overlay_options([Path(bad)], upper=Path("/s/u"), work=Path("/s/w"))


def test_overlay_options_rejects_empty_lower_and_overlong_options():
    with pytest.raises(InvalidArgumentError):
        rootfs.overlay_options([], upper=Path("/s/u"), work=Path("/s/w"))
    many = [Path(f"/templates/layer-{i:04d}") for i in range(300)]
    with pytest.raises(InvalidArgumentError, match="one page"):
        rootfs.overlay_options(many, upper=Path("/s/u"), work=Path("/s/w"))


def test_unescape_decodes_mountinfo_octal():
    assert rootfs._unescape(r"/tmp/a\040b\011c\134d") == "/tmp/a b\tc\\d"
    assert rootfs._unescape("/plain") == "/plain"
    assert rootfs._unescape("/trailing\\") == "/trailing\\"


def test_rootfs_dir_is_under_the_sandbox_dir():
    assert rootfs.rootfs_dir(Path("/var/lib/hutch/sandboxes/x")) == Path(
        "/var/lib/hutch/sandboxes/x/rootfs"
    )


def test_find_mounts_under_sees_proc():
    # /proc is mounted in every mount namespace the tests run in.
    assert Path("/proc") in rootfs.find_mounts_under(Path("/proc"))
    assert rootfs.is_mounted(Path("/proc"))
    assert not rootfs.is_mounted(Path("/proc/self"))
