"""The API bridge's inner request (``hutch.dashboard.forward.inner_scope``)."""

from __future__ import annotations

from hutch.dashboard.forward import inner_scope


def _scope(raw_path: bytes, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, object]:
    return {
        "type": "http", "method": "GET", "scheme": "http", "path": path,
        "raw_path": raw_path, "root_path": "", "query_string": b"state=running",
        "headers": headers, "app": object(), "path_params": {"path": "x"},
        "route": object(), "endpoint": object(), "state": {"k": 1},
    }  # fmt: skip


def test_forward_inner_scope_keeps_the_raw_path_and_drops_the_browsers_credentials() -> None:
    headers = [
        (b"host", b"h:3000"), (b"cookie", b"hutch_dashboard=sealed"), (b"x-api-key", b"other"),
        (b"authorization", b"Bearer other"), (b"x-csrf-token", b"t"),
        (b"x-hutch-host-key", b"root"), (b"content-type", b"application/json"),
    ]  # fmt: skip
    inner = inner_scope(
        _scope(b"/dashboard/api/volumes/v1/file%2Fname", "/dashboard/api/volumes/v1/file/name",
               headers),
        path="/volumes/v1/file/name", api_key="e2b_session",
    )  # fmt: skip
    assert inner["path"] == "/volumes/v1/file/name"
    assert inner["raw_path"] == b"/volumes/v1/file%2Fname"  # still encoded, as sent
    assert inner["root_path"] == "" and inner["query_string"] == b"state=running"
    assert inner["headers"] == [
        (b"host", b"h:3000"), (b"content-type", b"application/json"),
        (b"x-api-key", b"e2b_session"),
    ]  # fmt: skip
    for routed in ("app", "path_params", "route", "endpoint"):
        assert routed not in inner  # the api routes the inner call afresh
    assert inner["state"] == {"k": 1}


def test_forward_inner_scope_without_a_raw_path_quotes_the_path() -> None:
    scope = _scope(b"", "/dashboard/api/sandboxes", [])
    del scope["raw_path"]
    inner = inner_scope(scope, path="/sandboxes/a b", api_key="k")
    assert inner["raw_path"] == b"/sandboxes/a%20b"
