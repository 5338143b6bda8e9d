"""Parsing envd's log file into entries."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from hutch.envd.logs import JsonLineFormatter
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


JSON_LOG = """\
[WARN  tini (1)] before envd
{"level":"info","logger":"envd","timestamp":"2026-11-23T17:31:18.250123Z","message":"up"}
{"level":"warn","logger":"process","pid":12,"ok":true,"ratio":0.5,"req":{"a":1},"message":"slow"}
  continued
{"level":"fatal","timestamp":"not a time","message":"odd"}
[1, 2]
"""


def test_parse_envd_log_json_lines_as_e2b_api_reads_them() -> None:
    entries = parse_envd_log(JSON_LOG, base_time=100.0)
    t1 = datetime(2026, 11, 23, 17, 31, 18, 250123, tzinfo=UTC).timestamp()
    assert [(e.timestamp, e.level, e.message) for e in entries] == [
        (100.0, "info", "[WARN  tini (1)] before envd"),
        (t1, "info", "up"),
        (t1, "warn", "slow\n  continued"),  # no time of its own: the one before
        (t1, "info", "odd"),  # unknown level: info, as E2B's API does
        (t1, "info", "[1, 2]"),  # JSON, but not an object: a text line
    ]
    assert entries[1].fields == {"logger": "envd", "timestamp": "2026-11-23T17:31:18.250123Z"}
    # Scalars become strings; nested values are dropped; level and message are the entry's.
    assert entries[2].fields == {"logger": "process", "pid": "12", "ok": "true", "ratio": "0.5"}
    assert entries[3].fields == {"timestamp": "not a time"}


def test_parse_envd_log_reads_what_envd_writes() -> None:
    def line(name: str, level: int, msg: str) -> str:
        record = logging.LogRecord(name, level, __file__, 1, msg, None, None)
        record.created = 1795455078.25  # 2026-11-23T17:31:18.250Z
        return JsonLineFormatter().format(record)

    text = "\n".join(
        [
            line("uvicorn.error", logging.INFO, "Uvicorn running"),
            line("hutch.envd.process", logging.CRITICAL, "gone"),
        ]
    )
    entries = parse_envd_log(text, base_time=0.0)
    assert [(e.level, e.message, e.fields["logger"]) for e in entries] == [
        ("info", "Uvicorn running", "uvicorn"),
        ("error", "gone", "process"),
    ]
    assert entries[0].timestamp == 1795455078.25
    assert entries[0].fields == {"logger": "uvicorn", "timestamp": "2026-11-23T17:31:18.250000Z"}
