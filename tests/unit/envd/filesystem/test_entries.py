"""Pure parts of entries.py: Go's FileMode strings."""

from __future__ import annotations

import stat

import pytest

from hutch.envd.filesystem.entries import mode_string


@pytest.mark.parametrize(
    ("st_mode", "expected"),
    [
        (stat.S_IFREG | 0o644, "-rw-r--r--"),
        (stat.S_IFREG | 0o000, "----------"),
        (stat.S_IFREG | 0o200, "--w-------"),
        (stat.S_IFDIR | 0o755, "drwxr-xr-x"),
        (stat.S_IFLNK | 0o777, "Lrwxrwxrwx"),
        (stat.S_IFDIR | stat.S_ISVTX | 0o777, "dtrwxrwxrwx"),
        (stat.S_IFREG | stat.S_ISUID | 0o755, "urwxr-xr-x"),
        (stat.S_IFDIR | stat.S_ISGID | 0o2775 & 0o777, "dgrwxrwxr-x"),
        (stat.S_IFCHR | 0o666, "Dcrw-rw-rw-"),
        (stat.S_IFBLK | 0o660, "Drw-rw----"),
        (stat.S_IFIFO | 0o644, "prw-r--r--"),
        (stat.S_IFSOCK | 0o755, "Srwxr-xr-x"),
    ],
)
def test_mode_string_matches_go_filemode_string(st_mode: int, expected: str) -> None:
    assert mode_string(st_mode) == expected
