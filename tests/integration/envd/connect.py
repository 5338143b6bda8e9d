"""Plain Connect-over-HTTP calls to envd, for what the SDK hides (codes, raw fields, frames).

Shared by the filesystem and process tests; each binds its service with ``functools.partial``.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx

from tests.conftest import EnvdProcess


def basic_auth(user: str) -> dict[str, str]:
    """The header the SDK sends to run a call as ``user``."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:".encode()).decode()}


def unary(
    service: str,
    envd: EnvdProcess,
    method: str,
    body: dict[str, Any] | bytes,
    *,
    user: str | None = "root",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A unary Connect JSON call to ``/<service>/<method>``; ``body`` bytes are sent as they are."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", "Connect-Protocol-Version": "1"}
    if user is not None:
        all_headers.update(basic_auth(user))
    all_headers.update(headers or {})
    return httpx.post(
        f"{envd.url}/{service}/{method}", content=content, headers=all_headers, timeout=30
    )


def envelope(message: dict[str, Any], flags: int = 0) -> bytes:
    """One Connect streaming frame."""
    data = json.dumps(message).encode()
    return struct.pack(">BI", flags, len(data)) + data


def frames(response: httpx.Response) -> Iterator[tuple[int, dict[str, Any]]]:
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
    service: str,
    client: httpx.Client,
    envd: EnvdProcess,
    method: str,
    message: dict[str, Any] | bytes,
    *,
    user: str = "root",
    headers: dict[str, str] | None = None,
):
    """Start a streaming call (``with open_stream(...) as response``)."""
    all_headers = {
        "Content-Type": "application/connect+json",
        "Connect-Protocol-Version": "1",
        **basic_auth(user),
        **(headers or {}),
    }
    content = message if isinstance(message, bytes) else envelope(message)
    return client.stream(
        "POST", f"{envd.url}/{service}/{method}", content=content, headers=all_headers
    )


def assert_healthy(envd: EnvdProcess) -> None:
    """The daemon still answers, and runs, after whatever the test threw at it."""
    assert httpx.get(envd.url + "/health").status_code == 204
    assert envd.process.poll() is None
