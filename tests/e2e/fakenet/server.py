"""The fake internet's servers, run inside its network namespace (``fakenet.py`` starts it).

Usage: ``python server.py CONFIG.json``. On each web address: HTTP on 80 and 8080, TLS on
443 (a self-signed certificate for every name), each answering ``served-by=<the address
that accepted> host=<Host>``; UDP 9999 on the first address records who sent what; a DNS
server (dnslib) answers the zone; TCP 7000 on the first address serves the record as
JSON. Prints ``ready`` once everything listens. Runs until killed.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys

from dnslib import QTYPE, RR, A, DNSRecord

EVENTS: list[dict[str, object]] = []


async def _http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    local = writer.get_extra_info("sockname")[0]
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
        # A connection that never sends a request (the flood test) is held until it closes.
        writer.close()
        return
    host = ""
    target = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
    if target.startswith(b"/bytes/") and target[7:].isdigit():
        await _bytes(writer, int(target[7:]))
        return
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"host":
            host = value.strip().decode(errors="replace")
    body = f"served-by={local} host={host}\n".encode()
    EVENTS.append({"kind": "http", "local": local, "host": host})
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    try:
        await writer.drain()
    finally:
        writer.close()


async def _bytes(writer: asyncio.StreamWriter, size: int) -> None:
    """``GET /bytes/N``: N zero bytes (throughput measurements)."""
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        + f"Connection: close\r\nContent-Length: {size}\r\n\r\n".encode()
    )
    chunk = b"\0" * (256 * 1024)
    left = size
    try:
        while left > 0:
            writer.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
            await writer.drain()
    finally:
        writer.close()


async def _hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Port 8081: accept and keep the connection until the peer closes it."""
    try:
        await reader.read()
    finally:
        writer.close()


async def _control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    body = json.dumps(EVENTS).encode()
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    writer.close()


class _Udp(asyncio.DatagramProtocol):
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        EVENTS.append({"kind": "udp", "source": addr[0], "data": data.decode(errors="replace")})


class _Dns(asyncio.DatagramProtocol):
    def __init__(self, zone: dict[str, str]) -> None:
        self.zone = zone

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = DNSRecord.parse(data)
        except Exception:
            return
        reply = query.reply()
        name = str(query.q.qname).rstrip(".").lower()
        address = self.zone.get(name)
        if address is None:
            for pattern, value in self.zone.items():
                if pattern.startswith("*.") and name.endswith(pattern[1:]):
                    address = value
        if address is not None and query.q.qtype == QTYPE.A:
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(address), ttl=5))
        elif address is None:
            reply.header.rcode = 3
        EVENTS.append({"kind": "dns", "name": name, "source": addr[0]})
        self.transport.sendto(reply.pack(), addr)  # type: ignore[attr-defined]


async def main(config_path: str) -> None:
    with open(config_path) as f:
        config = json.load(f)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(config["cert"], config["key"])
    loop = asyncio.get_running_loop()
    servers = []
    for address in config["web"]:
        servers.append(await asyncio.start_server(_http, address, 80))
        servers.append(await asyncio.start_server(_http, address, 8080))
        servers.append(await asyncio.start_server(_hold, address, 8081, backlog=1024))
        servers.append(await asyncio.start_server(_http, address, 443, ssl=tls))
    first = config["web"][0]
    servers.append(await asyncio.start_server(_control, first, 7000))
    await loop.create_datagram_endpoint(_Udp, local_addr=(first, 9999))
    await loop.create_datagram_endpoint(
        lambda: _Dns(config["zone"]), local_addr=(config["dns"], 53)
    )
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
