"""Faults: SIGKILL of ``hutch serve`` and restart (repeated create/kill: ``test_leaks.py``)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from e2b import Sandbox, SandboxQuery

from .serveproc import Serve

pytestmark = pytest.mark.root


def _store_ids() -> set[str]:
    return {s.sandbox_id for s in Sandbox.list(query=SandboxQuery()).next_items()}


def _record(serve: Serve, sandbox_id: str) -> dict[str, object]:
    """The ``sandbox.json`` of ``sandbox_id`` (a pool member's directory is its host id)."""
    for path in (serve.home / "sandboxes").glob("*/sandbox.json"):
        record = json.loads(path.read_text())
        if record["sandbox_id"] == sandbox_id:
            return record
    raise AssertionError(f"no sandbox.json names {sandbox_id}")


def _ppid(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return line.split()[1]
    raise AssertionError(f"no PPid in /proc/{pid}/status")


def test_default_create_forks_envd_from_the_zygote(serve: Serve) -> None:
    """``hutch serve`` with no setting forks a busybox sandbox's envd from its zygote (ADR
    39: on by default): a pid of its own in ``sandbox.json``, PID 1's child, serving."""
    sbx = Sandbox.create("busybox", timeout=300)
    try:
        record = _record(serve, sbx.sandbox_id)
        envd_pid, init_pid = int(record["envd_pid"]), int(record["pid"])  # type: ignore[call-overload]
        assert envd_pid > 0 and envd_pid != init_pid, record
        assert _ppid(envd_pid) == str(init_pid)
        assert sbx.commands.run("echo forked").stdout == "forked\n"
    finally:
        sbx.kill()


def test_sigkill_and_restart_adopts_running_sandboxes(serve: Serve) -> None:
    kept = Sandbox.create("busybox", timeout=300)
    gone = Sandbox.create("busybox", timeout=300)
    try:
        envd_pid = int(_record(serve, kept.sandbox_id)["envd_pid"])  # type: ignore[call-overload]
        kept.commands.run("echo before > /tmp/state")
        assert serve.stop(signal.SIGKILL) == -signal.SIGKILL
        # While serve is down, one sandbox's container disappears behind its back.
        _kill_container(serve, gone.sandbox_id)
        serve.start()

        assert gone.sandbox_id not in _store_ids()
        assert kept.sandbox_id in _store_ids()
        # Adopted: same sandbox, state intact, reachable through the new proxy.
        assert kept.commands.run("cat /tmp/state").stdout == "before\n"
        assert kept.get_info().sandbox_id == kept.sandbox_id
        # Its forked envd is the one that was there before serve died (re-armed, kept).
        assert int(_record(serve, kept.sandbox_id)["envd_pid"]) == envd_pid > 0  # type: ignore[call-overload]
    finally:
        kept.kill()
        Sandbox.kill(gone.sandbox_id)
    assert serve.leaks().total() == 0, serve.leaks()


def test_orphan_container_is_cleaned_on_restart(serve: Serve) -> None:
    """A sandbox whose row vanished (store and node disagree) is destroyed, not leaked."""
    sbx = Sandbox.create("busybox", timeout=300)
    serve.stop(signal.SIGKILL)
    import sqlite3

    with sqlite3.connect(serve.home / "hutch.db") as db:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("DELETE FROM sandboxes WHERE id = ?", (sbx.sandbox_id,))
    serve.start()
    assert sbx.sandbox_id not in _store_ids()
    assert serve.leaks().total() == 0, serve.leaks()


def _kill_container(serve: Serve, sandbox_id: str) -> None:
    import asyncio

    from hutch.node.runtime.runc import RuncRuntime

    runtime = RuncRuntime(root=serve.node_settings().runtime_root)
    asyncio.run(runtime.delete(sandbox_id, force=True))
