"""The metadata rules of ``shared/xattrs.py`` (pure validation)."""

from __future__ import annotations

import pytest

from hutch.shared.errors import InvalidArgumentError
from hutch.shared.xattrs import MAX_KEY_BYTES, metadata_from_headers, validate_metadata


def test_metadata_from_headers_strips_prefix_lowercases_and_ignores_others() -> None:
    headers = [("X-Metadata-Owner", "alice"), ("Content-Type", "x"), ("x-metadata-TAG", "t")]
    assert metadata_from_headers(headers) == {"owner": "alice", "tag": "t"}


def test_metadata_from_headers_first_value_wins() -> None:
    headers = [("x-metadata-k", "first"), ("X-Metadata-K", "second")]
    assert metadata_from_headers(headers) == {"k": "first"}


@pytest.mark.parametrize(
    ("metadata", "needle"),
    [
        ({"": "v"}, "empty"),
        ({"bad key\x7f": "v"}, "printable"),
        ({"k": "caf\u00e9"}, "'k'"),
        ({"k": "tab\there"}, "'k'"),
        ({"k" * (MAX_KEY_BYTES + 1): "v"}, str(MAX_KEY_BYTES)),
    ],
)
def test_validate_metadata_rejects_naming_the_key(metadata: dict[str, str], needle: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        validate_metadata(metadata)
    assert needle in info.value.public_message


def test_validate_metadata_accepts_the_longest_key_and_a_full_set() -> None:
    key = "k" * MAX_KEY_BYTES
    assert validate_metadata({key: "v"}) == {key: "v"}
    # 4096 bytes of keys plus values in total is allowed, one more is not.
    exact = {f"k{i:03d}": "v" * 60 for i in range(64)}  # 64 * (4 + 60) = 4096
    assert len(validate_metadata(exact)) == 64
    with pytest.raises(InvalidArgumentError, match="exceeds 4096"):
        validate_metadata({**exact, "x": ""})
