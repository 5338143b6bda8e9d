"""Pure helpers of ``envd/http/files.py``: Range, Accept-Encoding, Content-Disposition."""

from __future__ import annotations

import pytest

from hutch.envd.http.files import _accepts_gzip, _disposition, _parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-4", 10, (0, 4)),
        ("bytes=5-", 10, (5, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=8-100", 10, (8, 9)),
        ("bytes=10-", 10, False),
        ("bytes=-0", 10, False),
        ("bytes=0-", 0, False),
        ("bytes=5-2", 10, None),
        ("bytes=-", 10, None),
        ("bytes=0-1,3-4", 10, None),
        ("items=0-1", 10, None),
        ("bytes=a-b", 10, None),
    ],
)
def test_parse_range(header, size, expected) -> None:
    assert _parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", False),
        ("gzip", True),
        ("GZIP;q=0.5", True),
        ("x-gzip", True),
        # A client's default list is no request for compression (see _accepts_gzip).
        ("gzip, deflate", False),
        ("gzip, deflate, br, zstd", False),
        ("gzip;q=0", False),
        ("*", False),
        ("br, zstd", False),
        ("gzip;q=bad", False),
    ],
)
def test_accepts_gzip(header, expected) -> None:
    assert _accepts_gzip(header) is expected


def test_disposition_quotes_or_encodes() -> None:
    assert _disposition("a b.txt") == 'inline; filename="a b.txt"'
    assert _disposition('q"uote') == "inline; filename*=UTF-8''q%22uote"
    assert _disposition("héllo") == "inline; filename*=UTF-8''h%C3%A9llo"
