"""The volume path rules (``hutch.volumes.base.normalize_path``)."""

from __future__ import annotations

import pytest

from hutch.shared.errors import InvalidArgumentError
from hutch.volumes.base import normalize_path, split_parent


@pytest.mark.parametrize(
    ("given", "expected"),
    [("/", ""), ("", ""), (".", ""), ("/a/b", "a/b"), ("a//b/./c/", "a/b/c"), ("./x", "x")],
)
def test_normalize(given: str, expected: str) -> None:
    assert normalize_path(given) == expected


@pytest.mark.parametrize(
    "bad", ["..", "a/..", "/../x", "a/../b", "x\x00", "x\ny", "\x7f", "a" * 256, "a/" * 2100]
)
def test_refused(bad: str) -> None:
    with pytest.raises(InvalidArgumentError):
        normalize_path(bad)


def test_split_parent() -> None:
    assert split_parent("a/b/c") == ("a/b", "c")
    assert split_parent("c") == ("", "c")
    with pytest.raises(InvalidArgumentError):
        split_parent("")
