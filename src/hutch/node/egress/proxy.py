"""``EgressFilter``: the asyncio server that decides a sandbox's redirected web connections.

The nft dstnat (``network/rules.py``) sends TCP to ports 80 and 443 of every sandbox
whose ``allowOut`` names domains here (the gateway address, ``egress_filter_port``). Per
connection:

1. the original destination port (``SO_ORIGINAL_DST``) and the sandbox (by its source
   address, which the bridge's anti-spoofing rules pin) are looked up;
2. the first bytes are read (at most ``sniff.MAX_PEEK``, for at most ``read_timeout_s``)
   until the TLS SNI or the HTTP ``Host`` is known;
3. the hostname must match the sandbox's domain patterns *now* (an update is in force for
   the next connection);
4. the filter resolves the hostname **itself** with the node's resolver and dials the
   first address that is not refused (never the address the sandbox dialed, so
   ``/etc/hosts`` or forged DNS in the sandbox gains nothing), on the original port;
5. the bytes read so far are sent on and the two sockets are spliced until either closes.

Refused addresses, whatever the policy: the ``denied_egress`` networks (metadata range,
LAN), the sandbox subnet, loopback, multicast and any address of this host. Anything
refused is closed at once (the sandbox sees a reset connection or EOF).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address

from hutch.node.egress.resolver import Resolver
from hutch.node.egress.sniff import MAX_PEEK, sniff
from hutch.shared.egress import EgressPolicy, domain_allowed
from hutch.shared.errors import HutchError

log = logging.getLogger("hutch.node.egress")

_SO_ORIGINAL_DST = 80
_CHUNK = 1024 * 1024
#: StreamReader buffer limit: reading pauses at twice this; the default 64 KiB made the
#: copy stop and start every few packets.
_LIMIT = 1024 * 1024

#: The sandbox's policy by its address; None: not a sandbox of this node.
PolicyLookup = Callable[[IPv4Address], EgressPolicy | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterConfig:
    """Where the filter listens and what it never dials."""

    listen: IPv4Address
    port: int
    refused: Sequence[IPv4Network] = ()
    read_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0


def original_port(sock: socket.socket) -> int:
    """The destination port the sandbox dialed before the dstnat (``SO_ORIGINAL_DST``)."""
    raw = sock.getsockopt(socket.SOL_IP, _SO_ORIGINAL_DST, 16)
    port: int = struct.unpack_from("!H", raw, 2)[0]
    return port


def is_local_address(address: IPv4Address) -> bool:
    """Whether ``address`` is one of this host's (binding to it succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((str(address), 0))
        except OSError:
            return False
    return True


class EgressFilter:
    """See the module docstring. ``start()`` after the bridge exists; ``aclose()`` last."""

    def __init__(self, config: FilterConfig, *, policies: PolicyLookup, resolver: Resolver):
        self.config = config
        self._policies = policies
        self._resolver = resolver
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on ``listen:port`` (the gateway: only the bridge's dstnat reaches it)."""
        self._server = await asyncio.start_server(
            self._handle, host=str(self.config.listen), port=self.config.port,
            reuse_address=True, backlog=1024, limit=_LIMIT,
        )  # fmt: skip

    async def aclose(self) -> None:
        """Stop listening and cut every spliced connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, HutchError) as exc:
            log.debug("egress: connection ended: %s", exc)
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        peer = IPv4Address(writer.get_extra_info("peername")[0])
        port = original_port(sock)
        head, hostname, why = await self._read_hostname(reader, port=port)
        if hostname is None:
            log.info("egress: %s port %d refused: %s", peer, port, why)
            return
        policy = self._policies(peer)
        if policy is None or not domain_allowed(hostname, policy.domains):
            log.info("egress: %s to %s:%d refused by its policy", peer, hostname, port)
            return
        upstream = await self._dial(hostname, port)
        if upstream is None:
            log.info("egress: %s to %s:%d: no address it may reach", peer, hostname, port)
            return
        up_reader, up_writer = upstream
        try:
            up_writer.write(head)
            await up_writer.drain()
            await _splice(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await up_writer.wait_closed()

    async def _read_hostname(
        self, reader: asyncio.StreamReader, *, port: int
    ) -> tuple[bytes, str | None, str]:
        data = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.read_timeout_s
        while True:
            found = sniff(data, port=port)
            if found.hostname is not None:
                return data, found.hostname, ""
            if not found.need_more:
                return data, None, found.error or "refused"
            left = deadline - loop.time()
            if left <= 0:
                return data, None, "no hostname in time"
            try:
                chunk = await asyncio.wait_for(reader.read(MAX_PEEK - len(data)), left)
            except TimeoutError:
                return data, None, "no hostname in time"
            if not chunk:
                return data, None, "closed before a hostname"
            data += chunk

    def refused(self, address: IPv4Address) -> bool:
        """Whether the filter never dials ``address``, whatever a policy says."""
        if (
            address.is_loopback or address.is_multicast or address.is_unspecified
            or address.is_link_local or address.is_reserved
        ):  # fmt: skip
            return True
        if any(address in net for net in self.config.refused):
            return True
        return is_local_address(address)

    async def _dial(
        self, hostname: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        with contextlib.suppress(ValueError):
            ip_address(hostname)
            return None  # an IP literal is not a domain: CIDR rules decide those
        addresses = await self._resolver.resolve(hostname)
        for address in addresses:
            if self.refused(address):
                continue
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(str(address), port, limit=_LIMIT),
                    self.config.connect_timeout_s,
                )
            except (OSError, TimeoutError) as exc:
                log.info("egress: dialing %s (%s:%d) failed: %s", hostname, address, port, exc)
        return None


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(_CHUNK):
            dst.write(chunk)
            await dst.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if dst.can_write_eof():
                dst.write_eof()


async def _splice(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways; done when both directions ended (or either failed)."""
    results = await asyncio.gather(
        _pipe(a_reader, b_writer), _pipe(b_reader, a_writer), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, OSError):
            raise result
