"""Sign-in, the session cookie, CSRF and the API bridge of the dashboard, against the real
API app and SQLite store (the node is the fake: no sandbox is reached)."""

from __future__ import annotations

import httpx

from hutch.dashboard.security import APP_CSP, DATA_CSP
from hutch.dashboard.sessions import COOKIE_NAME

from .conftest import DashboardServer


def _client(board: DashboardServer, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=board.url, headers=headers, timeout=30)


def _sign_in(client: httpx.Client, key: str) -> dict[str, object]:
    response = client.post("/dashboard/session", json={"apiKey": key})
    assert response.status_code == 200, response.text
    return response.json()


def test_session_sign_in_sets_a_strict_http_only_cookie_and_never_echoes_the_key(
    board: DashboardServer,
) -> None:
    with _client(board) as client:
        response = client.post("/dashboard/session", json={"apiKey": board.key})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["admin"] is False
        assert set(body["team"]) == {"teamID", "name"}
        assert isinstance(body["csrfToken"], str) and len(body["csrfToken"]) >= 32
        cookie = response.headers["set-cookie"]
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "path", "max-age", "samesite"} <= flags
        assert "samesite=strict" in cookie.lower() and "path=/dashboard" in cookie.lower()
        assert "secure" not in flags  # plain http here; https gets Secure
        value = client.cookies[COOKIE_NAME]
        assert board.key not in value and board.key not in response.text
        assert response.headers["cache-control"] == "no-store"
        # The same answer on a GET, from the cookie alone.
        again = client.get("/dashboard/session")
        assert again.status_code == 200
        assert again.json()["team"] == body["team"] and board.key not in again.text


def test_session_cookie_is_secure_over_https(board: DashboardServer) -> None:
    # Behind a TLS terminator on loopback (uvicorn trusts its X-Forwarded-Proto).
    with _client(board, **{"x-forwarded-proto": "https"}) as client:
        response = client.post("/dashboard/session", json={"apiKey": board.key})
        assert response.status_code == 200
        flags = {p.strip().lower() for p in response.headers["set-cookie"].split(";")}
        assert "secure" in flags and "httponly" in flags


def test_session_admin_key_says_admin(board: DashboardServer) -> None:
    with _client(board) as client:
        assert _sign_in(client, board.admin_key)["admin"] is True


def test_session_wrong_key_or_body_is_refused(board: DashboardServer) -> None:
    with _client(board) as client:
        wrong = client.post("/dashboard/session", json={"apiKey": "e2b_" + "0" * 40})
        assert wrong.status_code == 401 and wrong.json()["message"] == "Invalid API key"
        assert "set-cookie" not in wrong.headers
        assert client.post("/dashboard/session", json={}).status_code == 400
        assert client.post("/dashboard/session", content=b"{", headers={
            "content-type": "application/json"}).status_code == 400  # fmt: skip
        form = client.post("/dashboard/session", data={"apiKey": board.key})
        assert form.status_code == 415  # a cross-site form cannot sign a browser in
        assert client.get("/dashboard/session").status_code == 401


def test_session_cross_origin_sign_in_is_refused(board: DashboardServer) -> None:
    with _client(board, origin="https://evil.example") as client:
        response = client.post("/dashboard/session", json={"apiKey": board.key})
        assert response.status_code == 403
        assert "set-cookie" not in response.headers


def test_session_sign_out_clears_the_cookie(board: DashboardServer) -> None:
    with _client(board) as client:
        _sign_in(client, board.key)
        out = client.delete("/dashboard/session")
        assert out.status_code == 204
        assert COOKIE_NAME in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
        assert COOKIE_NAME not in client.cookies
        assert client.get("/dashboard/session").status_code == 401
        assert client.get("/dashboard/api/sandboxes").status_code == 401


def test_session_tampered_cookie_is_not_a_session(board: DashboardServer) -> None:
    with _client(board) as client:
        _sign_in(client, board.key)
        value = client.cookies[COOKIE_NAME]
        client.cookies.clear()
        client.cookies.set(COOKIE_NAME, value[:-2] + ("AA" if value[-2:] != "AA" else "BB"),
                           path="/dashboard")  # fmt: skip
        response = client.get("/dashboard/session")
        assert response.status_code == 401
        assert "Max-Age=0" in response.headers["set-cookie"]


def test_api_bridge_answers_as_the_api_with_the_session_key(board: DashboardServer) -> None:
    with _client(board) as client:
        assert client.get("/dashboard/api/sandboxes").status_code == 401  # no session
        session = _sign_in(client, board.key)
        direct = httpx.get(f"{board.url}/sandboxes", headers={"X-API-Key": board.key})
        bridged = client.get("/dashboard/api/sandboxes")
        assert bridged.status_code == direct.status_code == 200
        assert bridged.json() == direct.json()
        assert bridged.headers["content-security-policy"] == DATA_CSP
        assert bridged.headers["x-content-type-options"] == "nosniff"
        # The API's own errors pass as they are: an unknown sandbox is its 404.
        missing = client.get("/dashboard/api/sandboxes/inosuchsandbox000001")
        direct_missing = httpx.get(
            f"{board.url}/sandboxes/inosuchsandbox000001", headers={"X-API-Key": board.key}
        )
        assert missing.status_code == direct_missing.status_code == 404
        assert missing.json() == direct_missing.json()
        # Query strings pass too.
        assert client.get("/dashboard/api/v2/sandboxes", params={"state": "running"}).json() == []
        # A member key's 401 from an admin route is the route's: the session stays.
        nodes = client.get("/dashboard/api/nodes")
        assert nodes.status_code == 401 and "set-cookie" not in nodes.headers
        assert client.get("/dashboard/session").json()["csrfToken"] == session["csrfToken"]


def test_api_bridge_refuses_a_change_without_the_csrf_token(board: DashboardServer) -> None:
    with _client(board) as client:
        session = _sign_in(client, board.key)
        body = {"name": "from the dashboard"}
        refused = client.post("/dashboard/api/api-keys", json=body)
        assert refused.status_code == 403 and "CSRF" in refused.json()["message"]
        wrong = client.post("/dashboard/api/api-keys", json=body, headers={"X-CSRF-Token": "x"})
        assert wrong.status_code == 403
        made = client.post(
            "/dashboard/api/api-keys", json=body, headers={"X-CSRF-Token": session["csrfToken"]}
        )
        assert made.status_code == 201, made.text
        assert made.json()["name"] == "from the dashboard"


def test_api_bridge_ignores_credentials_the_browser_sends(board: DashboardServer) -> None:
    with _client(board) as client:
        _sign_in(client, board.key)
        # Another team's key in the request does not change whose session it is.
        mine = client.get("/dashboard/api/api-keys").json()
        theirs = client.get("/dashboard/api/api-keys", headers={"X-API-Key": board.other_key,
                            "Authorization": f"Bearer {board.other_key}"}).json()  # fmt: skip
        assert mine == theirs


def test_session_revoked_key_is_signed_out_on_the_next_call(board: DashboardServer) -> None:
    with _client(board) as client:
        session = _sign_in(client, board.key)
        csrf = {"X-CSRF-Token": str(session["csrfToken"])}
        made = client.post("/dashboard/api/api-keys", json={"name": "short-lived"}, headers=csrf)
        temp_key, temp_id = made.json()["key"], made.json()["id"]
    with _client(board) as temp:
        _sign_in(temp, temp_key)
        assert temp.get("/dashboard/api/sandboxes").status_code == 200
        # Revoked through the API (by the first session, through its bridge).
        with _client(board) as client:
            session = _sign_in(client, board.key)
            gone = client.delete(
                f"/dashboard/api/api-keys/{temp_id}", headers={"X-CSRF-Token": session["csrfToken"]}
            )
            assert gone.status_code == 204
        response = temp.get("/dashboard/api/sandboxes")
        assert response.status_code == 401
        assert "Max-Age=0" in response.headers["set-cookie"]
        assert temp.get("/dashboard/session").status_code == 401


def test_app_pages_carry_the_strict_csp(board: DashboardServer) -> None:
    with _client(board) as client:
        for path in ("/dashboard", "/dashboard/", "/dashboard/sandboxes/abc", "/dashboard/keys"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert page.text == "<!doctype html><title>app</title>"
            assert page.headers["content-security-policy"] == APP_CSP
            assert page.headers["x-content-type-options"] == "nosniff"
            assert page.headers["referrer-policy"] == "no-referrer"
        asset = client.get("/dashboard/assets/app-1234.js")
        assert asset.status_code == 200 and "immutable" in asset.headers["cache-control"]
        assert client.get("/dashboard/assets/missing-1.js").status_code == 404
        assert client.get("/dashboard/..%2f..%2fetc/passwd").status_code in (200, 404)
        assert "root:" not in client.get("/dashboard/../../etc/passwd").text
