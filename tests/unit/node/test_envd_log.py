"""Parsing envd's log file into entries."""

from __future__ import annotations

from datetime import UTC, datetime

from hutch.node.sandbox.envd_log import parse_envd_log

LOG = """\
INFO:     Started server process [7]
2026-11-23 17:31:18,250 envd INFO started pid 12 as user: ['bash']
2026-11-23 17:31:19,000 envd ERROR GET /files failed
Traceback (most recent call last):
  File "x.py", line 1, in <module>
ValueError: boom
[WARN  tini (1)] something
WARNING:  Invalid HTTP request received.

"""


def test_parse_envd_log_times_levels_and_tracebacks() -> None:
    entries = parse_envd_log(LOG, base_time=100.0)
    t1 = datetime(2026, 11, 23, 17, 31, 18, 250000, tzinfo=UTC).timestamp()
    t2 = datetime(2026, 11, 23, 17, 31, 19, tzinfo=UTC).timestamp()
    assert [(e.timestamp, e.level, e.fields.get("logger")) for e in entries] == [
        (100.0, "info", "uvicorn"),
        (t1, "info", "envd"),
        (t2, "error", "envd"),
        (t2, "info", None),
        (t2, "warn", "uvicorn"),
    ]
    assert entries[1].message == "started pid 12 as user: ['bash']"
    assert entries[2].message.splitlines() == [
        "GET /files failed",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "ValueError: boom",
    ]
    assert entries[3].message == "[WARN  tini (1)] something"
