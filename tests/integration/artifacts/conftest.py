"""The artifact store suite runs against each adapter (``store`` fixture): the shared
directory, and an S3 bucket of a real ``moto`` server on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hutch.node.templates.artifact import DirTemplateStore
from hutch.node.templates.artifact_dir import DirBlobs
from hutch.node.templates.artifact_s3 import MIB, S3Blobs
from hutch.node.templates.artifact_store import Blobs, ContentStore
from hutch.node.templates.transfer import Exporter
from tests.s3server import moto_server, new_bucket, s3_test_client


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server for the session; its endpoint URL."""
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


@dataclass
class Shared:
    """One artifact store as every node sees it: ``blobs()`` makes a node's adapter of it,
    ``view(home)`` that node's store over its templates home."""

    kind: str
    blobs: Callable[[], Blobs]
    #: The S3 client and bucket (S3 only), to look behind the adapter.
    client: Any = None
    bucket: str = ""

    def view(self, home: Path) -> ContentStore:
        return ContentStore(self.blobs(), Exporter(DirTemplateStore(home), home))


def s3_shared(endpoint: str, *, part_size: int = 5 * MIB, prefix: str = "art/") -> Shared:
    """A fresh bucket of the moto server at ``endpoint`` (small parts: multipart is used
    for anything above 5 MiB)."""
    client = s3_test_client(endpoint)
    bucket = new_bucket(client, "hutch-art")

    def blobs() -> Blobs:
        return S3Blobs(bucket=bucket, prefix=prefix, client=client, part_size=part_size)

    return Shared("s3", blobs, client=client, bucket=bucket)


@pytest.fixture(params=["dir", "s3"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Shared:
    if request.param == "s3":
        return s3_shared(request.getfixturevalue("moto"))
    root = tmp_path / "shared"
    root.mkdir()
    return Shared("dir", lambda: DirBlobs(root))
