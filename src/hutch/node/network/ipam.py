"""Sandbox address allocation: pure logic, no IO.

The allocator is a function of (subnet, used addresses, cursor), so the node can keep
the used set wherever it likes (its store, later) and tests need no system at all.
:class:`AddressPool` wraps it with a lock for callers inside one process; the live
system's addresses come from ``LinuxSandboxNetworks.list_attached`` on reconcile.

Allocation is round-robin from the last address handed out rather than lowest-free:
a just-released address is reused as late as possible, so stale conntrack entries and
ARP caches that still name it have expired before another sandbox gets it (the same
reason Kubernetes' host-local IPAM walks forward).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Set
from ipaddress import IPv4Address, IPv4Network

from hutch.shared.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    ResourceExhaustedError,
)


def assignable_range(subnet: IPv4Network) -> tuple[int, int]:
    """First and last address (as ints) a sandbox may get.

    The network and broadcast addresses are unusable and the first host address is the
    gateway on the bridge.
    """
    first = int(subnet.network_address) + 2
    last = int(subnet.broadcast_address) - 1
    if first > last:
        raise InvalidArgumentError(f"subnet {subnet} has no room for sandboxes")
    return first, last


def is_assignable(subnet: IPv4Network, address: IPv4Address) -> bool:
    """Whether ``address`` could be a sandbox's address in ``subnet``."""
    first, last = assignable_range(subnet)
    return first <= int(address) <= last


def allocate(
    subnet: IPv4Network, used: Set[IPv4Address], *, after: IPv4Address | None = None
) -> IPv4Address:
    """The first assignable address of ``subnet`` not in ``used``, searching after ``after``.

    The search wraps around the subnet once. With ``after`` None it starts at the
    beginning, so the result only depends on the arguments.

    Raises:
        ResourceExhaustedError: every assignable address is in ``used``.
    """
    first, last = assignable_range(subnet)
    size = last - first + 1
    start = first
    if after is not None and first <= int(after) <= last:
        start = int(after) + 1
    used_ints = {int(a) for a in used}
    for step in range(size):
        candidate = first + (start - first + step) % size
        if candidate not in used_ints:
            return IPv4Address(candidate)
    raise ResourceExhaustedError(
        f"no free sandbox address in {subnet}",
        public_message="this node has no free sandbox addresses",
    )


class AddressPool:
    """Addresses in use in one subnet, safe to share between threads and tasks.

    ``claim`` decides and records in one locked step, so two concurrent setups can never
    receive the same address.
    """

    def __init__(self, subnet: IPv4Network, *, used: Iterable[IPv4Address] = ()) -> None:
        """Start with ``used`` already taken (e.g. recovered from the live system)."""
        self.subnet = subnet
        assignable_range(subnet)  # validates
        self._lock = threading.Lock()
        self._used: set[IPv4Address] = set(used)
        self._cursor: IPv4Address | None = max(self._used) if self._used else None

    @property
    def used(self) -> frozenset[IPv4Address]:
        """A snapshot of the addresses in use."""
        with self._lock:
            return frozenset(self._used)

    def claim(self, address: IPv4Address | None = None) -> IPv4Address:
        """Take ``address``, or the next free one if None, and return it.

        Raises:
            InvalidArgumentError: ``address`` is not assignable in this subnet.
            AlreadyExistsError: ``address`` is already in use.
            ResourceExhaustedError: no address is free.
        """
        with self._lock:
            if address is None:
                address = allocate(self.subnet, self._used, after=self._cursor)
                self._cursor = address
            elif not is_assignable(self.subnet, address):
                raise InvalidArgumentError(f"{address} is not a sandbox address in {self.subnet}")
            elif address in self._used:
                raise AlreadyExistsError(f"address {address} is already in use")
            self._used.add(address)
            return address

    def release(self, address: IPv4Address) -> None:
        """Give ``address`` back; releasing a free address is a no-op."""
        with self._lock:
            self._used.discard(address)

    def mark_used(self, addresses: Iterable[IPv4Address]) -> None:
        """Record addresses taken elsewhere (found on the live system or in a store)."""
        with self._lock:
            self._used.update(a for a in addresses if a in self.subnet)
