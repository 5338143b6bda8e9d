"""Reaping children: every exit status is collected, ours and orphans' alike.

envd may run as PID 1 of its sandbox, where every orphaned process is re-parented to it; if
nobody calls ``wait`` on them, zombies accumulate. So envd reaps with ``waitpid(-1,
WNOHANG)`` in a loop whenever ``SIGCHLD`` arrives (through ``loop.add_signal_handler``, so
the loop runs the sweep, never a signal-context handler). Statuses of processes envd
started go to whoever ``watch``-ed their pid; others are discarded (orphans).

This replaces asyncio's child watchers (which wait for specific pids and would race with a
``waitpid(-1)``): code in envd must not use ``asyncio.create_subprocess_*`` or
``subprocess.run``; it spawns through ``process/spawn.py`` and waits through this reaper.
When ``SIGCHLD`` cannot be handled (a loop outside the main thread), each watched child's
pidfd triggers the sweep instead; orphans are then reaped whenever one of ours exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

log = logging.getLogger("hutch.envd.process")


class ChildReaper:
    """Collects children's exit statuses for one event loop."""

    def __init__(self) -> None:
        self._waiters: dict[int, asyncio.Future[int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._use_pidfd = False
        self._pidfds: dict[int, int] = {}

    def _ensure_installed(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return loop
        self._loop = loop
        try:
            loop.add_signal_handler(signal.SIGCHLD, self._sweep)
        except (RuntimeError, ValueError):
            # Not the main thread: fall back to one pidfd per watched child.
            self._use_pidfd = True
        return loop

    def watch(self, pid: int) -> asyncio.Future[int]:
        """A future for ``pid``'s ``waitpid`` status.

        Call it in the same loop iteration that created the child (before awaiting anything)
        so its exit cannot be swept before the pid is known.
        """
        loop = self._ensure_installed()
        future: asyncio.Future[int] = loop.create_future()
        self._waiters[pid] = future
        if self._use_pidfd:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                pass  # already gone and reaped elsewhere? the sweep below settles it
            else:
                self._pidfds[pid] = fd
                loop.add_reader(fd, self._sweep)
        # The child may have exited before we listened: sweep once now (soon, not inline,
        # so the caller finishes its bookkeeping first).
        loop.call_soon(self._sweep)
        return future

    def _sweep(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            fd = self._pidfds.pop(pid, None)
            if fd is not None and self._loop is not None:
                self._loop.remove_reader(fd)
                os.close(fd)
            future = self._waiters.pop(pid, None)
            if future is None:
                log.debug("reaped orphan pid %d (status %d)", pid, status)
            elif not future.done():
                future.set_result(status)

    def close(self) -> None:
        """Stop listening (pending futures stay pending)."""
        loop, self._loop = self._loop, None
        if loop is None or loop.is_closed():
            return
        if not self._use_pidfd:
            loop.remove_signal_handler(signal.SIGCHLD)
        for fd in self._pidfds.values():
            loop.remove_reader(fd)
            os.close(fd)
        self._pidfds.clear()
