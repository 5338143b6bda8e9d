"""Pure tests of routing rules and signature checks."""

from __future__ import annotations

import pytest

from hutch.proxy.catalog import InMemorySandboxCatalog, SandboxRoute
from hutch.proxy.errors import RoutingError
from hutch.proxy.routing import SandboxTarget, SignedFileTarget, is_internal, parse_host, route
from hutch.shared.ids import SandboxID
from hutch.shared.signatures import check_signature, file_signature, signature_matches


def _route(headers: dict[str, str], path: str = "/", query: bytes = b"", method: str = "GET"):
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return route(method=method, path=path, query_string=query, headers=raw)


def test_route_headers_win_over_host() -> None:
    target = _route(
        {"Host": "80-other.example", "E2b-Sandbox-Id": "abc", "E2b-Sandbox-Port": "49983"}
    )
    assert target == SandboxTarget(SandboxID("abc"), 49983)


def test_route_header_id_strips_client_id() -> None:
    assert _route({"E2b-Sandbox-Id": "abc-6532622b", "E2b-Sandbox-Port": "1"}) == SandboxTarget(
        SandboxID("abc"), 1
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("3000-abc.e2b.local", ("abc", 3000)),
        ("3000-abc-6532622b.e2b.local:8443", ("abc", 3000)),
        ("localhost:49983", None),
        ("127.0.0.1:49983", None),
        ("sandbox.example", None),
        ("x-abc.example", None),
        ("70000-abc.example", None),
        ("80-a_b.example", None),
    ],
)
def test_parse_host(host: str, expected: tuple[str, int] | None) -> None:
    got = parse_host(host)
    assert (None if got is None else (got.sandbox_id, got.port)) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {"E2b-Sandbox-Id": "abc"},
        {"E2b-Sandbox-Port": "1"},
        {"E2b-Sandbox-Id": "ABC", "E2b-Sandbox-Port": "1"},
        {"E2b-Sandbox-Id": "abc", "E2b-Sandbox-Port": "-1"},
        {"E2b-Sandbox-Id": "abc", "E2b-Sandbox-Port": "0"},
        {"Host": "localhost"},
    ],
)
def test_route_rejects(headers: dict[str, str]) -> None:
    with pytest.raises(RoutingError):
        _route(headers)


def test_route_signed_files_without_sandbox() -> None:
    assert (
        _route({"Host": "localhost"}, "/files", b"path=%2Fx&signature=v1_a") == SignedFileTarget()
    )
    with pytest.raises(RoutingError):
        _route({"Host": "localhost"}, "/other", b"signature=v1_a")


def _query(token: str, *, op: str = "read", exp: int | None = None) -> dict[str, list[str]]:
    q = {
        "path": ["/x"],
        "username": ["user"],
        "signature": [
            file_signature(path="/x", operation=op, username="user", token=token, expiration=exp)
        ],
    }
    if exp is not None:
        q["signature_expiration"] = [str(exp)]
    return q


def test_signatures_match_and_expire() -> None:
    assert signature_matches(_query("t"), operation="read", token="t")
    assert not signature_matches(_query("t"), operation="write", token="t")
    assert not signature_matches(_query("t"), operation="read", token="u")
    assert check_signature(_query("t", exp=100), operation="read", token="t", now=50) is None
    assert (
        check_signature(_query("t", exp=100), operation="read", token="t", now=150)
        == "signature is already expired"
    )
    bad = {**_query("t"), "signature_expiration": ["soon"]}
    assert check_signature(bad, operation="read", token="t", now=0) == "invalid signature"
    assert (
        check_signature({}, operation="read", token="t", now=0)
        == "missing signature query parameter"
    )


def test_catalog_finds_the_signing_sandbox_only() -> None:
    from urllib.parse import urlencode

    catalog = InMemorySandboxCatalog()
    for sid, token in (("a", "ta"), ("b", "tb"), ("c", None)):
        catalog.put(SandboxRoute(SandboxID(sid), "10.0.0.1", envd_access_token=token))
    catalog.put(SandboxRoute(SandboxID("d"), "10.0.0.2", envd_access_token="td", running=False))
    qs = lambda token, op="read": urlencode(_query(token, op=op), doseq=True).encode()  # noqa: E731
    found = catalog.find_by_file_signature(qs("tb"), "GET")
    assert found is not None and found.sandbox_id == "b"
    assert catalog.find_by_file_signature(qs("tb", "write"), "POST").sandbox_id == "b"  # type: ignore[union-attr]
    assert catalog.find_by_file_signature(qs("tb"), "POST") is None  # read signature, write method
    assert catalog.find_by_file_signature(qs("td"), "GET") is None  # not running
    assert catalog.find_by_file_signature(qs("zz"), "GET") is None
    assert catalog.find_by_file_signature(qs("ta"), "DELETE") is None
    catalog.remove(SandboxID("b"))
    assert catalog.find(SandboxID("b")) is None


def test_route_address_remaps_ports() -> None:
    r = SandboxRoute(SandboxID("a"), "10.0.0.1", ports={49983: 5000})
    assert r.address(49983) == ("10.0.0.1", 5000) and r.address(80) == ("10.0.0.1", 80)


@pytest.mark.parametrize(
    ("port", "path", "internal"),
    [
        (49983, "/init", True),
        (49983, "/init/", True),
        (49983, "//init", True),
        (49983, "/files/../init", True),
        (49983, "/upgrade", True),
        (49983, "/freeze", True),
        (49983, "/health", False),
        (49983, "/files", False),
        (49983, "/initx", False),
        (49983, "/a/init", False),
        (8080, "/init", False),  # the sandbox's own servers may have an /init
    ],
)
def test_is_internal_names_envd_control_routes_on_envd_port(
    port: int, path: str, internal: bool
) -> None:
    assert is_internal(SandboxTarget(SandboxID("isbx"), port), path) is internal
