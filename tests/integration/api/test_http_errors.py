"""Error cases and wire details over plain httpx."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.integration.api.conftest import ApiServer, reap_now


def _client(api: ApiServer, key: str | None = None) -> httpx.Client:
    headers = {"X-API-Key": key if key is not None else api.key}
    return httpx.Client(base_url=api.url, headers=headers, timeout=30)


def _create(c: httpx.Client, **body: object) -> httpx.Response:
    return c.post("/v2/sandboxes", json={"templateID": "base", **body})


def test_health_needs_no_key(api: ApiServer) -> None:
    assert httpx.get(f"{api.url}/health").status_code == 200


@pytest.mark.parametrize("key", ["", "e2b_" + "1" * 40, "garbage"])
def test_missing_or_wrong_key_is_401_json(api: ApiServer, key: str) -> None:
    r = httpx.get(f"{api.url}/v2/sandboxes", headers={"X-API-Key": key} if key else {})
    assert r.status_code == 401
    assert r.json()["code"] == 401 and r.json()["message"]


def test_unknown_route_and_trailing_slash_are_json_404(api: ApiServer) -> None:
    with _client(api) as c:
        for path in ("/nope", "/v2/sandboxes/", "/sandboxes/a%2Fb"):
            r = c.get(path)
            assert r.status_code == 404, path
            assert set(r.json()) >= {"code", "message"}


def test_create_shape_v2_and_v1(api: ApiServer) -> None:
    with _client(api) as c:
        r = _create(c)
        assert r.status_code == 201
        body = r.json()
        assert body["clientID"] == "6532622b"
        assert body["envdVersion"] == "0.6.13"
        assert body["envdAccessToken"]
        assert "domain" not in body  # infra: omitempty
        r1 = c.post("/sandboxes", json={"templateID": "base"})
        assert r1.status_code == 201 and "envdAccessToken" not in r1.json()
        r2 = c.post("/sandboxes", json={"templateID": "base", "secure": True})
        assert r2.json()["envdAccessToken"]
        detail = c.get(f"/sandboxes/{r1.json()['sandboxID']}").json()
        started = datetime.fromisoformat(detail["startedAt"])
        assert datetime.fromisoformat(detail["endAt"]) - started == timedelta(seconds=15)
        assert "network" not in detail and "pauseMode" not in detail
        assert detail["lifecycle"] == {"autoResume": False, "onTimeout": "kill"}
        # infra's <id>-<clientID> form
        assert c.get(f"/sandboxes/{body['sandboxID']}-6532622b").status_code == 200


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": 86401}, "timeout"),
        ({"timeout": "30"}, "timeout"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"metadata": {"k": "x" * 3000}}, "metadata.k"),
        ({"envVars": {"1BAD": "x"}}, "1BAD"),
        ({"envVars": {"A": None}}, "envVars.A"),
    ],
)
def test_create_validation_is_400_naming_the_field(
    api: ApiServer, body: dict[str, object], names: str
) -> None:
    with _client(api) as c:
        r = _create(c, **body)
    assert r.status_code == 400, r.text
    assert names in r.json()["message"]
    assert api.node.running == {}


def test_create_unknown_or_unbuilt_template(api: ApiServer) -> None:
    with _client(api) as c:
        assert c.post("/v2/sandboxes", json={"templateID": "nope"}).status_code == 404
        assert c.post("/v2/sandboxes", json={"templateID": "unbuilt"}).status_code == 400
        assert c.post("/v2/sandboxes", content=b"{").status_code == 400


def test_node_full_is_503_capacity_unavailable_and_leaves_nothing(api: ApiServer) -> None:
    """infra's placement answer: 503, ``error_code`` ``sandbox_capacity_unavailable``, the
    "Failed to place sandbox" prefix clients match on; retryable."""
    api.node.capacity = 1
    with _client(api) as c:
        assert _create(c).status_code == 201
        r = c.post("/v2/sandboxes", json={"templateID": "base"}, headers={"Should-Retry": "x"})
        assert r.status_code == 503
        assert r.json()["error_code"] == "sandbox_capacity_unavailable"
        assert r.json()["message"].startswith("Failed to place sandbox: not enough capacity")
        assert r.headers["Should-Retry"] == "true"
        listed = c.get("/v2/sandboxes").json()
    assert len(listed) == 1 and len(api.node.running) == 1


def test_store_limit_is_the_same_503(tmp_path: Path) -> None:
    from tests.integration.api.conftest import _serve

    for api in _serve(
        f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", tmp_path, max_sandboxes_per_node=1
    ):
        with _client(api) as c:
            assert _create(c).status_code == 201
            r = _create(c)
            assert r.status_code == 503 and r.json()["error_code"] == "sandbox_capacity_unavailable"


def test_errors_without_an_e2b_error_code_have_none(api: ApiServer) -> None:
    with _client(api) as c:
        for r in (c.get("/sandboxes/inosuch"), _create(c, timeout=0), c.get("/nope")):
            assert set(r.json()) == {"code", "message"}, r.text


def test_node_failure_rolls_back_and_is_not_retried(api: ApiServer) -> None:
    from hutch.shared.errors import HutchError

    api.node.fail_next_create = HutchError("runc exploded")
    with _client(api) as c:
        r = _create(c)
        assert r.status_code == 500
        assert r.headers["Should-Retry"] == "false"
        assert r.json()["error_code"] == "sandbox_create_failed"
        assert c.get("/v2/sandboxes").json() == []
    assert api.node.running == {}
    assert api.node.killed == api.node.created


def test_idempotency_key_replays_and_refuses_a_different_body(api: ApiServer) -> None:
    with _client(api) as c:
        h = {"Idempotency-Key": "req-1"}
        a = c.post("/v2/sandboxes", json={"templateID": "base"}, headers=h)
        b = c.post("/v2/sandboxes", json={"templateID": "base"}, headers=h)
        assert a.status_code == b.status_code == 201
        assert a.json()["sandboxID"] == b.json()["sandboxID"]
        assert len(api.node.created) == 1
        other = c.post("/v2/sandboxes", json={"templateID": "busybox"}, headers=h)
        assert other.status_code == 409
        bad = c.post(
            "/v2/sandboxes", json={"templateID": "base"}, headers={"Idempotency-Key": "UP"}
        )
        assert bad.status_code == 400


def test_other_team_sees_404(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c).json()["sandboxID"]
    with _client(api, api.other_key) as o:
        assert o.get(f"/sandboxes/{sid}").status_code == 404
        assert o.delete(f"/sandboxes/{sid}").status_code == 404
        assert o.post(f"/sandboxes/{sid}/timeout", json={"timeout": 5}).status_code == 404
        assert o.get("/v2/sandboxes").json() == []
        assert o.get("/templates").json() == []
    assert sid in api.node.running


def test_list_params_are_checked(api: ApiServer) -> None:
    with _client(api) as c:
        for q in (
            "limit=0",
            "limit=101",
            "limit=x",
            "nextToken=%%%",
            "state=dead",
            "metadata=novalue",
        ):
            r = c.get(f"/v2/sandboxes?{q}")
            assert r.status_code == 400, q


def test_timeout_refresh_connect_logs_metrics_templates(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c, timeout=100).json()["sandboxID"]
        assert c.post(f"/sandboxes/{sid}/timeout", json={"timeout": 10}).status_code == 204
        assert c.post(f"/sandboxes/{sid}/timeout", json={}).status_code == 400
        assert c.post(f"/sandboxes/{sid}/refreshes", json={"duration": 50}).status_code == 204
        assert c.post(f"/sandboxes/{sid}/refreshes").status_code == 204
        r = c.post(f"/sandboxes/{sid}/connect", json={"timeout": 20})
        assert r.status_code == 200 and r.json()["sandboxID"] == sid
        assert c.post(f"/sandboxes/{sid}/connect", json={}).status_code == 400
        assert c.post(f"/v2/sandboxes/{sid}/connect", json={}).status_code == 200
        assert c.get(f"/sandboxes/{sid}/logs").json() == {"logs": [], "logEntries": []}
        assert c.get(f"/v2/sandboxes/{sid}/logs").json() == {"logs": []}
        assert len(c.get(f"/sandboxes/{sid}/metrics").json()) == 1
        templates = c.get("/templates").json()
        assert {t["aliases"][0] for t in templates} == {"base", "busybox", "unbuilt"}
        assert c.delete(f"/sandboxes/{sid}").status_code == 204
        assert c.post(f"/sandboxes/{sid}/timeout", json={"timeout": 10}).status_code == 404
        assert c.post(f"/v2/sandboxes/{sid}/connect", json={}).status_code == 404


def test_reaper_kills_expired_sandboxes(api: ApiServer) -> None:
    with _client(api) as c:
        short = _create(c, timeout=10).json()["sandboxID"]
        long = _create(c, timeout=1000).json()["sandboxID"]
        started = datetime.fromisoformat(c.get(f"/sandboxes/{short}").json()["startedAt"])
        assert reap_now(api, started + timedelta(seconds=9)) == 0
        assert reap_now(api, started + timedelta(seconds=11)) == 1
        assert c.get(f"/sandboxes/{short}").status_code == 404
        assert c.get(f"/sandboxes/{long}").status_code == 200
    assert short not in api.node.running and long in api.node.running
    assert reap_now(api, datetime(2100, 1, 1, tzinfo=UTC)) == 1
    assert api.node.running == {}


def test_logs_cursor_direction_level_search_and_validation(api: ApiServer) -> None:
    from hutch.api.service.ports import SandboxLogLine
    from hutch.shared.ids import SandboxID

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with _client(api) as c:
        sid = _create(c).json()["sandboxID"]
        api.node.logs_by_id[SandboxID(sid)] = [
            SandboxLogLine(timestamp=t0 + timedelta(seconds=i), message=f"line {i}", level=x)
            for i, x in enumerate(["info", "warn", "error"])
        ]
        ms = int(t0.timestamp() * 1000)
        v1 = c.get(f"/sandboxes/{sid}/logs", params={"start": ms + 1000}).json()
        # v1's ``line`` is the JSON object envd wrote (the e2b CLI parses it).
        lines = [json.loads(x["line"]) for x in v1["logs"]]
        assert [(x["message"], x["level"]) for x in lines] == [
            ("line 1", "warn"),
            ("line 2", "error"),
        ]
        assert lines[0]["timestamp"] == v1["logs"][0]["timestamp"]
        assert v1["logEntries"][0]["level"] == "warn"
        assert v1["logEntries"][0]["timestamp"].startswith("2026-01-01T00:00:01")
        backward = {"direction": "backward", "limit": 2}
        r = c.get(f"/v2/sandboxes/{sid}/logs", params=backward)
        assert [x["message"] for x in r.json()["logs"]] == ["line 2", "line 1"]
        r = c.get(f"/v2/sandboxes/{sid}/logs", params={"cursor": ms + 1500, "level": "warn"})
        assert [x["message"] for x in r.json()["logs"]] == ["line 2"]
        r = c.get(f"/v2/sandboxes/{sid}/logs", params={"search": "line 0"})
        assert [x["message"] for x in r.json()["logs"]] == ["line 0"]
        for bad in ({"direction": "up"}, {"level": "fatal"}, {"limit": "1001"},
                    {"cursor": "-1"}, {"cursor": "x"}, {"search": "s" * 257}):  # fmt: skip
            assert c.get(f"/v2/sandboxes/{sid}/logs", params=bad).status_code == 400, bad
        assert c.get("/v2/sandboxes/nosuchsandbox/logs").status_code == 404
        # Killed: the node's kept lines are still served.
        assert c.delete(f"/sandboxes/{sid}").status_code == 204
        assert len(c.get(f"/v2/sandboxes/{sid}/logs").json()["logs"]) == 3


def test_metrics_of_many_sandboxes(api: ApiServer) -> None:
    with _client(api) as c:
        a = _create(c).json()["sandboxID"]
        b = _create(c).json()["sandboxID"]
        gone = _create(c).json()["sandboxID"]
        assert c.delete(f"/sandboxes/{gone}").status_code == 204
        r = c.get("/sandboxes/metrics", params={"sandbox_ids": f"{a},{b},{gone},nosuch"})
        assert r.status_code == 200
        assert set(r.json()["sandboxes"]) == {a, b}
        assert r.json()["sandboxes"][a]["cpuCount"] == 2
        assert c.get("/sandboxes/metrics").status_code == 400
        too_many = ",".join(f"s{i}" for i in range(101))
        assert c.get("/sandboxes/metrics", params={"sandbox_ids": too_many}).status_code == 400
    with _client(api, api.other_key) as other:
        r = other.get("/sandboxes/metrics", params={"sandbox_ids": a})
        assert r.json() == {"sandboxes": {}}


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("network", {"rules": {"x.test": [{}]}}, "transform rules are not"),
        ("iam", {"tokens": ["t"]}, "IAM tokens are not"),
    ],
)
def test_create_with_an_unsupported_feature_is_400_naming_it(
    api: ApiServer, field: str, value: object, says: str
) -> None:
    """Refused, never silently ignored; nothing is created."""
    with _client(api) as c:
        r = _create(c, **{field: value})
        assert r.status_code == 400, r.text
        assert r.json()["message"].startswith(field) and says in r.json()["message"]
        # An empty value asks for nothing (the SDK sends none when unset).
        assert _create(c, **{field: None}).status_code == 201
    assert len(api.node.running) == 1


def test_create_with_mcp_is_accepted_and_a_non_object_is_400(api: ApiServer) -> None:
    """``mcp`` is taken as E2B's API takes it (the SDK then starts the gateway itself,
    docs/mcp.md); a value that is not an object of named servers is refused."""
    with _client(api) as c:
        r = _create(c, mcp={"filesystem": {"paths": ["/tmp"]}, "memory": {}})
        assert r.status_code == 201, r.text
        for bad in (["memory"], "memory", 3):
            r = _create(c, mcp=bad)
            assert r.status_code == 400, r.text
            assert "mcp" in r.json()["message"]
    assert len(api.node.running) == 1
