"""The node's resolver for the egress filter: A records over UDP from one server, or the
host's own (``getaddrinfo``) when none is set. The filter dials what this returns, never
what the sandbox resolved (ADR 0022)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import struct
from ipaddress import IPv4Address

from hutch.shared.errors import NotFoundError, UnavailableError


def _query(name: str, ident: int) -> bytes:
    header = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0)  # recursion desired
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    return header + qname + struct.pack(">HH", 1, 1)  # A, IN


def _skip_name(msg: bytes, pos: int) -> int:
    while True:
        if pos >= len(msg):
            raise ValueError("truncated name")
        n = msg[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0 == 0xC0:
            return pos + 2
        pos += 1 + n


def parse_answer(msg: bytes, ident: int) -> list[IPv4Address]:
    """The A records of a DNS answer to query ``ident`` (``ValueError`` if it is none)."""
    if len(msg) < 12:
        raise ValueError("short DNS message")
    rid, flags, qd, an, _, _ = struct.unpack(">HHHHHH", msg[:12])
    if rid != ident or not flags & 0x8000:
        raise ValueError("not the answer to our query")
    if flags & 0x000F == 3:
        return []  # NXDOMAIN
    pos = 12
    for _ in range(qd):
        pos = _skip_name(msg, pos) + 4
    out = []
    for _ in range(an):
        pos = _skip_name(msg, pos)
        if pos + 10 > len(msg):
            raise ValueError("truncated answer")
        rtype, rclass, _, rdlen = struct.unpack(">HHIH", msg[pos : pos + 10])
        pos += 10
        if rtype == 1 and rclass == 1 and rdlen == 4:
            out.append(IPv4Address(bytes(msg[pos : pos + 4])))
        pos += rdlen
    return out


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.answer: asyncio.Future[list[IPv4Address]] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if self.answer.done():
            return
        with contextlib.suppress(ValueError):  # not ours (or garbage): keep waiting
            self.answer.set_result(parse_answer(data, self.ident))

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


class Resolver:
    """``server`` ``"ip"`` or ``"ip:port"``; empty: the host's resolver."""

    def __init__(self, server: str = "", *, timeout_s: float = 3.0) -> None:
        self._server: tuple[str, int] | None = None
        if server:
            host, _, port = server.partition(":")
            self._server = (str(IPv4Address(host)), int(port or 53))
        self._timeout_s = timeout_s

    async def resolve(self, name: str) -> list[IPv4Address]:
        """The IPv4 addresses of ``name``; ``NotFoundError`` when it has none."""
        if self._server is None:
            found = await self._system(name)
        else:
            found = await self._udp(name)
        if not found:
            raise NotFoundError(f"{name} has no IPv4 address")
        return found

    async def _system(self, name: str) -> list[IPv4Address]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(name, None, family=socket.AF_INET)
        except socket.gaierror:
            return []
        return list(dict.fromkeys(IPv4Address(i[4][0]) for i in infos))

    async def _udp(self, name: str) -> list[IPv4Address]:
        assert self._server is not None
        loop = asyncio.get_running_loop()
        ident = secrets.randbelow(65536)
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Protocol(ident), remote_addr=self._server
        )
        try:
            transport.sendto(_query(name, ident))
            return await asyncio.wait_for(proto.answer, self._timeout_s)
        except (TimeoutError, OSError) as exc:
            raise UnavailableError(f"resolver {self._server} did not answer for {name}") from exc
        finally:
            transport.close()
