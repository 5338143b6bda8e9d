"""Setup, teardown, reconcile and leaks of sandbox networks (root only)."""

from __future__ import annotations

import asyncio
import os
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from nethelpers import Processes, network_settings, our_objects, probe, probe_argv, sh

from hutch.node.network.linux import LinuxSandboxNetworks, NetworkCommandError
from hutch.shared.errors import AlreadyExistsError

pytestmark = pytest.mark.root


def set_elements() -> str:
    """Our nft sets as text (their elements name addresses and veths)."""
    return "\n".join(
        sh("nft", "list", kind, family, "hntest", name).stdout
        for kind, family, name in (
            ("map", "inet", "policies"),
            ("set", "bridge", "ports"),
            ("set", "bridge", "addrs"),
        )
    )


def exists(netns: str | None = None, link: str | None = None) -> bool:
    if netns is not None:
        return Path("/run/netns", netns).exists()
    assert link is not None
    return Path("/sys/class/net", link).exists()


async def test_teardown_removes_netns_veth_and_rules(networks: LinuxSandboxNetworks) -> None:
    a = await networks.setup("sbxa", allow_internet=True)
    b = await networks.setup("sbxb", allow_internet=True)
    assert str(a.address) in set_elements()
    await networks.teardown("sbxa")
    assert not exists(netns=a.netns_name)
    assert not exists(link=a.host_veth)
    elements = set_elements()
    assert str(a.address) not in elements and a.host_veth not in elements
    assert str(b.address) in elements and exists(netns=b.netns_name)  # B untouched
    assert a.address not in networks.pool.used
    await networks.teardown("sbxa")  # idempotent
    await networks.teardown("never-was")


async def test_teardown_while_a_process_holds_the_netns(
    networks: LinuxSandboxNetworks, processes: Processes
) -> None:
    a = await networks.setup("sbxa", allow_internet=False)
    processes.start(probe_argv(a.netns_name, "serve", "0.0.0.0", "0"))
    await networks.teardown("sbxa")
    assert not exists(netns=a.netns_name) and not exists(link=a.host_veth)


async def test_setup_twice_is_refused(networks: LinuxSandboxNetworks) -> None:
    await networks.setup("sbxa", allow_internet=False)
    with pytest.raises(AlreadyExistsError):
        await networks.setup("sbxa", allow_internet=False)


async def test_failed_setup_leaves_nothing(networks: LinuxSandboxNetworks, tmp_path: Path) -> None:
    # An `ip` that fails inside the netns: the last of setup's three steps.
    ip = tmp_path / "ip"
    ip.write_text('#!/bin/sh\n[ "$1" = "-n" ] && { echo injected >&2; exit 1; }\nexec ip "$@"\n')
    ip.chmod(0o755)
    broken = LinuxSandboxNetworks(networks.settings, ip=str(ip))
    with pytest.raises(NetworkCommandError, match="injected"):
        await broken.setup("sbxa", allow_internet=True)
    assert await networks.list_attached() == []
    assert "10.213.91" not in set_elements()
    assert broken.pool.used == frozenset()


async def test_restart_recovers_and_reconciles(networks: LinuxSandboxNetworks) -> None:
    a = await networks.setup("sbxa", allow_internet=True)
    b = await networks.setup("sbxb", allow_internet=False)
    sh("ip", "netns", "add", "hntest-orphan")  # a crash right after `netns add`
    restarted = LinuxSandboxNetworks(network_settings())  # a new node process
    await restarted.ensure_bridge()  # idempotent, keeps the live sandboxes' elements
    attached = {n.sandbox_id: n for n in await restarted.recover()}
    assert set(attached) == {"sbxa", "sbxb", "orphan"}
    assert attached["sbxa"].address == a.address
    assert attached["sbxb"].host_veth == b.host_veth
    assert attached["orphan"].host_veth is None
    assert restarted.pool.used == {a.address, b.address}
    assert restarted.pool.claim() not in {a.address, b.address}
    assert str(a.address) in sh("nft", "list", "map", "inet", "hntest", "policies").stdout
    # The node keeps what its store knows (sbxa) and releases the rest by id alone.
    for unknown in ("sbxb", "orphan"):
        await restarted.teardown(unknown)
    assert [n.sandbox_id for n in await restarted.list_attached()] == ["sbxa"]
    assert str(b.address) not in set_elements()


async def test_teardown_finds_the_address_in_the_rules_when_the_veth_is_gone(
    networks: LinuxSandboxNetworks,
) -> None:
    a = await networks.setup("sbxa", allow_internet=True)
    sh("ip", "link", "del", "dev", a.host_veth)  # e.g. someone deleted it by hand
    restarted = LinuxSandboxNetworks(network_settings())
    await restarted.teardown("sbxa")
    assert str(a.address) not in set_elements()
    assert not exists(netns=a.netns_name)


async def test_concurrent_setups_get_distinct_working_addresses(
    networks: LinuxSandboxNetworks, processes: Processes
) -> None:
    ids = [f"sbx{i}" for i in range(8)]
    nets = await asyncio.gather(*(networks.setup(i, allow_internet=False) for i in ids))
    assert len({n.address for n in nets}) == len(ids)
    for net in nets[:3]:
        _, port = processes.start(probe_argv(net.netns_name, "serve", "0.0.0.0", "0"))
        assert probe(None, "get", str(net.address), str(port)) == f"ok {net.gateway}"
    await asyncio.gather(*(networks.teardown(i) for i in ids))
    assert await networks.list_attached() == []


async def test_setup_with_recorded_address(networks: LinuxSandboxNetworks) -> None:
    net = await networks.setup("sbxa", allow_internet=False, address=IPv4Address("10.213.91.77"))
    assert net.address == IPv4Address("10.213.91.77")
    assert "10.213.91.77/32" in sh("ip", "-n", net.netns_name, "addr").stdout


async def test_fifty_cycles_leave_nothing_behind(networks: LinuxSandboxNetworks) -> None:
    before = our_objects()
    elements_before = set_elements()
    netns_before = {n for n in os.listdir("/run/netns") if n.startswith("hntest-")}
    for i in range(50):
        await networks.setup(f"cycle{i}", allow_internet=i % 2 == 0)
        await networks.teardown(f"cycle{i}")
    assert our_objects() == before
    assert set_elements() == elements_before
    assert {n for n in os.listdir("/run/netns") if n.startswith("hntest-")} == netns_before
    assert networks.pool.used == frozenset()


async def test_remove_bridge_removes_everything_of_ours(networks: LinuxSandboxNetworks) -> None:
    await networks.setup("sbxa", allow_internet=True)
    await networks.teardown("sbxa")
    await networks.remove_bridge()
    assert our_objects() == {"netns": [], "links": [], "tables": []}
    await networks.remove_bridge()  # idempotent


async def test_teardown_after_remove_bridge(networks: LinuxSandboxNetworks) -> None:
    a = await networks.setup("sbxa", allow_internet=True)
    await networks.remove_bridge()  # our tables (and the bridge) go first
    await networks.teardown("sbxa")
    assert not exists(netns=a.netns_name) and not exists(link=a.host_veth)
    assert our_objects() == {"netns": [], "links": [], "tables": []}
