"""``/dashboard/sandboxes/{id}/terminal``: a WebSocket bridged to a PTY in the sandbox.

envd starts a login shell on a PTY (``process.Process/Start`` with ``pty``; bash when the
image has it, else ``sh``), through the sandbox proxy as the SDK's ``sandbox.pty.create``
does. The browser sends JSON text frames, ``{"type": "input", "data": "..."}`` (or raw
binary frames, the same as input) and ``{"type": "resize", "cols": N, "rows": M}``; the
bridge sends the PTY's output as binary frames, and at the end one text frame
``{"type": "exit", "code": N}`` (or ``{"type": "error", "message": "..."}`` when envd
refused or broke the stream) before closing. A frame it cannot read gets an ``error``
frame and is dropped. The browser closing the socket kills the shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Final

from protobuf import Oneof
from starlette.websockets import WebSocket, WebSocketDisconnect

from hutch.dashboard.envd import envd_headers
from hutch.shared.proto.process import process_pb as pb

log = logging.getLogger("hutch.dashboard.terminal")

#: A login shell: bash where the image has one (E2B's templates), else the POSIX sh.
SHELL: Final = "if [ -x /bin/bash ]; then exec /bin/bash -i -l; fi; exec /bin/sh -i -l"
#: envd sends a keepalive when idle this long (s), so idle terminals outlive proxies' timeouts.
_KEEPALIVE_S: Final = "30"
_MAX_INPUT: Final = 64 * 1024
_MAX_DIMENSION: Final = 1000


async def refuse(websocket: WebSocket, status: int, message: str) -> None:
    """Say why the terminal cannot open, on the accepted ``websocket``: a text frame
    ``{"type": "error", "status": <HTTP status>, "message"}``, then close code
    ``4000 + status`` (4401 signed out, 4403 a wrong CSRF token, 4404 no such sandbox of
    the team, 4503 no sandbox proxy) with the message as reason."""
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.send_text(
            json.dumps({"type": "error", "status": status, "message": message})
        )
        # A close reason is at most 123 bytes (RFC 6455 5.5).
        reason = message.encode()[:123].decode(errors="ignore")
        await websocket.close(code=4000 + status if 400 <= status < 600 else 1011, reason=reason)


class FrameError(ValueError):
    """A frame from the browser the bridge cannot read (the message says why)."""


def parse_frame(message: dict[str, Any]) -> tuple[str, bytes | tuple[int, int]]:
    """``("input", bytes)`` or ``("resize", (cols, rows))`` from one WebSocket message."""
    if message.get("bytes") is not None:
        data = message["bytes"]
        if len(data) > _MAX_INPUT:
            raise FrameError(f"input frame over {_MAX_INPUT} bytes")
        return "input", bytes(data)
    try:
        frame = json.loads(message.get("text") or "")
    except ValueError as exc:
        raise FrameError("a text frame must be JSON") from exc
    if not isinstance(frame, dict):
        raise FrameError("a text frame must be a JSON object")
    kind = frame.get("type")
    if kind == "input":
        data = frame.get("data")
        if not isinstance(data, str):
            raise FrameError("input needs data, a string")
        encoded = data.encode()
        if len(encoded) > _MAX_INPUT:
            raise FrameError(f"input frame over {_MAX_INPUT} bytes")
        return "input", encoded
    if kind == "resize":
        cols, rows = frame.get("cols"), frame.get("rows")
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= _MAX_DIMENSION
            for v in (cols, rows)
        ):
            raise FrameError(f"resize needs cols and rows, integers 1-{_MAX_DIMENSION}")
        return "resize", (int(cols), int(rows))  # type: ignore[arg-type]
    raise FrameError(f"unknown frame type {kind!r} (expected input or resize)")


async def bridge(
    websocket: WebSocket,
    *,
    sandbox_url: str,
    sandbox_id: str,
    access_token: str | None,
    cols: int = 80,
    rows: int = 24,
) -> None:
    """Run the terminal on the accepted ``websocket`` until the shell ends or the browser
    leaves (see the module docstring)."""
    from connectrpc.errors import ConnectError

    from hutch.shared.proto.process.process_connect import ProcessClient

    headers = {**envd_headers(sandbox_id, access_token), "Keepalive-Ping-Interval": _KEEPALIVE_S}
    send_lock = asyncio.Lock()
    pid: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def send_text(frame: dict[str, Any]) -> None:
        async with send_lock:
            await websocket.send_text(json.dumps(frame))

    async with ProcessClient(sandbox_url, send_compression=None) as client:

        def selector(value: int) -> pb.ProcessSelector:
            return pb.ProcessSelector(selector=Oneof("pid", value))

        async def output() -> None:
            request = pb.StartRequest(
                process=pb.ProcessConfig(
                    cmd="/bin/sh", args=["-c", SHELL], envs={"TERM": "xterm-256color"}
                ),
                pty=pb.PTY(size=pb.PTY.Size(cols=cols, rows=rows)),
            )
            try:
                async for response in client.start(request, headers=headers):
                    event = response.event.event if response.event is not None else None
                    match event:
                        case Oneof(field="start", value=start):
                            pid.set_result(start.pid)
                        case Oneof(field="data", value=data):
                            match data.output:
                                case Oneof(field="pty", value=chunk) if chunk:
                                    async with send_lock:
                                        await websocket.send_bytes(chunk)
                        case Oneof(field="end", value=end):
                            await send_text({"type": "exit", "code": end.exit_code})
                            return
                await send_text({"type": "error", "message": "the shell's stream ended early"})
            except ConnectError as exc:
                await send_text({"type": "error", "message": f"{exc.code.value}: {exc.message}"})

        async def feed() -> None:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                try:
                    kind, value = parse_frame(message)
                except FrameError as exc:
                    await send_text({"type": "error", "message": str(exc)})
                    continue
                target = selector(await pid)
                if kind == "input":
                    assert isinstance(value, bytes)
                    await client.send_input(
                        pb.SendInputRequest(
                            process=target, input=pb.ProcessInput(input=Oneof("pty", value))
                        ),
                        headers=headers,
                    )
                else:
                    assert isinstance(value, tuple)
                    await client.update(
                        pb.UpdateRequest(
                            process=target,
                            pty=pb.PTY(size=pb.PTY.Size(cols=value[0], rows=value[1])),
                        ),
                        headers=headers,
                    )

        reading = asyncio.create_task(output(), name="hutch-terminal-output")
        writing = asyncio.create_task(feed(), name="hutch-terminal-input")
        try:
            done, _ = await asyncio.wait({reading, writing}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if (exc := task.exception()) is not None and not isinstance(
                    exc, (WebSocketDisconnect, ConnectError)
                ):
                    log.warning("terminal of %s failed: %r", sandbox_id, exc)
        finally:
            shell_ended = reading.done()
            for task in (reading, writing):
                task.cancel()
            await asyncio.gather(reading, writing, return_exceptions=True)
            if not shell_ended and pid.done() and not pid.cancelled():
                # The browser left first: the shell must not outlive its terminal.
                with contextlib.suppress(ConnectError):
                    await client.send_signal(
                        pb.SendSignalRequest(
                            process=selector(pid.result()), signal=pb.Signal.SIGKILL
                        ),
                        headers=headers,
                        timeout_ms=5000,
                    )
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close(code=1000)
