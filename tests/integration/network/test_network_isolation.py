"""Who can talk to whom: real namespaces, veths, a bridge and nftables (root only).

A refused connection shows as ``error <ERRNO>`` at once (the firewall rejects, see
``rules.py``), so no test here waits for a timeout to prove a block.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from nethelpers import Processes, Upstream, probe, probe_argv, sh

from hutch.node.network.linux import LinuxSandboxNetworks

pytestmark = pytest.mark.root


async def test_host_reaches_sandbox_port(
    networks: LinuxSandboxNetworks, processes: Processes
) -> None:
    a = await networks.setup("sbxa", allow_internet=False)
    _, port = processes.start(probe_argv(a.netns_name, "serve", "0.0.0.0", "0"))
    # The proxy's view: the sandbox's address; the sandbox sees the host's bridge address.
    assert probe(None, "get", str(a.address), str(port)) == f"ok {a.gateway}"


async def test_sandbox_has_loopback(networks: LinuxSandboxNetworks, processes: Processes) -> None:
    a = await networks.setup("sbxa", allow_internet=False)
    _, port = processes.start(probe_argv(a.netns_name, "serve", "127.0.0.1", "0"))
    assert probe(a.netns_name, "get", "127.0.0.1", str(port)) == "ok 127.0.0.1"


async def test_sandbox_cannot_reach_another_sandbox(
    networks: LinuxSandboxNetworks, processes: Processes
) -> None:
    a = await networks.setup("sbxa", allow_internet=True)
    b = await networks.setup("sbxb", allow_internet=True)
    _, port = processes.start(probe_argv(b.netns_name, "serve", "0.0.0.0", "0"))
    assert probe(None, "get", str(b.address), str(port)).startswith("ok")  # B does serve
    assert probe(a.netns_name, "get", str(b.address), str(port)) == "error EHOSTUNREACH"


async def test_sandbox_cannot_reach_host_services(
    networks: LinuxSandboxNetworks, processes: Processes, dummy_host_address: IPv4Address
) -> None:
    a = await networks.setup("sbxa", allow_internet=True)
    targets = [str(a.gateway), "127.0.0.1", str(dummy_host_address)]
    ports = {t: processes.start(probe_argv(None, "serve", t, "0"))[1] for t in targets}
    for target, port in ports.items():
        assert probe(None, "get", target, str(port)).startswith("ok"), target  # they serve
    assert probe(a.netns_name, "get", str(a.gateway), str(ports[str(a.gateway)])) == (
        "error EHOSTUNREACH"
    )
    # 127.0.0.1 inside the sandbox is its own loopback: nothing listens there.
    assert probe(a.netns_name, "get", "127.0.0.1", str(ports["127.0.0.1"])) == (
        "error ECONNREFUSED"
    )
    dummy = str(dummy_host_address)
    assert probe(a.netns_name, "get", dummy, str(ports[dummy])) == "error EHOSTUNREACH"


async def test_allowed_sandbox_reaches_upstream_through_nat(
    networks: LinuxSandboxNetworks, processes: Processes, upstream: Upstream
) -> None:
    a = await networks.setup("sbxa", allow_internet=True)
    _, port = processes.start(probe_argv(upstream.netns, "serve", "0.0.0.0", "0"))
    # The upstream sees the host's address (masquerade); it has no route to the sandbox
    # subnet, so without NAT this would not even connect.
    assert probe(a.netns_name, "get", str(upstream.address), str(port)) == (
        f"ok {upstream.host_address}"
    )


async def test_disallowed_sandbox_cannot_reach_upstream(
    networks: LinuxSandboxNetworks, processes: Processes, upstream: Upstream
) -> None:
    allowed = await networks.setup("sbxa", allow_internet=True)
    denied = await networks.setup("sbxb", allow_internet=False)
    _, port = processes.start(probe_argv(upstream.netns, "serve", "0.0.0.0", "0"))
    assert probe(allowed.netns_name, "get", str(upstream.address), str(port)).startswith("ok")
    assert probe(denied.netns_name, "get", str(upstream.address), str(port)) == (
        "error EHOSTUNREACH"
    )


async def test_denied_egress_network_is_refused_even_with_internet(
    networks: LinuxSandboxNetworks, processes: Processes, upstream: Upstream
) -> None:
    a = await networks.setup("sbxa", allow_internet=True)
    _, port = processes.start(probe_argv(upstream.netns, "serve", "0.0.0.0", "0"))
    assert probe(a.netns_name, "get", str(upstream.address), str(port)).startswith("ok")
    assert probe(a.netns_name, "get", str(upstream.denied_address), str(port)) == (
        "error EHOSTUNREACH"
    )


async def test_sandbox_cannot_borrow_another_sandboxes_address(
    networks: LinuxSandboxNetworks, processes: Processes, upstream: Upstream
) -> None:
    attacker = await networks.setup("sbxa", allow_internet=False)
    victim = await networks.setup("sbxb", allow_internet=True)
    receiver, port = processes.start(
        probe_argv(upstream.netns, "udp-recv", str(upstream.address), "0", "1")
    )
    # Root in the sandbox could do this: take the victim's address and send from it.
    sh("ip", "-n", attacker.netns_name, "addr", "add", f"{victim.address}/32", "dev", "eth0")
    target = [str(upstream.address), str(port)]
    assert probe(attacker.netns_name, "udp-send", *target, str(victim.address), "spoofed") == (
        "sent"
    )
    assert probe(victim.netns_name, "udp-send", *target, str(victim.address), "genuine") == ("sent")
    # Datagrams are handled in order; had the forged one passed, it would come first.
    assert processes.output(receiver) == f"genuine {upstream.host_address}"
