"""The hostname a connection asks for, from its first bytes (pure): TLS SNI or HTTP Host.

A small parser of our own (no maintained Python library parses a ClientHello without a
TLS stack around it): every length is checked against what is there, nothing is
trusted, and the answer is one of "need more bytes", "this hostname", or "refuse".
``tests/unit/node/test_egress_sniff.py`` feeds it real ClientHellos (from ``ssl``'s own
``SSLObject``), every truncation of them and random mutations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: What the filter reads at most before it decides (a ClientHello with many extensions,
#: post-quantum key shares included, fits; HTTP headers of a normal request too).
MAX_PEEK = 16 * 1024

_HOST_RE = re.compile(rb"^[A-Za-z0-9._-]{1,253}$")
_REQUEST_LINE = re.compile(rb"^[A-Z]{3,16} \S+ HTTP/1\.[01]$")


@dataclass(frozen=True, slots=True)
class Sniffed:
    """``hostname`` when found; ``need_more`` while the bytes so far are a valid prefix;
    otherwise ``error`` says why the connection is refused."""

    hostname: str | None = None
    need_more: bool = False
    error: str | None = None


NEED_MORE = Sniffed(need_more=True)


def _refuse(why: str) -> Sniffed:
    return Sniffed(error=why)


def sniff_tls(data: bytes) -> Sniffed:
    """The SNI host_name of the TLS ClientHello ``data`` starts with."""
    handshake = bytearray()
    pos = 0
    # The ClientHello may be fragmented over several handshake records.
    while True:
        if len(data) - pos < 5:
            return NEED_MORE if len(data) < MAX_PEEK else _refuse("ClientHello too long")
        ctype, major, length = data[pos], data[pos + 1], int.from_bytes(data[pos + 3 : pos + 5])
        if ctype != 0x16 or major != 3:
            return _refuse("not a TLS handshake record")
        if length == 0 or length > 16384:
            return _refuse("bad TLS record length")
        if len(data) - pos - 5 < length:
            return NEED_MORE if len(data) < MAX_PEEK else _refuse("ClientHello too long")
        handshake += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(handshake) >= 4:
            if handshake[0] != 0x01:
                return _refuse("first handshake message is not a ClientHello")
            body_len = int.from_bytes(handshake[1:4])
            if len(handshake) - 4 >= body_len:
                return _client_hello(bytes(handshake[4 : 4 + body_len]))
            if body_len > MAX_PEEK:
                return _refuse("ClientHello too long")


class _Short(Exception):
    pass


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _Short
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n))

    def vector(self, n: int) -> bytes:
        return self.take(self.number(n))

    def done(self) -> bool:
        return self.pos == len(self.data)


def _client_hello(body: bytes) -> Sniffed:
    r = _Reader(body)
    try:
        r.take(2 + 32)  # legacy_version, random
        r.vector(1)  # session id
        r.vector(2)  # cipher suites
        r.vector(1)  # compression methods
        if r.done():
            return _refuse("ClientHello without extensions (no SNI)")
        extensions = _Reader(r.vector(2))
        found: str | None = None
        while not extensions.done():
            ext_type = extensions.number(2)
            ext = extensions.vector(2)
            if ext_type != 0:
                continue
            if found is not None:
                return _refuse("two server_name extensions")
            found = _server_name(ext)
            if found is None:
                return _refuse("server_name without a host_name")
    except _Short:
        return _refuse("malformed ClientHello")
    if found is None:
        return _refuse("ClientHello without SNI")
    return _host(found.encode())


def _server_name(ext: bytes) -> str | None:
    names = _Reader(_Reader(ext).vector(2))
    host: str | None = None
    while not names.done():
        name_type = names.number(1)
        name = names.vector(2)
        if name_type == 0:
            if host is not None:
                return None  # RFC 6066: at most one host_name
            host = name.decode("ascii", errors="replace")
    return host


def _host(raw: bytes) -> Sniffed:
    if not _HOST_RE.match(raw):
        return _refuse("the hostname is not a DNS name")
    return Sniffed(hostname=raw.decode().lower().rstrip("."))


def sniff_http(data: bytes) -> Sniffed:
    """The ``Host`` of the HTTP/1.x request ``data`` starts with (without its port)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) >= MAX_PEEK:
            return _refuse("HTTP headers too long")
        first = data.split(b"\r\n", 1)[0]
        if data and not re.match(rb"^[A-Z]{0,16}( |$)", first[:17]):
            return _refuse("not an HTTP request")
        return NEED_MORE
    lines = data[:end].split(b"\r\n")
    if not _REQUEST_LINE.match(lines[0]):
        return _refuse("not an HTTP/1.x request line")
    hosts = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or name != name.strip() or not name:
            return _refuse("malformed header line")
        if name.lower() == b"host":
            hosts.append(value.strip())
    if len(hosts) != 1:
        return _refuse("want exactly one Host header")
    host = hosts[0]
    if host.startswith(b"["):
        return _refuse("IPv6 literal hosts are not filtered by name")
    name, _, port = host.partition(b":")
    if port and not port.isdigit():
        return _refuse("bad port in Host")
    return _host(name)


def sniff(data: bytes, *, port: int) -> Sniffed:
    """TLS on 443, HTTP on 80 (a TLS record on 80 is read as TLS too)."""
    if not data:
        return NEED_MORE
    if port == 443 or data[0] == 0x16:
        return sniff_tls(data)
    return sniff_http(data)
