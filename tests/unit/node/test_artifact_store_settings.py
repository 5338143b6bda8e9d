"""The node's artifact store settings (ADR 0029 addendum and amendment): empty is off,
the S3 store needs a bucket, one store per node, a prefix that is a key prefix; and which
adapter the composition root builds from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hutch.node.app import build_artifact_blobs
from hutch.node.settings import NodeSettings
from hutch.node.templates.artifact_dir import DirBlobs
from hutch.node.templates.artifact_s3 import MIB, S3Blobs


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DIR", "S3_BUCKET", "S3_ENDPOINT_URL", "S3_PREFIX", "S3_PART_MB"):
        monkeypatch.delenv(f"HUTCH_NODE_ARTIFACT_{name}", raising=False)


def test_artifact_store_settings_empty_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTCH_NODE_ARTIFACT_DIR", "")
    monkeypatch.setenv("HUTCH_NODE_ARTIFACT_S3_BUCKET", "")
    settings = NodeSettings()
    assert settings.artifact_dir is None and settings.artifact_s3_bucket is None
    assert build_artifact_blobs(settings) is None
    monkeypatch.setenv("HUTCH_NODE_ARTIFACT_DIR", "/mnt/hutch-artifacts")
    settings = NodeSettings()
    assert settings.artifact_dir == Path("/mnt/hutch-artifacts")
    blobs = build_artifact_blobs(settings)
    assert isinstance(blobs, DirBlobs) and blobs.label == "dir:/mnt/hutch-artifacts"


def test_artifact_store_settings_name_an_s3_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTCH_NODE_ARTIFACT_S3_BUCKET", "hutch-artifacts")
    monkeypatch.setenv("HUTCH_NODE_ARTIFACT_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("HUTCH_NODE_ARTIFACT_S3_PART_MB", "32")
    blobs = build_artifact_blobs(NodeSettings(), check=False)
    assert isinstance(blobs, S3Blobs)
    assert blobs.label == "s3://hutch-artifacts/artifacts/" and blobs.part_size == 32 * MIB
    assert blobs.endpoint_url == "http://minio:9000"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"S3_ENDPOINT_URL": "http://minio:9000"}, "needs a bucket"),
        ({"S3_BUCKET": "b", "DIR": "/mnt/a"}, "both set"),
        ({"S3_BUCKET": "b", "S3_PREFIX": "artifacts"}, "ending in '/'"),
        ({"S3_BUCKET": "b", "S3_PREFIX": "/artifacts/"}, "ending in '/'"),
        ({"S3_BUCKET": "b", "S3_PART_MB": "4"}, "greater than or equal to 5"),
    ],
)
def test_artifact_store_settings_refuse_what_cannot_work(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(f"HUTCH_NODE_ARTIFACT_{name}", value)
    with pytest.raises(ValidationError, match=says):
        NodeSettings()
