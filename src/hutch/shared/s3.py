"""One way to make an S3 client, for every S3-compatible store hutch talks to: the S3
volume backend (ADR 0009) and the node's S3 artifact store (ADR 0029 amendment).

Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, a role) unless given; ``endpoint_url`` names an S3-compatible server
(MinIO, Ceph, moto), None is AWS itself.
"""

from __future__ import annotations

from typing import Any


def s3_session(*, region: str) -> Any:
    """A boto3 session (its ``get_credentials()`` says whether the chain found any)."""
    import boto3

    return boto3.session.Session(region_name=region)


def s3_client(
    *,
    endpoint_url: str | None,
    region: str,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session: Any = None,
    max_pool_connections: int = 10,
) -> Any:
    """An S3 client with standard retries (3 attempts) on ``session`` (default: a new one)."""
    from botocore.config import Config

    session = session or s3_session(region=region)
    return session.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=max_pool_connections,
        ),
    )
