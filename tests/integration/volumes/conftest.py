"""One backend test suite, run against every ``VolumeBackend`` (``backend`` fixture)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hutch.volumes.base import VolumeBackend
from tests.conftest import machine_lacks

BACKENDS = ["local"]


async def _local(tmp_path: Path) -> VolumeBackend:
    if os.geteuid() != 0:
        machine_lacks("the local volume backend needs root (loop mounts)")
    if shutil.which("mkfs.ext4") is None:
        machine_lacks("mkfs.ext4 (e2fsprogs) is not installed")
    from hutch.volumes.local import LocalVolumeBackend

    return LocalVolumeBackend(tmp_path / "volumes", reserve_bytes=0)


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VolumeBackend]:
    made: VolumeBackend = await {"local": _local}[request.param](tmp_path)
    created: list[str] = []
    orig_create = made.create

    async def create(volume_id: str, *, quota_bytes: int) -> None:
        await orig_create(volume_id, quota_bytes=quota_bytes)
        created.append(volume_id)

    made.create = create  # type: ignore[method-assign]
    try:
        yield made
    finally:
        for vid in created:
            with contextlib.suppress(Exception):  # best-effort cleanup of test volumes
                await made.delete(vid)
        await made.aclose()
        await asyncio.sleep(0)
