"""The volume bridge's inner request and allow-list (``hutch.dashboard.volumes``)."""

from __future__ import annotations

import pytest

from hutch.dashboard.volumes import check_allowed, inner_scope
from hutch.shared.errors import NotFoundError


def test_volumes_inner_scope_carries_the_minted_token_and_drops_the_browsers_credentials() -> None:
    outer = {
        "type": "http", "method": "PUT", "scheme": "http",
        "path": "/dashboard/volumes/dash/content/file", "root_path": "",
        "raw_path": b"/dashboard/volumes/dash/content/file", "query_string": b"path=%2Fa+b",
        "headers": [
            (b"host", b"h:3000"), (b"cookie", b"hutch_dashboard=sealed"),
            (b"authorization", b"Bearer forged"), (b"x-api-key", b"other"),
            (b"x-csrf-token", b"t"), (b"x-metadata-owner", b"ann"),
        ],
        "app": object(), "path_params": {"volume_id": "dash", "op": "file"}, "state": {"k": 1},
    }  # fmt: skip
    inner = inner_scope(outer, volume_id="vol123", op="file", token="vol123.9.sig")
    assert inner["path"] == "/volumecontent/vol123/file"
    assert inner["raw_path"] == b"/volumecontent/vol123/file"
    assert inner["query_string"] == b"path=%2Fa+b" and inner["method"] == "PUT"
    assert inner["headers"] == [
        (b"host", b"h:3000"), (b"x-metadata-owner", b"ann"),
        (b"authorization", b"Bearer vol123.9.sig"),
    ]  # fmt: skip
    assert "app" not in inner and "path_params" not in inner and inner["state"] == {"k": 1}


def test_volumes_bridge_offers_only_the_browsers_calls() -> None:
    for op, method in (("dir", "GET"), ("dir", "POST"), ("file", "GET"), ("file", "PUT"),
                       ("path", "GET"), ("path", "DELETE")):  # fmt: skip
        check_allowed(op, method)
    for op, method in (("path", "PATCH"), ("move", "POST"), ("file", "DELETE"), ("x", "GET")):
        with pytest.raises(NotFoundError):
            check_allowed(op, method)
