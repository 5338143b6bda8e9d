"""The S3 adapter of the artifact store against a real moto server on loopback: a part
bigger than one upload part goes up as a multipart upload and comes back whole; a store
that cannot work is refused at node start naming what is wrong (the bucket missing, no
credentials, the endpoint unreachable), by ``S3Blobs.check`` and by ``hutch node`` itself;
a store gone mid-fetch fails typed with nothing left."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hutch.node.templates.artifact import DirTemplateStore
from hutch.node.templates.artifact_s3 import MIB, ArtifactStoreConfigError, S3Blobs
from hutch.node.templates.artifact_store import ContentStore
from hutch.node.templates.transfer import Exporter, Fetcher
from hutch.shared.errors import ArtifactUnavailableError
from tests.conftest import free_port
from tests.integration.artifacts.conftest import s3_shared
from tests.s3server import S3_ENV, s3_test_client
from tests.unit.node.test_artifact_transfer import FP, _source_home, _tree


@pytest.fixture
def no_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials anywhere boto3 looks, and no instance metadata asked (no traffic
    off loopback)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


async def test_artifact_s3_a_big_part_goes_up_in_parts_and_comes_back_whole(
    tmp_path: Path, moto: str
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    _source_home(a)
    (a / ".artifacts" / FP / "rootfs" / "big.bin").write_text(os.urandom(6 << 20).hex())  # 12 MiB
    shared = s3_shared(moto, part_size=5 * MIB)
    await shared.view(a).publish("img")
    (part,) = shared.blobs().list("parts")
    head = shared.client.head_object(Bucket=shared.bucket, Key=f"art/parts/{part}")
    assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + the rest: a multipart upload
    assert head["ContentLength"] > 12 * MIB

    fetcher = Fetcher(DirTemplateStore(b), b, token="t", artifact_store=shared.view(b))
    fetched = await fetcher.ensure("img", [])
    assert fetched is not None and fetched.source == f"s3://{shared.bucket}/art/"
    assert fetched.bytes == head["ContentLength"]
    assert _tree(b / ".artifacts" / FP) == _tree(a / ".artifacts" / FP)
    assert not any((b / ".incoming").iterdir())


def test_artifact_s3_check_accepts_a_bucket_that_is_there(moto: str) -> None:
    shared = s3_shared(moto)
    shared.blobs().check()  # type: ignore[attr-defined]


def test_artifact_s3_check_names_a_missing_bucket(moto: str) -> None:
    blobs = S3Blobs(bucket="no-such-bucket", endpoint_url=moto, client=s3_test_client(moto))
    with pytest.raises(ArtifactStoreConfigError, match=r"'no-such-bucket'.*does not exist"):
        blobs.check()


@pytest.mark.usefixtures("no_aws_env")
def test_artifact_s3_check_names_missing_credentials(moto: str) -> None:
    blobs = S3Blobs(bucket="whatever", endpoint_url=moto)
    with pytest.raises(ArtifactStoreConfigError, match=r"no credentials.*AWS_ACCESS_KEY_ID"):
        blobs.check()


def test_artifact_s3_check_names_an_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    closed = f"http://127.0.0.1:{free_port()}"
    blobs = S3Blobs(bucket="whatever", endpoint_url=closed)
    with pytest.raises(ArtifactStoreConfigError, match=f"{re.escape(closed)}.*cannot be reached"):
        blobs.check()


def _hutch_node(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("HUTCH_", "AWS_"))}
    full.update({"HUTCH_NODE_API_TOKEN": "t" * 32, "AWS_EC2_METADATA_DISABLED": "true",
                 "AWS_CONFIG_FILE": str(tmp_path / "none"),
                 "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), **env})  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "hutch", "node", "--home", str(tmp_path / "home"),
         "--listen", f"127.0.0.1:{free_port()}"],
        env=full, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_artifact_s3_hutch_node_refuses_to_start_naming_what_is_wrong(
    tmp_path: Path, moto: str
) -> None:
    store = {"HUTCH_NODE_ARTIFACT_S3_BUCKET": "missing-bucket",
             "HUTCH_NODE_ARTIFACT_S3_ENDPOINT_URL": moto}  # fmt: skip
    missing = _hutch_node(tmp_path, {**store, **S3_ENV})
    assert missing.returncode != 0
    assert "bucket 'missing-bucket'" in missing.stderr and "does not exist" in missing.stderr
    nocreds = _hutch_node(tmp_path, store)
    assert nocreds.returncode != 0 and "no credentials" in nocreds.stderr
    both = _hutch_node(tmp_path, {**store, "HUTCH_NODE_ARTIFACT_DIR": str(tmp_path)})
    assert both.returncode != 0 and "choose one" in both.stderr
    # Refused before the node touched anything: no sandboxes directory, no network.
    assert not (tmp_path / "home" / "sandboxes").exists()


async def test_artifact_s3_a_store_gone_mid_fetch_fails_typed_with_nothing_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    b = tmp_path / "b"
    b.mkdir()
    closed = f"http://127.0.0.1:{free_port()}"
    gone = ContentStore(S3Blobs(bucket="gone", endpoint_url=closed),
                        Exporter(DirTemplateStore(b), b))  # fmt: skip
    fetcher = Fetcher(DirTemplateStore(b), b, token="t", artifact_store=gone)
    with pytest.raises(ArtifactUnavailableError, match="s3://gone/artifacts/") as failed:
        await fetcher.ensure("img", [])
    assert failed.value.retryable is True
    assert list(b.iterdir()) in ([], [b / ".incoming"])
    assert not any((b / ".incoming").glob("*")) if (b / ".incoming").exists() else True
