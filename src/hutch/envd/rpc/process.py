"""The ``process.Process`` Connect service: wire messages <-> ``process/`` domain calls.

Stream shape (what the SDK requires): ``start{pid}`` at once, then ``data`` chunks, then
always ``end``; ``keepalive`` whenever nothing else was sent for the client's interval.
A Start stream whose ``Connect-Timeout-Ms`` deadline passes ends with ``deadline_exceeded``
after the command was killed; a Connect stream's deadline only ends the stream. A client
that goes away only detaches: the process keeps running.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

from protobuf import Oneof

from hutch.envd.context import Envd
from hutch.envd.process.fanout import Subscription
from hutch.envd.process.handle import ProcessHandle
from hutch.envd.process.models import Output, ProcessEnd, ProcessSpec, PtySize
from hutch.envd.rpc.context import deadline_s, keepalive_interval, request_user
from hutch.envd.rpc.disconnect import current_disconnect
from hutch.shared.errors import DeadlineExceededError, InvalidArgumentError
from hutch.shared.proto.process import process_pb as pb

_SIGNALS = {pb.Signal.SIGKILL: signal.SIGKILL, pb.Signal.SIGTERM: signal.SIGTERM}
#: After a Start deadline killed the command, how long to wait for it to be reaped.
_KILL_REAP_WAIT_S = 5.0


def _selector(selector: pb.ProcessSelector | None) -> dict[str, Any]:
    match selector.selector if selector is not None else None:
        case Oneof(field="pid", value=pid):
            return {"pid": pid}
        case Oneof(field="tag", value=tag):
            return {"tag": tag}
    raise InvalidArgumentError("process selector (pid or tag) is required")


def _size(pty: pb.PTY | None) -> PtySize | None:
    if pty is None:
        return None
    size = pty.size
    return (
        PtySize(cols=size.cols, rows=size.rows) if size is not None else PtySize(cols=80, rows=24)
    )


def _spec(request: pb.StartRequest) -> ProcessSpec:
    config = request.process or pb.ProcessConfig()
    return ProcessSpec(
        cmd=config.cmd,
        args=tuple(config.args),
        envs=dict(config.envs),
        cwd=config.cwd if config.has_field("cwd") and config.cwd else None,
        tag=request.tag if request.has_field("tag") else None,
        pty=_size(request.pty),
        # Absent means true: the proto keeps old clients' always-on stdin.
        stdin=request.stdin if request.has_field("stdin") else True,
    )


def _event(item: Output | ProcessEnd | None) -> pb.ProcessEvent:
    if item is None:
        return pb.ProcessEvent(event=Oneof("keepalive", pb.ProcessEvent.KeepAlive()))
    if isinstance(item, Output):
        data = pb.ProcessEvent.DataEvent(output=Oneof(item.stream.value, item.data))
        return pb.ProcessEvent(event=Oneof("data", data))
    end = pb.ProcessEvent.EndEvent(
        exit_code=item.exit_code, exited=item.exited, status=item.status, error=item.error
    )
    return pb.ProcessEvent(event=Oneof("end", end))


def _start_event(pid: int) -> pb.ProcessEvent:
    return pb.ProcessEvent(event=Oneof("start", pb.ProcessEvent.StartEvent(pid=pid)))


def _info(handle: ProcessHandle) -> pb.ProcessInfo:
    spec = handle.spec
    config = pb.ProcessConfig(
        cmd=spec.cmd, args=list(spec.args), envs=dict(spec.envs), cwd=handle.cwd
    )
    return pb.ProcessInfo(config=config, pid=handle.pid, tag=spec.tag)


async def _events(
    handle: ProcessHandle, subscription: Subscription, ctx: Any, *, kill_at_deadline: bool
) -> AsyncIterator[pb.ProcessEvent]:
    """The events of one attached stream after ``start``: data, keepalives, then end."""
    disconnect = current_disconnect()
    if disconnect is not None:
        disconnect.on_disconnect(subscription.close)
    try:
        interval = keepalive_interval(ctx)
        loop = asyncio.get_running_loop()
        remaining = deadline_s(ctx)
        deadline = None if remaining is None else loop.time() + remaining
        while True:
            wait = interval
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    if kill_at_deadline:
                        handle.kill_all()
                        # Let the kill be reaped, so List no longer shows it once we answer.
                        await asyncio.wait(
                            [asyncio.ensure_future(handle.wait())], timeout=_KILL_REAP_WAIT_S
                        )
                        raise DeadlineExceededError(
                            f"deadline exceeded: process {handle.pid} was killed"
                        )
                    raise DeadlineExceededError("deadline exceeded")
            item = await subscription.next(timeout=wait)
            if subscription.closed:
                return  # the client went away: detach, the process keeps running
            if item is None and deadline is not None and loop.time() >= deadline:
                continue  # the deadline, not the keepalive, woke us
            yield _event(item)
            if isinstance(item, ProcessEnd):
                return
    finally:
        subscription.close()


class ProcessService:
    """Implements ``process.Process`` (method names as in the generated ``Process`` Protocol)."""

    def __init__(self, envd: Envd) -> None:
        self._envd = envd
        self._processes = envd.processes

    async def start(self, request: pb.StartRequest, ctx: Any) -> AsyncIterator[pb.StartResponse]:
        """Start a process and stream its events (server stream)."""
        user = request_user(self._envd, ctx)
        spec = _spec(request)
        cwd = self._envd.path(spec.cwd or "", user)
        handle = self._processes.start(spec, user=user, cwd=cwd, timeout_s=deadline_s(ctx))
        # Subscribe before the first await (the start message), or early output is lost.
        events = _events(handle, handle.subscribe(), ctx, kill_at_deadline=True)
        try:
            yield pb.StartResponse(event=_start_event(handle.pid))
            async for event in events:
                yield pb.StartResponse(event=event)
        finally:
            await events.aclose()

    async def connect(
        self, request: pb.ConnectRequest, ctx: Any
    ) -> AsyncIterator[pb.ConnectResponse]:
        """Re-attach to a running (or just ended) process's events (server stream)."""
        handle = self._processes.get(**_selector(request.process))
        events = _events(handle, handle.subscribe(), ctx, kill_at_deadline=False)
        try:
            yield pb.ConnectResponse(event=_start_event(handle.pid))
            async for event in events:
                yield pb.ConnectResponse(event=event)
        finally:
            await events.aclose()

    async def list(self, request: pb.ListRequest, ctx: Any) -> pb.ListResponse:
        """The running processes."""
        return pb.ListResponse(processes=[_info(h) for h in self._processes.list()])

    async def send_input(self, request: pb.SendInputRequest, ctx: Any) -> pb.SendInputResponse:
        """Write to a process's stdin or terminal."""
        handle = self._processes.get_running(**_selector(request.process))
        await self._write(handle, request.input, ctx)
        return pb.SendInputResponse()

    async def stream_input(
        self, request: AsyncIterator[pb.StreamInputRequest], ctx: Any
    ) -> pb.StreamInputResponse:
        """Write a stream of input, in order (client stream: ``start`` first, then data)."""
        try:
            await self._stream_input(request, ctx)
        except TimeoutError:
            raise DeadlineExceededError("deadline exceeded while streaming input") from None
        return pb.StreamInputResponse()

    async def _stream_input(self, request: AsyncIterator[pb.StreamInputRequest], ctx: Any) -> None:
        handle: ProcessHandle | None = None
        async with asyncio.timeout(deadline_s(ctx)):
            async for message in request:
                match message.event:
                    case Oneof(field="start", value=start):
                        if handle is not None:
                            raise InvalidArgumentError("StreamInput: 'start' sent twice")
                        handle = self._processes.get_running(**_selector(start.process))
                    case Oneof(field="data", value=data):
                        if handle is None:
                            raise InvalidArgumentError(
                                "StreamInput: the first message must be 'start'"
                            )
                        await self._write(handle, data.input, ctx=None)
                    case _:
                        pass  # keepalives (and empty messages) carry nothing

    async def _write(self, handle: ProcessHandle, data: pb.ProcessInput | None, ctx: Any) -> None:
        match data.input if data is not None else None:
            case Oneof(field="stdin", value=chunk):
                write = handle.write_stdin(chunk)
            case Oneof(field="pty", value=chunk):
                write = handle.write_pty(chunk)
            case _:
                raise InvalidArgumentError("input must carry 'stdin' or 'pty' bytes")
        remaining = deadline_s(ctx) if ctx is not None else None
        try:
            async with asyncio.timeout(remaining):
                await write
        except TimeoutError:
            raise DeadlineExceededError(
                f"deadline exceeded writing to process {handle.pid} (it is not reading)"
            ) from None

    async def close_stdin(self, request: pb.CloseStdinRequest, ctx: Any) -> pb.CloseStdinResponse:
        """Close a process's stdin (EOF)."""
        self._processes.get_running(**_selector(request.process)).close_stdin()
        return pb.CloseStdinResponse()

    async def send_signal(self, request: pb.SendSignalRequest, ctx: Any) -> pb.SendSignalResponse:
        """Send SIGTERM or SIGKILL to a process."""
        sig = _SIGNALS.get(request.signal)
        if sig is None:
            raise InvalidArgumentError(
                f"unsupported signal {request.signal!r}: use SIGTERM or SIGKILL"
            )
        self._processes.get_running(**_selector(request.process)).send_signal(sig)
        return pb.SendSignalResponse()

    async def update(self, request: pb.UpdateRequest, ctx: Any) -> pb.UpdateResponse:
        """Resize a process's terminal."""
        handle = self._processes.get_running(**_selector(request.process))
        size = _size(request.pty)
        if size is None:
            raise InvalidArgumentError("update: 'pty.size' is required")
        handle.resize(size)
        return pb.UpdateResponse()
