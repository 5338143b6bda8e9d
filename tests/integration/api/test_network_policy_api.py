"""``network`` at create and ``PUT /sandboxes/{id}/network`` over plain httpx (fake node):
validation messages, what is stored and shown, what the node is told."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from hutch.shared.egress import DOMAINS_NEED_BLOCK_ALL, EgressPolicy
from tests.integration.api.conftest import ApiServer


def _client(api: ApiServer) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"X-API-Key": api.key}, timeout=30)


def _create(c: httpx.Client, **body: object) -> httpx.Response:
    return c.post("/v2/sandboxes", json={"templateID": "base", **body})


@pytest.mark.parametrize(
    ("network", "says"),
    [
        ({"denyOut": ["evil.test"]}, "invalid denied CIDR evil.test"),
        ({"denyOut": ["10.0.0.0/40"]}, "invalid denied CIDR 10.0.0.0/40"),
        ({"allowOut": ["bad..name"], "denyOut": ["0.0.0.0/0"]}, "'bad..name'"),
        ({"allowOut": ["allowed.test"]}, DOMAINS_NEED_BLOCK_ALL),
        ({"allowOut": [f"1.1.1.{i % 250}" for i in range(201)]}, "allowOut: too many entries"),
        ({"egressProxy": {"address": "x:1"}}, "network.egressProxy"),
        ({"maskRequestHost": "a b"}, "mask request host is not valid: a b"),
    ],
)
def test_bad_network_is_400_naming_the_entry(
    api: ApiServer, network: dict[str, object], says: str
) -> None:
    with _client(api) as c:
        r = _create(c, network=network)
        assert r.status_code == 400, r.text
        assert says in r.json()["message"]
    assert not api.node.running


def test_policy_is_stored_shown_and_sent_to_the_node(api: ApiServer) -> None:
    network = {"allowOut": ["allowed.test", "198.18.0.0/24"], "denyOut": ["0.0.0.0/0"]}
    with _client(api) as c:
        r = _create(c, network={**network, "allowPublicTraffic": False})
        assert r.status_code == 201, r.text
        sid = r.json()["sandboxID"]
        token = r.json()["trafficAccessToken"]
        assert token
        spec = api.node.running[sid]
        assert spec.egress is not None and spec.egress.domains == ("allowed.test",)
        assert spec.allow_internet is False
        detail = c.get(f"/sandboxes/{sid}").json()
        assert detail["network"] == {**network, "allowPublicTraffic": False}
        assert detail["allowInternetAccess"] is False
        # PUT replaces everything: omitted lists are cleared.
        r = c.put(f"/sandboxes/{sid}/network", json={"denyOut": ["9.9.9.9"]})
        assert r.status_code == 204, r.text
        assert api.node.networks[sid].deny_out == ("9.9.9.9",)
        assert api.node.networks[sid].allow_out == ()
        detail = c.get(f"/sandboxes/{sid}").json()
        assert detail["network"]["allowOut"] == [] and detail["network"]["denyOut"] == ["9.9.9.9"]
        assert detail["allowInternetAccess"] is True
        r = c.put(f"/sandboxes/{sid}/network", json={"allow_internet_access": False})
        assert r.status_code == 204
        assert api.node.networks[sid].deny_out == ("0.0.0.0/0",)


def test_put_network_refuses_bad_entries_and_unknown_sandboxes(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c).json()["sandboxID"]
        r = c.put(f"/sandboxes/{sid}/network", json={"denyOut": ["x.test"]})
        assert r.status_code == 400 and "invalid denied CIDR x.test" in r.json()["message"]
        r = c.put(f"/sandboxes/{sid}/network", json={"allowOut": ["a.test"]})
        assert r.status_code == 400 and r.json()["message"] == DOMAINS_NEED_BLOCK_ALL
        r = c.put(f"/sandboxes/{sid}/network", json={"allowPublicTraffic": False})
        assert r.status_code == 400 and "set at create only" in r.json()["message"]
        assert sid not in api.node.networks
        assert c.put("/sandboxes/nope/network", json={}).status_code == 404


def test_allow_internet_access_false_is_deny_all(api: ApiServer) -> None:
    with _client(api) as c:
        r = _create(c, allow_internet_access=False)
        sid = r.json()["sandboxID"]
        assert "trafficAccessToken" not in r.json()
        spec = api.node.running[sid]
        assert spec.egress is not None and spec.egress.deny_out == ("0.0.0.0/0",)
        assert c.get(f"/sandboxes/{sid}").json()["network"]["denyOut"] == ["0.0.0.0/0"]


def test_a_snapshot_and_a_fork_carry_the_policy_unless_the_create_sends_one(
    api: ApiServer,
) -> None:
    """Issue 13: a create from a snapshot (a fork too) without a policy of its own gets
    the one the source had in force when the snapshot was taken; a ``network`` or
    ``allow_internet_access: false`` in the create replaces it whole."""
    policy = {"allowOut": ["allowed.test"], "denyOut": ["0.0.0.0/0"]}
    shown = {**policy, "allowPublicTraffic": True}
    with _client(api) as c:
        sid = _create(c, network={"denyOut": ["9.9.9.9"]}).json()["sandboxID"]
        # The policy in force at the snapshot, not the one of the create.
        assert c.put(f"/sandboxes/{sid}/network", json=policy).status_code == 204
        snap = c.post(f"/sandboxes/{sid}/snapshots", json={}).json()["snapshotID"]
        assert c.put(f"/sandboxes/{sid}/network", json={}).status_code == 204

        def made(**body: object) -> tuple[dict[str, Any] | None, EgressPolicy | None]:
            """(``network`` of GET /sandboxes/{id}, the policy the node was given)."""
            r = c.post("/v2/sandboxes", json={"templateID": snap, **body})
            assert r.status_code == 201, r.text
            new = r.json()["sandboxID"]
            detail = c.get(f"/sandboxes/{new}").json()
            denied = (detail.get("network") or {}).get("denyOut", [])
            assert detail["allowInternetAccess"] is ("0.0.0.0/0" not in denied)
            return detail.get("network"), api.node.running[new].egress

        # As the SDKs send a create without ``network`` (allow_internet_access true).
        network, egress = made(allow_internet_access=True)
        assert network == shown
        assert egress is not None and egress.domains == ("allowed.test",)
        network, _ = made(network={"denyOut": ["8.8.8.8"]})
        assert network == {"allowOut": [], "denyOut": ["8.8.8.8"], "allowPublicTraffic": True}
        assert made(network={})[1] is None  # stated: the default, everything
        network, _ = made(allow_internet_access=False)
        assert network is not None
        assert network["denyOut"] == ["0.0.0.0/0"] and network["allowOut"] == []
        # A fork snapshots the source now: the policy in force, not the create's.
        assert c.put(f"/sandboxes/{sid}/network", json=policy).status_code == 204
        r = c.post(f"/sandboxes/{sid}/fork", json={})
        assert r.status_code == 201, r.text
        fork = r.json()[0]["sandbox"]["sandboxID"]
        assert c.get(f"/sandboxes/{fork}").json()["network"] == shown
        forked = api.node.running[fork].egress
        assert forked is not None and forked.domains == ("allowed.test",)
