"""Parsing runc's JSON output and logs (pure)."""

from __future__ import annotations

from pathlib import Path

from hutch.node.runtime.base import RuntimeStatus
from hutch.node.runtime.runc import _last_error, _parse_state


def test_parse_state_running_and_stopped():
    running = _parse_state({"id": "a", "status": "running", "pid": 42, "bundle": "/b"})
    assert (running.status, running.pid, running.bundle) == (RuntimeStatus.RUNNING, 42, Path("/b"))
    stopped = _parse_state({"id": "a", "status": "stopped", "pid": 0, "bundle": "/b"})
    assert (stopped.status, stopped.pid) == (RuntimeStatus.STOPPED, None)


def test_last_error_picks_the_last_error_level_message():
    log = "\n".join(
        [
            '{"level":"warning","msg":"ignored","time":"t"}',
            '{"level":"error","msg":"first","time":"t"}',
            '{"level":"error","msg":"container does not exist","time":"t"}',
            "",
        ]
    )
    assert _last_error(log) == "container does not exist"
    assert _last_error("") is None
    assert _last_error("plain text failure\n") == "plain text failure"
