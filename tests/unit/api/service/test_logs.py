"""Selecting log lines: cursor, direction, level, search, limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hutch.api.service.logs import LogDirection, LogsQuery, select_log_lines
from hutch.api.service.ports import SandboxLogLine
from hutch.shared.errors import InvalidArgumentError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LINES = [
    SandboxLogLine(timestamp=T0 + timedelta(seconds=i), message=f"m{i} {lvl}", level=lvl)
    for i, lvl in enumerate(["debug", "info", "warn", "error", "info"])
]


def _msgs(query: LogsQuery) -> list[str]:
    return [x.message.split()[0] for x in select_log_lines(LINES, query)]


def test_select_forward_backward_cursor_limit() -> None:
    assert _msgs(LogsQuery()) == ["m0", "m1", "m2", "m3", "m4"]
    assert _msgs(LogsQuery(cursor=T0 + timedelta(seconds=2), limit=2)) == ["m2", "m3"]
    back = LogsQuery(direction=LogDirection.BACKWARD, limit=2)
    assert _msgs(back) == ["m4", "m3"]
    back_cursor = LogsQuery(direction=LogDirection.BACKWARD, cursor=T0 + timedelta(seconds=2))
    assert _msgs(back_cursor) == ["m2", "m1", "m0"]
    assert _msgs(LogsQuery(limit=0)) == []


def test_select_level_and_search() -> None:
    assert _msgs(LogsQuery(min_level="warn")) == ["m2", "m3"]
    assert _msgs(LogsQuery(search="info")) == ["m1", "m4"]
    assert _msgs(LogsQuery(search="INFO")) == []  # case-sensitive
    assert _msgs(LogsQuery(min_level="info", search="m", limit=1)) == ["m1"]


@pytest.mark.parametrize("kwargs", [{"limit": -1}, {"min_level": "fatal"}, {"search": "x" * 257}])
def test_logs_query_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        LogsQuery(**kwargs)  # type: ignore[arg-type]
