"""Request bodies relayed below ASGI: ``splice(2)`` from the client's socket to envd's.

Why (ADR 36 addendum 2): with httptools and fixed malloc thresholds the proxy still spent
96 % of a core relaying an upload, nearly all of it the per-chunk path of one byte through
two Python processes (uvicorn's ``data_received`` → ASGI ``receive`` → httpx → httpcore →
``transport.write``). A request that carries a ``Content-Length`` body of at least
:data:`RELAY_MIN_BYTES` is routed, authorised, woken and counted by the ASGI app exactly
as any other, and only then, for its body, the app asks this module to take over the
client's socket: the bytes move socket → pipe → socket inside the kernel, never entering
Python.

How it hooks in: :class:`RelayingHttpToolsProtocol` is uvicorn's ``httptools`` protocol
with one addition: each request's scope carries ``extensions["hutch.raw_body"]``, a
:class:`RawBody` bound to that request's connection. :meth:`RawBody.relay` then

1. pauses reading on the client's transport (asyncio stops ``recv``-ing it),
2. answers ``Expect: 100-continue`` itself (the upstream request carries no ``Expect``),
3. writes the request head and whatever body bytes uvicorn had already parsed upstream,
4. splices exactly the rest of ``Content-Length`` through a pipe (so a pipelined next
   request stays in the client's socket), and
5. gives the connection back to uvicorn with a fresh parser, so keep-alive carries on.

Failures: the client going away mid-body (EOF or reset) raises :class:`ClientGone`; the
client's connection is closed, and the caller resets the upstream connection so envd
sees the abort and discards its temporary file (ADR 36). The upstream closing, resetting
or answering before the body is through raises :class:`UpstreamStopped`; the client's
connection is marked not reusable (its body was not read to the end). The caller turns
both into the proxy's usual answers (``server.py``, the one place errors are mapped).

Chunked bodies, small bodies and everything else keep the ASGI path.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
from typing import Any, Final

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

#: Below this a body goes through ASGI and the pooled client: the relay opens its own
#: upstream connection, which costs a connect a pooled request does not pay.
RELAY_MIN_BYTES: Final = 256 * 1024
#: The scope extension that carries a request's :class:`RawBody`.
EXTENSION: Final = "hutch.raw_body"
#: The pipe between the sockets (1 MiB is Linux's default ``pipe-max-size``).
_PIPE_BYTES: Final = 1 << 20
_SPLICE_FLAGS: Final = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


class ClientGone(Exception):
    """The client closed or reset its connection before the whole body arrived."""


class UpstreamStopped(Exception):
    """The upstream closed, reset or answered before the whole body was sent."""


def can_splice() -> bool:
    """Whether this platform has ``os.splice`` (Linux, Python 3.10+)."""
    return hasattr(os, "splice")


class RawBody:
    """One request's body as bytes on the client's socket (module docstring)."""

    def __init__(self, protocol: HttpToolsProtocol, cycle: RequestResponseCycle) -> None:
        self._protocol = protocol
        self._cycle = cycle
        self.length = _content_length(cycle.scope["headers"])

    def relayable(self) -> bool:
        """A ``Content-Length`` body of at least :data:`RELAY_MIN_BYTES`, not yet read."""
        return (
            can_splice()
            and self.length is not None
            and self.length >= RELAY_MIN_BYTES
            and self._cycle.more_body
            and not self._cycle.disconnected
            and self._cycle.scope["method"] != "HEAD"
        )

    async def relay(self, upstream: socket.socket, head: bytes) -> int:
        """Send ``head`` and the whole body to ``upstream`` (non-blocking); returns the
        body's bytes. Raises :class:`ClientGone` or :class:`UpstreamStopped`."""
        assert self.length is not None
        loop = asyncio.get_running_loop()
        cycle, protocol = self._cycle, self._protocol
        transport = protocol.transport
        protocol.flow.pause_reading()
        if cycle.waiting_for_100_continue and not transport.is_closing():
            transport.write(_CONTINUE)
            cycle.waiting_for_100_continue = False
        buffered = bytes(cycle.body)
        cycle.body = bytearray()
        remaining = self.length - len(buffered) if cycle.more_body else 0
        try:
            await loop.sock_sendall(upstream, head + buffered)
        except OSError as exc:
            cycle.keep_alive = False
            raise UpstreamStopped from exc
        if remaining > 0:
            client = os.dup(transport.get_extra_info("socket").fileno())
            try:
                await _splice(loop, client, upstream.fileno(), remaining)
            except ClientGone:
                cycle.disconnected = True
                transport.close()
                raise
            except UpstreamStopped:
                cycle.keep_alive = False
                raise
            finally:
                os.close(client)
            # The parser still counts the body we spliced past it; the next request on
            # this connection starts with a fresh one.
            parser = httptools.HttpRequestParser(protocol)
            with contextlib.suppress(AttributeError):
                parser.set_dangerous_leniencies(lenient_data_after_close=True)
            protocol.parser = parser
        cycle.more_body = False
        return self.length


async def _splice(loop: asyncio.AbstractEventLoop, client: int, upstream: int, count: int) -> None:
    """Move ``count`` bytes from socket ``client`` to socket ``upstream`` via a pipe."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # above pipe-max-size: the default 64 KiB does
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        in_pipe = 0
        while count or in_pipe:
            if count:
                try:
                    n = os.splice(client, write_end, min(count, _PIPE_BYTES), flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    pass  # nothing to read now, or the pipe is full
                except OSError as exc:  # ECONNRESET and kin
                    raise ClientGone from exc
                else:
                    if n == 0:
                        raise ClientGone
                    count -= n
                    in_pipe += n
            if in_pipe:
                try:
                    n = os.splice(read_end, upstream, in_pipe, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    await _ready(loop, upstream, write=True)
                    continue
                except OSError as exc:  # EPIPE, ECONNRESET
                    raise UpstreamStopped from exc
                in_pipe -= n
                continue
            await _ready(loop, upstream, read=client)
    finally:
        os.close(read_end)
        os.close(write_end)


async def _ready(
    loop: asyncio.AbstractEventLoop, upstream: int, *, read: int | None = None, write: bool = False
) -> None:
    """Wait until ``read`` is readable or ``upstream`` writable; the upstream becoming
    readable (an early answer, a close) meanwhile raises :class:`UpstreamStopped`."""
    done: asyncio.Future[str] = loop.create_future()

    def fire(what: str) -> None:
        if not done.done():
            done.set_result(what)

    loop.add_reader(upstream, fire, "upstream")
    if read is not None:
        loop.add_reader(read, fire, "client")
    if write:
        loop.add_writer(upstream, fire, "writable")
    try:
        what = await done
    finally:
        loop.remove_reader(upstream)
        if read is not None:
            loop.remove_reader(read)
        if write:
            loop.remove_writer(upstream)
    if what == "upstream":
        raise UpstreamStopped


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body's length when it is framed by one valid ``Content-Length`` alone."""
    length: int | None = None
    for name, value in headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            if length is not None or not value.strip().isdigit():
                return None
            length = int(value)
    return length


class RelayingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol whose scopes carry a :class:`RawBody`."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope and "path" in self.scope:
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})  # type: ignore[assignment]
            extensions[EXTENSION] = RawBody(self, cycle)


class ResponseReader:
    """An upstream response read with httptools' parser: head, then body pieces."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.head_done = False
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    @property
    def status(self) -> int:
        return int(self.parser.get_status_code())

    def framed(self) -> bool:
        """Whether the body has a length or chunked framing (else it ends at close)."""
        return any(k in (b"content-length", b"transfer-encoding") for k, _ in self.headers)

    def feed(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def take_body(self) -> bytes:
        body, self.body = b"".join(self.body), []
        return body
