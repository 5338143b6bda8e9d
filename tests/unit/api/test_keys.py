from __future__ import annotations

import hashlib
import re

from hutch.api.store.keys import (
    generate_api_key,
    hash_api_key,
    is_well_formed_api_key,
    mask_api_key,
)


def test_keys_generated_key_matches_e2b_format() -> None:
    keys = {generate_api_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        # The JS SDK and CLI reject anything else (e2b-compat.md §5).
        assert re.fullmatch(r"e2b_[0-9a-f]{40}", key)
        assert is_well_formed_api_key(key)


def test_keys_hash_is_sha256_hex_of_the_whole_key() -> None:
    key = "e2b_" + "ab" * 20
    assert hash_api_key(key) == hashlib.sha256(key.encode()).hexdigest()


def test_keys_mask_shows_prefix_and_edges_only() -> None:
    key = "e2b_0123456789abcdef0123456789abcdef01234567"
    assert mask_api_key(key) == "e2b_01…4567"


def test_keys_malformed_keys_are_rejected_before_lookup() -> None:
    for bad in ("", "e2b_", "e2b_" + "A" * 40, "e2b_" + "a" * 39, "sk_e2b_" + "a" * 40):
        assert not is_well_formed_api_key(bad)
