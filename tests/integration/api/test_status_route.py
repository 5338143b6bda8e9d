"""``GET /hutch/status`` without a node status source (an api not started by serve): a
clear 503, and the key is checked first like on every route but ``/health``."""

from __future__ import annotations

import httpx

from .conftest import ApiServer


def test_status_needs_a_key_and_a_source(api: ApiServer) -> None:
    anonymous = httpx.get(f"{api.url}/hutch/status")
    assert anonymous.status_code == 401
    r = httpx.get(f"{api.url}/hutch/status", headers={"X-API-Key": api.key})
    assert r.status_code == 503
    assert r.json() == {"code": 503, "message": "this api has no node status source"}
