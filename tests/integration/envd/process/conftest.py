"""Plain Connect-over-HTTP helpers for the process service (codes and fields the SDK hides)."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx

from tests.conftest import EnvdProcess
from tests.integration.envd import connect

SERVICE = "process.Process"

unary = partial(connect.unary, SERVICE)
open_stream = partial(connect.open_stream, SERVICE)
frames = connect.frames
envelope = connect.envelope
basic_auth = connect.basic_auth
assert_healthy = connect.assert_healthy


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
