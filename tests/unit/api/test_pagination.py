from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from hutch.api.store.pagination import Cursor, decode_cursor, encode_cursor
from hutch.shared.errors import InvalidArgumentError
from hutch.shared.ids import SandboxID


def test_pagination_cursor_round_trips_to_the_microsecond() -> None:
    cursor = Cursor(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), SandboxID("iabc"))
    token = encode_cursor(cursor)
    assert "=" not in token and "/" not in token and "+" not in token
    assert decode_cursor(token) == cursor


def test_pagination_cursor_normalises_to_utc() -> None:
    local = datetime(2026, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2)))
    decoded = decode_cursor(encode_cursor(Cursor(local, SandboxID("i1"))))
    assert decoded.started_at == local
    assert decoded.started_at.tzinfo == UTC


@pytest.mark.parametrize("token", ["x", "!!!", "WzJd", "WzEsIjIwMjYtMDEtMDEiLDJd"])
def test_pagination_malformed_tokens_are_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgumentError):
        decode_cursor(token)
