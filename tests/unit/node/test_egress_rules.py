"""The nft text of per-sandbox egress policies (pure; the kernel side is in
tests/integration/network/test_egress_policy.py)."""

from __future__ import annotations

from ipaddress import IPv4Address

from hutch.node.network import rules
from hutch.node.network.base import NetworkSettings
from hutch.shared.egress import parse_policy

S = NetworkSettings(dns_servers=("198.18.0.53",))
A = IPv4Address("10.11.0.2")


def _chain(script: str, chain: str) -> list[str]:
    return [ln for ln in script.splitlines() if ln.startswith(f"add rule inet hutch {chain} ")]


def test_default_policy_accepts_after_no_lists() -> None:
    script = rules.policy_script(S, address=A, policy=parse_policy((), ()))
    assert _chain(script, "egress_10_11_0_2") == ["add rule inet hutch egress_10_11_0_2 accept"]
    assert "add element inet hutch policies { 10.11.0.2 : jump egress_10_11_0_2 }" in script
    # No domains: nothing redirected, and a stale redirect element is removed.
    assert "delete element inet hutch redirects { 10.11.0.2 : jump redirect_10_11_0_2 }" in script
    assert not _chain(script, "redirect_10_11_0_2")


def test_allow_comes_before_deny_and_block_all_rejects_last() -> None:
    policy = parse_policy(["8.8.8.8", "1.2.3.0/24"], ["0.0.0.0/0", "9.9.9.0/24"])
    lines = _chain(rules.policy_script(S, address=A, policy=policy), "egress_10_11_0_2")
    assert lines[0].endswith("ip daddr { 1.2.3.0/24, 8.8.8.8/32 } accept")
    # 9.9.9.0/24 is inside 0.0.0.0/0: collapsed into the final reject.
    assert lines[1] == "add rule inet hutch egress_10_11_0_2 reject with icmpx admin-prohibited"
    assert len(lines) == 2


def test_deny_without_block_all_accepts_the_rest() -> None:
    policy = parse_policy([], ["9.9.9.9"])
    lines = _chain(rules.policy_script(S, address=A, policy=policy), "egress_10_11_0_2")
    assert lines == [
        "add rule inet hutch egress_10_11_0_2 ip daddr { 9.9.9.9/32 }"
        " reject with icmpx admin-prohibited",
        "add rule inet hutch egress_10_11_0_2 accept",
    ]


def test_domains_open_the_resolvers_and_redirect_web_ports_to_the_filter() -> None:
    policy = parse_policy(["allowed.test", "5.5.5.5"], ["0.0.0.0/0"])
    script = rules.policy_script(S, address=A, policy=policy)
    egress = _chain(script, "egress_10_11_0_2")
    assert any(
        "{ 198.18.0.53 } meta l4proto { tcp, udp } th dport 53 accept" in ln for ln in egress
    )
    redirect = _chain(script, "redirect_10_11_0_2")
    assert redirect == [
        "add rule inet hutch redirect_10_11_0_2 ip daddr { 5.5.5.5/32 } return",
        "add rule inet hutch redirect_10_11_0_2 tcp dport { 80, 443 } dnat ip to 10.11.0.1:3129",
    ]
    assert "add element inet hutch redirects { 10.11.0.2 : jump redirect_10_11_0_2 }" in script


def test_policy_dns_servers_replace_the_nodes() -> None:
    policy = parse_policy(["a.test"], ["0.0.0.0/0"], dns_servers=["1.1.1.1"])
    script = rules.policy_script(S, address=A, policy=policy)
    assert "{ 1.1.1.1 } meta l4proto" in script and "198.18.0.53" not in script


def test_firewall_refuses_the_metadata_range_before_any_policy() -> None:
    script = rules.firewall_script(S).splitlines()
    forward = [ln for ln in script if ln.startswith("add rule inet hutch forward")]
    denied = next(i for i, ln in enumerate(forward) if "@denied_egress" in ln)
    vmap = next(i for i, ln in enumerate(forward) if "vmap @policies" in ln)
    assert denied < vmap
    assert forward[vmap + 1].endswith('iifname "hutch0" reject with icmpx admin-prohibited')
    assert any("ct count over 1024" in ln for ln in script)


def test_no_cap_when_max_connections_is_zero() -> None:
    script = rules.firewall_script(NetworkSettings(max_connections=0))
    assert "ct count" not in script


def test_detach_removes_both_chains() -> None:
    script = rules.detach_elements_script(S, host_veth="hutchx", address=A, mac="m")
    assert "delete chain inet hutch egress_10_11_0_2" in script
    assert "delete chain inet hutch redirect_10_11_0_2" in script
