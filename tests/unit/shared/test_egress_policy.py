"""Parsing, validation messages and domain matching of egress policies (shared/egress.py)."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from hutch.shared.egress import (
    DOMAINS_NEED_BLOCK_ALL,
    MAX_ENTRIES,
    domain_allowed,
    parse_policy,
    policy_from_json,
)
from hutch.shared.errors import InvalidArgumentError


def test_addresses_and_cidrs_are_collapsed_and_domains_lowered() -> None:
    p = parse_policy(["8.8.8.8", "10.0.0.1/8", "Example.COM."], ["0.0.0.0/0"])
    assert p.allow_networks == (IPv4Network("8.8.8.8/32"), IPv4Network("10.0.0.0/8"))
    assert p.domains == ("example.com",)
    assert p.blocks_all
    assert p.allow_out == ("8.8.8.8", "10.0.0.1/8", "Example.COM.")


def test_allow_internet_false_is_deny_all() -> None:
    p = parse_policy(None, None, allow_internet=False)
    assert p.deny_out == ("0.0.0.0/0",) and p.blocks_all
    assert parse_policy(None, ["0.0.0.0/0"], allow_internet=False).deny_out == ("0.0.0.0/0",)
    assert parse_policy(None, None).is_default


@pytest.mark.parametrize(
    ("allow", "deny", "message"),
    [
        ([], ["not a cidr!"], "invalid denied CIDR not a cidr!"),
        ([], ["example.com"], "invalid denied CIDR example.com: denyOut takes IP"),
        ([], ["10.0.0.0/33"], "invalid denied CIDR 10.0.0.0/33"),
        ([], ["0.0.0.0"], "invalid denied CIDR 0.0.0.0"),
        (["0.0.0.0/8"], [], "invalid allowed address 0.0.0.0/8"),
        (["bad_domain..x"], ["0.0.0.0/0"], "allowOut: invalid domain or address 'bad_domain..x'"),
        (["-x.test"], ["0.0.0.0/0"], "allowOut: invalid domain or address '-x.test'"),
        (["300.1.1.1"], ["0.0.0.0/0"], "allowOut: invalid domain or address '300.1.1.1'"),
        (["2001:db8::1"], [], "invalid allowed address 2001:db8::1: sandboxes have IPv4 only"),
        (["example.com"], [], DOMAINS_NEED_BLOCK_ALL),
        (["example.com"], ["1.1.1.1"], DOMAINS_NEED_BLOCK_ALL),
    ],
)
def test_bad_entries_are_named(allow: list[str], deny: list[str], message: str) -> None:
    with pytest.raises(InvalidArgumentError) as exc:
        parse_policy(allow, deny)
    assert message in str(exc.value)


def test_too_many_rules() -> None:
    with pytest.raises(InvalidArgumentError, match=r"allowOut: too many entries \(201"):
        parse_policy([f"1.1.{i // 200}.{i % 200}" for i in range(MAX_ENTRIES + 1)], [])
    with pytest.raises(InvalidArgumentError, match=r"dnsServers: 'x' is not an IPv4"):
        parse_policy(["a.test"], ["0.0.0.0/0"], dns_servers=["x"])


def test_ipv6_deny_entries_are_accepted_and_deny_nothing_more() -> None:
    p = parse_policy([], ["::/0", "fe80::/10"])
    assert p.deny_networks == () and not p.blocks_all


def test_json_round_trip() -> None:
    p = parse_policy(["a.test", "1.2.3.4"], ["0.0.0.0/0"], dns_servers=["9.9.9.9"])
    assert policy_from_json(p.to_json()) == p
    assert policy_from_json(None).is_default


@pytest.mark.parametrize(
    ("host", "patterns", "expected"),
    [
        ("allowed.test", ["allowed.test"], True),
        ("ALLOWED.test.", ["allowed.test"], True),
        ("sub.allowed.test", ["allowed.test"], False),
        ("a.b.wild.test", ["*.wild.test"], True),
        ("wild.test", ["*.wild.test"], False),
        ("evilwild.test", ["*.wild.test"], False),
        ("anything.example", ["*"], True),
        ("", ["*"], False),
        ("a..b", ["*"], False),
        (".wild.test", ["*.wild.test"], False),
        ("allowed.test\x00.evil", ["allowed.test"], False),
        ("allowed.test:443", ["allowed.test"], False),
    ],
)
def test_domain_matching(host: str, patterns: list[str], expected: bool) -> None:
    assert domain_allowed(host, patterns) is expected
