"""Plain Connect-over-HTTP helpers for what the SDK does not show (codes, raw fields)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import EnvdProcess

SERVICE = "/filesystem.Filesystem/"


def basic_auth(user: str) -> dict[str, str]:
    """The header the SDK sends to run a call as ``user``."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:".encode()).decode()}


def unary(
    envd: EnvdProcess,
    method: str,
    body: dict[str, Any] | bytes,
    *,
    user: str | None = "root",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A unary Connect JSON call; ``body`` bytes are sent as they are."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", "Connect-Protocol-Version": "1"}
    if user is not None:
        all_headers.update(basic_auth(user))
    all_headers.update(headers or {})
    return httpx.post(envd.url + SERVICE + method, content=content, headers=all_headers)


def envelope(message: dict[str, Any]) -> bytes:
    """One Connect streaming frame."""
    data = json.dumps(message).encode()
    return struct.pack(">BI", 0, len(data)) + data


def stream_frames(response: httpx.Response) -> Iterator[tuple[int, dict[str, Any]]]:
    """(flags, JSON body) of each frame of a streaming Connect response, as they arrive."""
    buffer = b""
    for chunk in response.iter_bytes():
        buffer += chunk
        while len(buffer) >= 5:
            flags, length = struct.unpack(">BI", buffer[:5])
            if len(buffer) < 5 + length:
                break
            yield flags, json.loads(buffer[5 : 5 + length])
            buffer = buffer[5 + length :]


def open_stream(
    client: httpx.Client,
    envd: EnvdProcess,
    method: str,
    message: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
):
    """Start a server-streaming call (``with open_stream(...) as response``)."""
    all_headers = {
        "Content-Type": "application/connect+json",
        "Connect-Protocol-Version": "1",
        **basic_auth("root"),
        **(headers or {}),
    }
    return client.stream(
        "POST", envd.url + SERVICE + method, content=envelope(message), headers=all_headers
    )


def assert_healthy(envd: EnvdProcess) -> None:
    """envd still answers after whatever the test threw at it."""
    assert httpx.get(envd.url + "/health").status_code == 204


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c
