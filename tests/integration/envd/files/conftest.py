"""Fixtures for the ``/files`` tests: one envd per module (fast), SDK aimed at it, mounts.

Tests that need their own settings (tiny session TTL, restarts) start their own envd with
``tests.conftest.start_envd``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import EnvdProcess, machine_lacks, start_envd, stop_envd

TEMP_MARKER = ".hutch-upload-"


def leftovers(directory: Path) -> list[str]:
    """envd temp files anywhere under ``directory``."""
    found = []
    for _root, _dirs, files in os.walk(directory):
        found.extend(f for f in files if TEMP_MARKER in f)
    return found


def assert_healthy(envd: EnvdProcess) -> None:
    assert httpx.get(envd.url + "/health").status_code == 204


@pytest.fixture(scope="module")
def files_envd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvdProcess]:
    """One envd shared by a test module; each test works in its own directory."""
    server = start_envd(tmp_path_factory.mktemp("envd"))
    try:
        yield server
    finally:
        stop_envd(server)


@pytest.fixture(scope="module")
def files_sdk_env(files_envd: EnvdProcess) -> Iterator[EnvdProcess]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("E2B_DEBUG", "true")
        mp.setenv("E2B_SANDBOX_URL", files_envd.url)
        mp.setenv("E2B_API_KEY", "e2b_" + "0" * 40)
        yield files_envd


@pytest.fixture(scope="module")
def sbx(files_sdk_env: EnvdProcess):
    """The official sync SDK's ``Sandbox`` on the module's envd."""
    from e2b import Sandbox

    return Sandbox.create()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture
def shared_dir(test_user: pwd.struct_passwd) -> Iterator[Path]:
    """A world-searchable directory (pytest's tmp_path ancestors are 0700) with a user-owned
    ``mine/`` and a root-owned ``roots/``."""
    base = Path(tempfile.mkdtemp(prefix="hutch-files-", dir="/tmp"))
    base.chmod(0o755)
    (base / "mine").mkdir()
    os.chown(base / "mine", test_user.pw_uid, test_user.pw_gid)
    (base / "roots").mkdir(mode=0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base)


def _mount(fstype: str, target: Path, options: str | None) -> None:
    cmd = ["mount", "-t", fstype]
    if options:
        cmd += ["-o", options]
    subprocess.run([*cmd, fstype, str(target)], check=True, capture_output=True)


@pytest.fixture
def mount_fs(tmp_path: Path) -> Iterator:
    """``mount_fs(fstype, options)`` mounts a fresh filesystem under tmp_path (root only)."""
    if os.geteuid() != 0:
        machine_lacks("mounting needs root")
    mounted: list[Path] = []

    def mount(fstype: str, options: str | None = None) -> Path:
        target = tmp_path / f"mnt-{fstype}-{len(mounted)}"
        target.mkdir()
        try:
            _mount(fstype, target, options)
        except subprocess.CalledProcessError as exc:
            machine_lacks(f"cannot mount {fstype}: {exc.stderr.decode(errors='replace').strip()}")
        mounted.append(target)
        target.chmod(0o755)
        return target

    try:
        yield mount
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)
