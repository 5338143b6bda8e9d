"""A bench HTTP client that costs next to nothing per byte: ``sendfile(2)`` from the page cache.

One request per connection, framed by ``Content-Length``; the body is a byte range of a file,
sent by the kernel from the page cache straight to the socket, so the client process copies
nothing and parallel parts need no process each (a ``curl`` per part did, ADR 36 addendum 2).
Threads, not processes: ``os.sendfile`` and ``recv`` release the GIL.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit


def send_range(
    url: str,
    method: str,
    target: str,
    path: str,
    *,
    offset: int = 0,
    length: int | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """``method target`` with bytes ``[offset, offset+length)`` of ``path`` as the body.

    Returns the status and the response body (read to its ``Content-Length``).
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    with open(path, "rb") as f:
        if length is None:
            length = os.fstat(f.fileno()).st_size - offset
        lines = [
            f"{method} {target} HTTP/1.1",
            f"Host: {host}:{port}",
            "Content-Type: application/octet-stream",
            f"Content-Length: {length}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        with socket.create_connection((host, port), timeout=120) as s:
            s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            # ``socket.sendfile`` loops on ``os.sendfile`` (waiting for the socket when it
            # is full, as a socket with a timeout is non-blocking underneath).
            sent = s.sendfile(f, offset, length)
            if sent != length:
                raise OSError(f"{path}: sendfile stopped at {sent} of {length} bytes")
            return _response(s)


def _response(s: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError(f"connection closed before a response: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    want = int(fields.get("content-length", "-1"))
    while want < 0 or len(body) < want:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, body
