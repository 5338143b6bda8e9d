"""Fixtures for the envd bundle tests: one real bundle per session, three real root filesystems.

The root filesystems have no Python and, in two of three, no glibc: (a) nothing but the bundle,
(b) busybox-static, (c) musl's loader and libc where Alpine keeps them, plus busybox-static.
The bundle is bind-mounted *read-only* at ENVD_BUNDLE_DIR_IN_SANDBOX in each, as the runtime
does. Every mount and network namespace made here is removed by a finalizer, and nothing here
signals a process it did not start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import hutch
from hutch.node.envd_bundle import BundleInfo, build_envd_bundle
from hutch.node.envd_bundle_files import copy_hutch_subset
from hutch.shared.paths import ENVD_BUNDLE_DIR_IN_SANDBOX
from tests.conftest import machine_lacks, require_for_dir

BUSYBOX = Path("/bin/busybox")
#: Debian's ``musl`` package: the libc that is also musl's dynamic loader.
MUSL_LIBC = Path("/lib/x86_64-linux-musl/libc.so")
ROOTFS_KINDS = ("empty", "busybox", "musl")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "envd bundle tests need root (chroot, bind mounts, network namespaces)"
    for tool, package in (
        ("patchelf", "patchelf"),
        ("strip", "binutils"),
        ("ldd", "libc-bin"),
        ("chroot", "coreutils"),
        ("ip", "iproute2"),
        ("unshare", "util-linux"),
    ):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    require_for_dir(items, Path(__file__).parent, _missing())


@pytest.fixture(scope="session")
def hutch_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of this checkout's hutch package (its envd subset).

    The checkout is a work tree others edit while tests run; building every bundle of the
    session from one snapshot keeps "same inputs" true for the digest tests.
    """
    snapshot = tmp_path_factory.mktemp("hutch-source") / "hutch"
    copy_hutch_subset(Path(hutch.__file__).parent, snapshot.parent)
    return snapshot


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory, hutch_source: Path) -> BundleInfo:
    """The bundle, built once per session from the snapshot and the running Python."""
    return build_envd_bundle(tmp_path_factory.mktemp("envd-bundle") / "bundle", source=hutch_source)


def _bind_readonly(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
    # A read-only bind needs a second step: "mount --bind -o ro" ignores ro on older kernels.
    subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)


def _make_rootfs(root: Path, kind: str) -> None:
    if kind == "empty":
        return
    if not BUSYBOX.is_file():
        machine_lacks("busybox-static is not installed (apt-get install busybox-static)")
    (root / "bin").mkdir()
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in ("sh", "ls", "cat", "wget"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "tmp").mkdir(mode=0o1777)
    if kind == "musl":
        if not MUSL_LIBC.is_file():
            machine_lacks("musl is not installed (apt-get install musl)")
        # Alpine's layout: the loader is the libc, and libc.musl-*.so.1 points at it.
        (root / "lib").mkdir()
        shutil.copy2(MUSL_LIBC, root / "lib" / "ld-musl-x86_64.so.1")
        (root / "lib" / "libc.musl-x86_64.so.1").symlink_to("ld-musl-x86_64.so.1")


@pytest.fixture(scope="session", params=ROOTFS_KINDS)
def rootfs(
    request: pytest.FixtureRequest, bundle: BundleInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A root filesystem of each kind, with the bundle mounted read-only where envd expects it."""
    kind: str = request.param
    root = tmp_path_factory.mktemp(f"rootfs-{kind}")
    _make_rootfs(root, kind)
    target = root / ENVD_BUNDLE_DIR_IN_SANDBOX.lstrip("/")
    _bind_readonly(bundle.path, target)
    try:
        yield root
    finally:
        subprocess.run(["umount", str(target)], check=False)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace with loopback up, deleted afterwards."""
    name = f"hutchbundle-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
