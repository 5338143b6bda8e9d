"""Plain Connect-over-HTTP helpers for the process service (codes and fields the SDK hides)."""

from __future__ import annotations

import base64
import json
import os
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from tests.conftest import EnvdProcess

SERVICE = "/process.Process/"


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
    return httpx.post(envd.url + SERVICE + method, content=content, headers=all_headers, timeout=30)


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
    return client.stream("POST", envd.url + SERVICE + method, content=content, headers=all_headers)


def run_stream(
    envd: EnvdProcess, method: str, message: dict[str, Any], **kwargs: Any
) -> list[tuple[int, dict[str, Any]]]:
    """Every frame of a whole streaming call."""
    with (
        httpx.Client(timeout=60) as client,
        open_stream(client, envd, method, message, **kwargs) as r,
    ):
        assert r.status_code == 200, r.read()
        return list(frames(r))


def start_message(cmd: str, *args: str, **extra: Any) -> dict[str, Any]:
    """A StartRequest running ``cmd args``."""
    return {"process": {"cmd": cmd, "args": list(args), **extra.pop("process", {})}, **extra}


def events(frames_: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The ProcessEvents of a stream (end-stream frame excluded)."""
    return [body["event"] for flags, body in frames_ if not flags & 0x02]


def end_frame(frames_: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """The end-stream frame's body."""
    flags, body = frames_[-1]
    assert flags & 0x02, frames_
    return body


def stdout_of(evs: list[dict[str, Any]], key: str = "stdout") -> bytes:
    """The concatenated bytes of one output stream."""
    return b"".join(base64.b64decode(e["data"][key]) for e in evs if key in e.get("data", {}))


def assert_healthy(envd: EnvdProcess) -> None:
    """The daemon still answers after whatever the test threw at it."""
    assert httpx.get(envd.url + "/health").status_code == 204
    assert envd.process.poll() is None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"


def eventually(check: Callable[[], bool], *, attempts: int = 200, pause: float = 0.05) -> bool:
    """Poll ``check`` until it holds (bounded by attempts, never asserted on elapsed time)."""
    for _ in range(attempts):
        if check():
            return True
        time.sleep(pause)
    return check()


def children_of(pid: int) -> list[tuple[int, bytes]]:
    """(pid, state) of every process whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append((int(entry), fields[0]))
    return found
