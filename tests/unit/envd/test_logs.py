"""envd's log records as E2B-shaped JSON lines."""

from __future__ import annotations

import json
import logging
import sys

from hutch.envd.logs import JsonLineFormatter, logger_name


def _record(name: str, level: int, msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    record = logging.LogRecord(name, level, __file__, 1, msg, args, info)
    record.created = 1795455078.25  # 2026-11-23T17:31:18.250Z
    return record


def test_json_line_formatter_writes_one_flat_object_per_record() -> None:
    fmt = JsonLineFormatter()
    line = fmt.format(_record("hutch.envd.process", logging.WARNING, "pid %d\nended", 12))
    assert "\n" not in line
    assert json.loads(line) == {
        "level": "warn",
        "logger": "process",
        "timestamp": "2026-11-23T17:31:18.250000Z",
        "message": "pid 12\nended",
    }
    failed = json.loads(fmt.format(_record("hutch.envd", logging.ERROR, "GET /x failed", exc=True)))
    assert (failed["level"], failed["logger"]) == ("error", "envd")
    assert failed["message"] == "GET /x failed"
    assert failed["error"].startswith("Traceback") and "ValueError: boom" in failed["error"]


def test_logger_name_is_the_part_that_logged() -> None:
    names = ("hutch.envd", "hutch.envd.process", "uvicorn.error", "x.y")
    assert [logger_name(n) for n in names] == ["envd", "process", "uvicorn", "x.y"]
