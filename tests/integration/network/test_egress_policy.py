"""Egress policies in the kernel and the egress filter, with real netns (root only).

The fake upstream (``conftest.upstream``) serves HTTP; the filter runs in this process
on the test bridge's gateway with a resolver that knows two names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from ipaddress import IPv4Address

import pytest
from nethelpers import Processes, Upstream, probe, probe_argv

from hutch.node.egress.proxy import EgressFilter, FilterConfig
from hutch.node.network.linux import LinuxSandboxNetworks
from hutch.shared.egress import EgressPolicy, parse_policy
from hutch.shared.errors import NotFoundError

pytestmark = pytest.mark.root


class _Names:
    """A resolver that knows ``allowed.test`` and ``meta.test`` only."""

    def __init__(self, upstream: IPv4Address) -> None:
        self.table = {"allowed.test": [upstream], "meta.test": [IPv4Address("169.254.169.254")]}
        self.asked: list[str] = []

    async def resolve(self, name: str) -> list[IPv4Address]:
        self.asked.append(name)
        if name not in self.table:
            raise NotFoundError(name)
        return self.table[name]


async def test_cidr_policy_and_its_updates_in_the_kernel(
    networks: LinuxSandboxNetworks, processes: Processes, upstream: Upstream
) -> None:
    _, port = processes.start(probe_argv(upstream.netns, "serve", "0.0.0.0", "0"))
    target = str(upstream.address)
    deny = parse_policy([], [f"{target}/32"])
    a = await networks.setup("sbxa", allow_internet=True, policy=deny)
    assert probe(a.netns_name, "get", target, str(port)) == "error EHOSTUNREACH"
    await networks.apply_policy(a.address, parse_policy([], []))
    assert probe(a.netns_name, "get", target, str(port)).startswith("ok")
    await networks.apply_policy(a.address, parse_policy([target], ["0.0.0.0/0"]))
    assert probe(a.netns_name, "get", target, str(port)).startswith("ok")
    await networks.apply_policy(a.address, parse_policy(["1.1.1.1"], ["0.0.0.0/0"]))
    assert probe(a.netns_name, "get", target, str(port)) == "error EHOSTUNREACH"
    # Teardown takes the sandbox's chains along.
    await networks.teardown("sbxa")
    from nethelpers import sh

    listed = sh("nft", "list", "table", "inet", "hntest").stdout
    assert "egress_" not in listed and "redirect_" not in listed


@pytest.fixture
async def egress(
    networks: LinuxSandboxNetworks, upstream: Upstream
) -> AsyncIterator[tuple[EgressFilter, dict[IPv4Address, EgressPolicy], _Names]]:
    policies: dict[IPv4Address, EgressPolicy] = {}
    names = _Names(upstream.address)
    s = networks.settings
    f = EgressFilter(
        FilterConfig(listen=s.gateway, port=s.egress_filter_port,
                     refused=(*s.denied_egress, s.subnet), read_timeout_s=5),
        policies=policies.get, resolver=names,  # type: ignore[arg-type]
    )  # fmt: skip
    await f.start()
    try:
        yield f, policies, names
    finally:
        await f.aclose()


async def test_filter_dials_allowed_names_itself_and_refuses_the_rest(
    networks: LinuxSandboxNetworks,
    processes: Processes,
    upstream: Upstream,
    egress: tuple[EgressFilter, dict[IPv4Address, EgressPolicy], _Names],
) -> None:
    import asyncio

    _, policies, names = egress
    _, port = processes.start(probe_argv(upstream.netns, "serve", "0.0.0.0", "80"))
    assert port == 80
    policy = parse_policy(["allowed.test", "meta.test"], ["0.0.0.0/0"])
    a = await networks.setup("sbxa", allow_internet=True, policy=policy)
    policies[a.address] = policy

    def run(*args: str) -> str:
        return probe(a.netns_name, *args)

    # Whatever address the sandbox dials on port 80, the filter dials the Host's.
    got = await asyncio.to_thread(run, "get-host", "203.0.113.9", "80", "allowed.test")
    assert got == f"ok {upstream.host_address}"
    assert names.asked == ["allowed.test"]
    # A name not in the policy, an IP literal, and an allowed name that resolves into
    # the metadata range: closed without a dial.
    for host in ("denied.test", str(upstream.address), "meta.test"):
        assert await asyncio.to_thread(run, "get-host", str(upstream.address), "80", host) == (
            "closed"
        ), host
    # DNS rebinding: the same allowed name now answers the metadata range, then another
    # sandbox's address; the filter resolves per connection and dials neither.
    b = await networks.setup("sbxb", allow_internet=True)
    for rebound in (IPv4Address("169.254.169.254"), b.address):
        names.table["allowed.test"] = [rebound]
        got = await asyncio.to_thread(run, "get-host", str(upstream.address), "80", "allowed.test")
        assert got == "closed", rebound
    names.table["allowed.test"] = [upstream.address]
    # Other ports are CIDR-only: refused by the chain.
    _, other = processes.start(probe_argv(upstream.netns, "serve", "0.0.0.0", "0"))
    assert run("get", str(upstream.address), str(other)) == "error EHOSTUNREACH"
    # The filter's port cannot be dialed directly from a sandbox.
    gw = str(networks.settings.gateway)
    assert run("get", gw, str(networks.settings.egress_filter_port)) == "error EHOSTUNREACH"
    # An update is in force for the next connection.
    policies[a.address] = parse_policy(["other.test"], ["0.0.0.0/0"])
    got = await asyncio.to_thread(run, "get-host", str(upstream.address), "80", "allowed.test")
    assert got == "closed"
