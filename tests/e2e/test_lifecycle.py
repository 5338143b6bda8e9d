"""Faults: SIGKILL of ``hutch serve`` and restart (repeated create/kill: ``test_leaks.py``)."""

from __future__ import annotations

import signal

import pytest
from e2b import Sandbox, SandboxQuery

from .serveproc import Serve

pytestmark = pytest.mark.root


def _store_ids() -> set[str]:
    return {s.sandbox_id for s in Sandbox.list(query=SandboxQuery()).next_items()}


def test_sigkill_and_restart_adopts_running_sandboxes(serve: Serve) -> None:
    kept = Sandbox.create("busybox", timeout=300)
    gone = Sandbox.create("busybox", timeout=300)
    try:
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
