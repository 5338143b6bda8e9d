"""A real S3-compatible server on loopback for tests and benches: ``moto`` in server mode
(the test extra), started as a child process on a free port and stopped with it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port, machine_lacks

#: moto accepts any credentials; these keep boto3 from looking for real ones.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@contextlib.contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """``moto.server`` on ``127.0.0.1:<free port>``, logging to ``log``; its endpoint URL."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        machine_lacks("moto[server] is not installed (the test extra)")
    port = free_port()
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


def s3_test_client(endpoint: str) -> Any:
    """A boto3 client of the moto server at ``endpoint`` with its test credentials."""
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
    )  # fmt: skip


def new_bucket(client: Any, prefix: str = "hutch-test") -> str:
    """A fresh bucket's name, created."""
    bucket = f"{prefix}-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return bucket
