"""Pure tests of the sandbox address allocator (no system access)."""

from __future__ import annotations

import threading
from ipaddress import IPv4Address, IPv4Network

import pytest

from hutch.node.network.ipam import AddressPool, allocate, assignable_range, is_assignable
from hutch.shared.errors import AlreadyExistsError, InvalidArgumentError, ResourceExhaustedError

NET = IPv4Network("10.11.0.0/29")  # .0 network, .1 gateway, .2-.6 sandboxes, .7 broadcast


def a(last: int) -> IPv4Address:
    return IPv4Address(f"10.11.0.{last}")


def test_assignable_range_skips_network_gateway_and_broadcast() -> None:
    first, last = assignable_range(NET)
    assert (IPv4Address(first), IPv4Address(last)) == (a(2), a(6))
    assert not is_assignable(NET, a(1))
    assert not is_assignable(NET, a(7))
    assert is_assignable(NET, a(4))


def test_assignable_range_rejects_subnet_without_room() -> None:
    with pytest.raises(InvalidArgumentError):
        assignable_range(IPv4Network("10.11.0.0/31"))


def test_allocate_is_deterministic_lowest_free_without_cursor() -> None:
    assert allocate(NET, set()) == a(2)
    assert allocate(NET, {a(2), a(3)}) == a(4)
    assert allocate(NET, {a(2), a(3)}) == allocate(NET, {a(3), a(2)})


def test_allocate_walks_forward_from_cursor_and_wraps() -> None:
    assert allocate(NET, set(), after=a(3)) == a(4)
    assert allocate(NET, {a(6)}, after=a(5)) == a(2)
    assert allocate(NET, {a(2), a(6)}, after=a(6)) == a(3)


def test_allocate_ignores_cursor_outside_range() -> None:
    assert allocate(NET, set(), after=IPv4Address("192.0.2.9")) == a(2)


def test_allocate_raises_when_full() -> None:
    with pytest.raises(ResourceExhaustedError):
        allocate(NET, {a(i) for i in range(2, 7)})


def test_allocate_handles_a_large_nearly_full_subnet() -> None:
    big = IPv4Network("10.11.0.0/16")
    first, last = assignable_range(big)
    used = {IPv4Address(i) for i in range(first, last)}
    assert allocate(big, used) == IPv4Address(last)


def test_pool_claim_does_not_reuse_a_just_released_address() -> None:
    pool = AddressPool(NET)
    first = pool.claim()
    pool.release(first)
    assert pool.claim() == a(3)


def test_pool_starts_after_recovered_addresses() -> None:
    pool = AddressPool(NET, used=[a(2), a(4)])
    assert pool.claim() == a(5)
    assert pool.used == {a(2), a(4), a(5)}


def test_pool_claim_specific_address() -> None:
    pool = AddressPool(NET)
    assert pool.claim(a(5)) == a(5)
    with pytest.raises(AlreadyExistsError):
        pool.claim(a(5))
    with pytest.raises(InvalidArgumentError):
        pool.claim(a(1))
    with pytest.raises(InvalidArgumentError):
        pool.claim(IPv4Address("10.12.0.2"))


def test_pool_release_is_idempotent_and_mark_used_ignores_foreign() -> None:
    pool = AddressPool(NET)
    pool.release(a(3))
    pool.mark_used([a(3), IPv4Address("192.0.2.1")])
    assert pool.used == {a(3)}


def test_pool_exhaustion_then_release_makes_room() -> None:
    pool = AddressPool(NET)
    got = [pool.claim() for _ in range(5)]
    with pytest.raises(ResourceExhaustedError):
        pool.claim()
    pool.release(got[2])
    assert pool.claim() == got[2]


def test_pool_concurrent_claims_are_unique() -> None:
    pool = AddressPool(IPv4Network("10.11.0.0/20"))
    results: list[IPv4Address] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        mine = [pool.claim() for _ in range(200)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == len(set(results)) == 1600
