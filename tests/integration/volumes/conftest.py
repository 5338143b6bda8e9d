"""One backend test suite, run against every ``VolumeBackend`` (``backend`` fixture): the
local ext4 backend, and the S3 backend against a real ``moto`` server on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from hutch.volumes.base import VolumeBackend
from tests.conftest import free_port, machine_lacks

BACKENDS = ["local", "s3"]

#: moto accepts any credentials; these keep boto3 from looking for real ones.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``moto`` in server mode on a free loopback port; its endpoint URL."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        machine_lacks("moto[server] is not installed (the test extra)")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **S3_ENV},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(url, timeout=1)
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def make_s3_backend(endpoint: str, bucket: str | None = None) -> VolumeBackend:
    """An S3 backend on a fresh bucket of the moto server at ``endpoint``."""
    import boto3

    from hutch.volumes.s3 import S3VolumeBackend

    bucket = bucket or f"hutch-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    client.create_bucket(Bucket=bucket)
    return S3VolumeBackend(bucket=bucket, client=client)


def _local(tmp_path: Path) -> VolumeBackend:
    if os.geteuid() != 0:
        machine_lacks("the local volume backend needs root (loop mounts)")
    if shutil.which("mkfs.ext4") is None:
        machine_lacks("mkfs.ext4 (e2fsprogs) is not installed")
    from hutch.volumes.local import LocalVolumeBackend

    return LocalVolumeBackend(tmp_path / "volumes", reserve_bytes=0)


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VolumeBackend]:
    if request.param == "s3":
        made = make_s3_backend(request.getfixturevalue("moto_server"))
    else:
        made = _local(tmp_path)
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
