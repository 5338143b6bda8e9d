"""``network`` at create and ``PUT /sandboxes/{id}/network`` over plain httpx (fake node):
validation messages, what is stored and shown, what the node is told."""

from __future__ import annotations

import httpx
import pytest

from hutch.shared.egress import DOMAINS_NEED_BLOCK_ALL
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
