"""Fixtures for the network tests: a test-only bridge, a fake upstream, probe processes.

See ``nethelpers.py`` for the names and addresses used, all unique to these tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from ipaddress import IPv4Address

import pytest
from nethelpers import (
    DENIED_NET,
    DUMMY_ADDR,
    DUMMY_LINK,
    UPSTREAM_ADDR,
    UPSTREAM_DENIED_ADDR,
    UPSTREAM_HOST_ADDR,
    UPSTREAM_HOST_LINK,
    UPSTREAM_NETNS,
    Processes,
    Upstream,
    missing_system,
    network_settings,
    purge_test_objects,
    sh,
    write_sysctl,
)

from hutch.node.network.linux import LinuxSandboxNetworks
from tests.conftest import machine_lacks


@pytest.fixture(autouse=True)
def _require_system() -> None:
    reason = missing_system()
    if reason:
        machine_lacks(reason)


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture
async def networks() -> AsyncIterator[LinuxSandboxNetworks]:
    """A bridge and firewall of our own; everything is removed again, even on failure."""
    purge_test_objects()
    nets = LinuxSandboxNetworks(network_settings())
    try:
        await nets.ensure_bridge()
        yield nets
    finally:
        try:
            for attached in await nets.list_attached():
                await nets.teardown(attached.sandbox_id)
            await nets.remove_bridge()
        finally:
            purge_test_objects()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    """The "router" test host: the sandbox's NATed traffic leaves the host through it."""
    netns, link = UPSTREAM_NETNS, UPSTREAM_HOST_LINK
    try:
        sh("ip", "netns", "add", netns)
        sh("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns)
        sh("ip", "addr", "add", f"{UPSTREAM_HOST_ADDR}/24", "dev", link)
        sh("ip", "link", "set", "dev", link, "up")
        # Replies to NATed connections arrive here and must be forwarded to the bridge.
        write_sysctl(f"/proc/sys/net/ipv4/conf/{link}/forwarding", "1")
        sh("ip", "-n", netns, "link", "set", "dev", "lo", "up")
        sh("ip", "-n", netns, "addr", "add", f"{UPSTREAM_ADDR}/24", "dev", "eth0")
        sh("ip", "-n", netns, "addr", "add", f"{UPSTREAM_DENIED_ADDR}/24", "dev", "eth0")
        sh("ip", "-n", netns, "link", "set", "dev", "eth0", "up")
        # The upstream has no route to the sandbox subnet: only masquerading makes replies
        # find their way back, which is what the NAT test relies on.
        sh("ip", "route", "add", str(DENIED_NET), "via", str(UPSTREAM_ADDR), "dev", link)
        yield Upstream(
            netns=netns,
            address=UPSTREAM_ADDR,
            denied_address=UPSTREAM_DENIED_ADDR,
            host_address=UPSTREAM_HOST_ADDR,
        )
    finally:
        sh("ip", "link", "del", "dev", link, check=False)  # takes its routes along
        sh("ip", "netns", "del", netns, check=False)


@pytest.fixture
def dummy_host_address() -> Iterator[IPv4Address]:
    """An address of the host on a dummy link, where a host service could listen."""
    try:
        # A veth pair rather than a dummy link: some kernels (this host's) lack dummy.
        sh("ip", "link", "add", DUMMY_LINK, "type", "veth", "peer", "name", DUMMY_LINK + "p")
        sh("ip", "addr", "add", f"{DUMMY_ADDR}/32", "dev", DUMMY_LINK)
        sh("ip", "link", "set", "dev", DUMMY_LINK, "up")
        yield DUMMY_ADDR
    finally:
        sh("ip", "link", "del", "dev", DUMMY_LINK, check=False)
