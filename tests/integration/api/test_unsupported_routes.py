"""E2B routes hutch does not serve answer with a precise error (``routes_unsupported.py``):
the official SDK's ``Secret`` class gets a 501 that says why, not a bare 404."""

from __future__ import annotations

import httpx
import pytest
from e2b import Secret
from e2b.exceptions import SecretException

from tests.integration.api.conftest import ApiServer


def test_sdk_secret_calls_get_a_precise_501(sdk_env: ApiServer) -> None:
    for call in (
        lambda: Secret.create("openai-api-key", "marker"),
        lambda: Secret.list().next_items(),
        lambda: Secret.get_info("openai-api-key"),
        lambda: Secret.destroy("openai-api-key"),
    ):
        with pytest.raises(SecretException, match="secrets are not supported by this server"):
            call()


def test_secrets_and_access_tokens_answer_json_errors(api: ApiServer) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as c:
        bearer = {"Authorization": f"Bearer {api.key}"}
        r = c.post("/secrets", json={"name": "x", "value": "y"}, headers={"X-API-Key": api.key})
        assert r.status_code == 501 and r.headers["should-retry"] == "false"
        assert r.json() == {"code": 501, "message": r.json()["message"]}
        assert "${e2b.secrets.<name>}" in r.json()["message"]
        r = c.post("/secrets/sec_1", json={"value": "y"}, headers=bearer)
        assert r.status_code == 501
        r = c.post("/access-tokens", json={"name": "cli"}, headers=bearer)
        assert r.status_code == 410 and "use an API key" in r.json()["message"]
        r = c.delete("/access-tokens/abc", headers=bearer)
        assert r.status_code == 404 and r.json()["message"].startswith("access token abc")
        # Unauthenticated callers learn nothing but 401, as on every route.
        for method, path in (("GET", "/secrets"), ("POST", "/access-tokens")):
            assert c.request(method, path).status_code == 401
        # An access token is a Bearer credential only (E2B's AuthProviderBearerAuth).
        assert c.post("/access-tokens", headers={"X-API-Key": api.key}).status_code == 401
