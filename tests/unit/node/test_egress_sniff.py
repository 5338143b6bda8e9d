"""The egress filter's hostname sniffing (pure): real ClientHellos from ``ssl``, every
truncation of them, random mutations, and HTTP requests good and bad."""

from __future__ import annotations

import random
import ssl

import pytest

from hutch.node.egress.resolver import _query, parse_answer
from hutch.node.egress.sniff import MAX_PEEK, sniff, sniff_http, sniff_tls


def client_hello(server_name: str | None) -> bytes:
    """The first flight of a real TLS client (Python's ``ssl``) for ``server_name``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_sni_of_a_real_client_hello() -> None:
    assert sniff_tls(client_hello("Allowed.Test")).hostname == "allowed.test"
    assert sniff(client_hello("a.b.wild.test"), port=443).hostname == "a.b.wild.test"


def test_client_hello_without_sni_is_refused() -> None:
    found = sniff_tls(client_hello(None))
    assert found.hostname is None and not found.need_more and "SNI" in (found.error or "")


def test_every_truncation_asks_for_more_and_never_guesses() -> None:
    hello = client_hello("allowed.test")
    for n in range(len(hello)):
        found = sniff_tls(hello[:n])
        assert found.need_more, n
        assert found.hostname is None


def test_fragmented_over_records() -> None:
    hello = client_hello("allowed.test")
    body = hello[5:]
    split = 40
    records = b"".join(
        b"\x16\x03\x01" + len(part).to_bytes(2) + part for part in (body[:split], body[split:])
    )
    assert sniff_tls(records).hostname == "allowed.test"


def test_random_mutations_never_crash_and_never_invent_a_name() -> None:
    hello = bytearray(client_hello("allowed.test"))
    rng = random.Random(13)
    for _ in range(3000):
        mutated = bytearray(hello)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        found = sniff_tls(bytes(mutated))
        if found.hostname is not None:
            # A mutation outside the name may still parse; the name is then a DNS name.
            assert all(c.isalnum() or c in ".-_" for c in found.hostname)
    for _ in range(500):
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(0, 600)))
        found = sniff(junk, port=443)
        assert found.hostname is None or found.hostname.isascii()


def test_not_tls_and_oversized() -> None:
    assert sniff_tls(b"GET / HTTP/1.1\r\n").error
    huge = b"\x16\x03\x01\x40\x00" + b"\x01\xff\xff\xff" + b"\0" * (MAX_PEEK + 100)
    assert not sniff_tls(huge).need_more


@pytest.mark.parametrize(
    ("request_bytes", "host"),
    [
        (b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n", "allowed.test"),
        (b"GET /x HTTP/1.1\r\nUser-Agent: c\r\nhOST: Allowed.Test:8080\r\n\r\n", "allowed.test"),
        (b"POST / HTTP/1.0\r\nHost: a.b\r\nContent-Length: 3\r\n\r\nabc", "a.b"),
    ],
)
def test_http_host(request_bytes: bytes, host: str) -> None:
    assert sniff_http(request_bytes).hostname == host
    assert sniff(request_bytes, port=80).hostname == host


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",  # two: smuggling
        b"GET / HTTP/1.1\r\nHost : a.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test/evil\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test:x\r\n\r\n",
        b"\x00\x01garbage\r\n\r\n",
        b"GET / SPDY/3\r\nHost: a.test\r\n\r\n",
    ],
)
def test_bad_http_is_refused(request_bytes: bytes) -> None:
    found = sniff_http(request_bytes)
    assert found.hostname is None and not found.need_more


def test_http_prefixes_need_more_and_garbage_is_refused_early() -> None:
    full = b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
    for n in range(len(full)):
        assert sniff_http(full[:n]).need_more, n
    assert sniff_http(b"\x05\x01\x00").error  # a SOCKS greeting
    assert sniff_http(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 4000).error


def test_dns_answer_parsing() -> None:
    import dnslib  # a pinned test dependency: its absence is an error, not a skip

    query = _query("allowed.test", 4242)
    q = dnslib.DNSRecord.parse(query)
    assert str(q.q.qname) == "allowed.test."
    reply = q.reply()
    reply.add_answer(*dnslib.RR.fromZone("allowed.test. 60 A 198.18.0.2"))
    reply.add_answer(*dnslib.RR.fromZone("allowed.test. 60 A 198.18.0.4"))
    answer = parse_answer(reply.pack(), 4242)
    assert [str(a) for a in answer] == ["198.18.0.2", "198.18.0.4"]
    with pytest.raises(ValueError):
        parse_answer(reply.pack(), 1)
    nx = q.reply()
    nx.header.rcode = 3
    assert parse_answer(nx.pack(), 4242) == []
