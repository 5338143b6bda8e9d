"""``hutch keys create`` against the serve's home, and the keys it prints working."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from .serveproc import Serve

pytestmark = pytest.mark.root


def test_keys_create_prints_the_key_alone_and_it_authenticates(serve: Serve) -> None:
    out = serve.hutch("keys", "create")
    assert re.fullmatch(r"e2b_[0-9a-f]{40}\n", out)
    r = httpx.get(f"{serve.api_url}/v2/sandboxes", headers={"X-API-Key": out.strip()})
    assert r.status_code == 200

    data = json.loads(serve.hutch("keys", "create", "--json", "--name", "ci"))
    assert re.fullmatch(r"e2b_[0-9a-f]{40}", data["key"])
    assert data["name"] == "ci"
    assert data["mask"].startswith("e2b_")


def test_templates_seeded_from_disk(serve: Serve) -> None:
    key = serve.hutch("keys", "create").strip()
    r = httpx.get(f"{serve.api_url}/templates", headers={"X-API-Key": key})
    assert r.status_code == 200
    assert "busybox" in {t["templateID"] for t in r.json()}
