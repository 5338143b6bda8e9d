"""Listing, pagination and idempotency on SQLite and PostgreSQL."""

from __future__ import annotations

import concurrent.futures

import httpx

from tests.integration.api.conftest import ApiServer


def test_pagination_and_idempotency_on_both_databases(api_any_db: ApiServer) -> None:
    api = api_any_db
    with httpx.Client(base_url=api.url, headers={"X-API-Key": api.key}, timeout=30) as c:
        ids = [
            c.post("/v2/sandboxes", json={"templateID": "base", "metadata": {"g": "x"}}).json()[
                "sandboxID"
            ]
            for _ in range(5)
        ]
        seen: list[str] = []
        token = None
        while True:
            params = {"limit": "2", "metadata": "g=x"}
            if token:
                params["nextToken"] = token
            r = c.get("/v2/sandboxes", params=params)
            seen += [s["sandboxID"] for s in r.json()]
            token = r.headers.get("X-Next-Token")
            if not token:
                break
        assert seen == list(reversed(ids))

        def create() -> str:
            r = c.post(
                "/v2/sandboxes", json={"templateID": "base"}, headers={"Idempotency-Key": "k-1"}
            )
            assert r.status_code == 201, r.text
            return str(r.json()["sandboxID"])

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            got = set(pool.map(lambda _: create(), range(4)))
    assert len(got) == 1
    assert len(api.node.created) == 6
