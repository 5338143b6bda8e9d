"""Pure tests of the names, settings checks and rule text of node/network."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from hutch.node.network import names, rules
from hutch.node.network.base import NetworkSettings
from hutch.shared.errors import InvalidArgumentError

S = NetworkSettings()


def test_settings_defaults_and_gateway() -> None:
    assert S.bridge == "hutch0"
    assert S.subnet == IPv4Network("10.11.0.0/16")
    assert S.gateway == IPv4Address("10.11.0.1")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bridge": "a-very-long-bridge-name"},
        {"bridge": "bad name"},
        {"veth_prefix": "toolongprefix"},
        {"subnet": IPv4Network("10.0.0.0/30")},
        {"table": "x;y"},
    ],
)
def test_settings_rejects_unsafe_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        NetworkSettings(**kwargs)  # type: ignore[arg-type]


def test_veth_name_is_deterministic_and_fits_ifnamsiz() -> None:
    name = names.veth_name(S, "i1a2b3c4d5e6f7g8h9j0")
    assert name == names.veth_name(S, "i1a2b3c4d5e6f7g8h9j0")
    assert name != names.veth_name(S, "i1a2b3c4d5e6f7g8h9j1")
    assert name.startswith("hutch") and len(name) == 15


@pytest.mark.parametrize("bad", ["", "../x", "a b", "a;b", "-x", "x" * 200, 'a"b'])
def test_sandbox_id_validation(bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        names.netns_name(S, bad)


def test_netns_name_round_trip() -> None:
    assert names.sandbox_id_from_netns(S, names.netns_name(S, "abc")) == "abc"
    assert names.sandbox_id_from_netns(S, "other-abc") is None


def test_alias_round_trip_and_foreign_alias() -> None:
    alias = names.veth_alias("abc", IPv4Address("10.11.0.9"))
    assert names.parse_veth_alias(alias) == ("abc", IPv4Address("10.11.0.9"))
    assert names.parse_veth_alias("") is None
    assert names.parse_veth_alias("hutch abc notanip") is None
    assert names.parse_veth_alias("docker abc 10.0.0.1") is None


def test_mac_encodes_address() -> None:
    assert names.mac_for(IPv4Address("10.11.1.2")) == "02:68:0a:0b:01:02"


def test_firewall_script_only_touches_our_tables() -> None:
    script = rules.firewall_script(S)
    for line in script.splitlines():
        assert line.split()[3] == "hutch", line
    assert 'oifname != "hutch0" ip saddr 10.11.0.0/16 masquerade' in script
