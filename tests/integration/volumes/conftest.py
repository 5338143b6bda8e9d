"""One backend test suite, run against every ``VolumeBackend`` (``backend`` fixture): the
local ext4 backend, the same behind the node API (``node``: the api's ``NodeVolumes`` over
``HttpNodeClient`` to a real node app whose local backend is real, ADR 0034), and the S3
backend against a real ``moto`` server on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from hutch.volumes.base import VolumeBackend
from tests.conftest import machine_lacks
from tests.s3server import S3_ENV, new_bucket, s3_test_client
from tests.s3server import moto_server as run_moto

__all__ = ["S3_ENV", "make_s3_backend"]

BACKENDS = ["local", "node", "s3"]


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``moto`` in server mode on a free loopback port; its endpoint URL."""
    with run_moto(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


def make_s3_backend(endpoint: str, bucket: str | None = None) -> VolumeBackend:
    """An S3 backend on a fresh bucket of the moto server at ``endpoint``."""
    from hutch.volumes.s3 import S3VolumeBackend

    client = s3_test_client(endpoint)
    if bucket is None:
        bucket = new_bucket(client)
    else:
        client.create_bucket(Bucket=bucket)
    return S3VolumeBackend(bucket=bucket, client=client)


def _local(tmp_path: Path) -> VolumeBackend:
    if os.geteuid() != 0:
        machine_lacks("the local volume backend needs root (loop mounts)")
    if shutil.which("mkfs.ext4") is None:
        machine_lacks("mkfs.ext4 (e2fsprogs) is not installed")
    from hutch.volumes.local import LocalVolumeBackend

    return LocalVolumeBackend(tmp_path / "volumes", reserve_bytes=0)


async def _over_the_node_api(
    local: VolumeBackend, closing: list[Callable[[], Awaitable[None]]]
) -> VolumeBackend:
    """``local`` behind a real node app, as the api reaches it (``HttpNodeClient.volumes``)."""
    import httpx

    from hutch.api.nodes.http_client import HttpNodeClient
    from hutch.node.http.app import create_node_app
    from hutch.node.service import NodeIdentity, NodeService
    from tests.fakes.sandboxes import FakeSamples, FakeSandboxes, FakeTemplates

    service = NodeService(
        identity=NodeIdentity(node_id="node-v", version="9.9", runtime="fake",
                              max_sandboxes=1, pool_sizes={}),
        sandboxes=FakeSandboxes(capacity=1), sampler=FakeSamples(),
        templates=FakeTemplates(),  # type: ignore[arg-type]  # duck-typed TemplateManager
        volumes={"local": local},
    )  # fmt: skip
    app = create_node_app(service, token="t")
    client = await HttpNodeClient.connect(
        "http://node", token="t", transport=httpx.ASGITransport(app=app)
    )
    closing.append(client.aclose)
    return client.volumes  # type: ignore[return-value]


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VolumeBackend]:
    closing: list[Callable[[], Awaitable[None]]] = []
    if request.param == "s3":
        made = make_s3_backend(request.getfixturevalue("moto_server"))
    elif request.param == "node":
        local = _local(tmp_path)
        closing.append(local.aclose)
        made = await _over_the_node_api(local, closing)
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
        for close in reversed(closing):
            await close()
