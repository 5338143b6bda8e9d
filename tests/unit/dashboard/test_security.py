"""The dashboard's request checks (``hutch.dashboard.security``) and terminal frames."""

from __future__ import annotations

import pytest

from hutch.dashboard.security import DATA_PATHS, check_csrf, check_origin
from hutch.dashboard.terminal import FrameError, parse_frame
from hutch.shared.errors import PermissionDeniedError


def test_security_csrf_needed_only_for_changes() -> None:
    for method in ("GET", "HEAD", "OPTIONS"):
        check_csrf(method, {}, expected="t")
    check_csrf("POST", {"x-csrf-token": "t"}, expected="t")
    for method, headers in (("POST", {}), ("DELETE", {"x-csrf-token": "u"}), ("PATCH", {
            "x-csrf-token": ""})):  # fmt: skip
        with pytest.raises(PermissionDeniedError):
            check_csrf(method, headers, expected="t")


def test_security_origin_must_be_this_host() -> None:
    check_origin({"host": "h:3000"}, required=False)
    check_origin({"host": "h:3000", "origin": "http://h:3000"}, required=True)
    check_origin({"host": "H:3000", "origin": "https://h:3000"}, required=True)
    for headers in (
        {"host": "h:3000", "origin": "http://evil:3000"},
        {"host": "h:3000", "origin": "http://h:3001"},
        {"host": "h:3000", "origin": "null"},
        {"host": "h:3000", "origin": "file://h:3000"},
        {"origin": "http://h:3000"},
    ):
        with pytest.raises(PermissionDeniedError):
            check_origin(headers, required=False)
    with pytest.raises(PermissionDeniedError):
        check_origin({"host": "h:3000"}, required=True)


def test_security_data_paths_are_the_bridges_not_app_routes() -> None:
    for path in ("/dashboard/api/sandboxes", "/dashboard/sandboxes/i1/envd/files",
                 "/dashboard/sandboxes/i1/terminal",
                 "/dashboard/volumes/v1/content/file"):  # fmt: skip
        assert DATA_PATHS.match(path), path
    for path in ("/dashboard", "/dashboard/", "/dashboard/sandboxes/i1", "/dashboard/apix",
                 "/dashboard/volumes", "/dashboard/volumes/v1"):  # fmt: skip
        assert not DATA_PATHS.match(path), path


def test_terminal_frames_parse_input_resize_and_binary() -> None:
    assert parse_frame({"text": '{"type":"input","data":"ls\\r"}'}) == ("input", b"ls\r")
    assert parse_frame({"text": '{"type":"resize","cols":120,"rows":40}'}) == (
        "resize", (120, 40),
    )  # fmt: skip
    assert parse_frame({"bytes": b"\x03"}) == ("input", b"\x03")


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1]",
        '{"type":"input"}',
        '{"type":"input","data":5}',
        '{"type":"resize","cols":0,"rows":10}',
        '{"type":"resize","cols":true,"rows":10}',
        '{"type":"resize","cols":10,"rows":100000}',
        '{"type":"exec","data":"x"}',
        '{"type":"input","data":"' + "x" * 70000 + '"}',
    ],
)
def test_terminal_frames_refuse_what_they_cannot_read(text: str) -> None:
    with pytest.raises(FrameError):
        parse_frame({"text": text})
