"""The processes of one envd: start, find by pid or tag, list, and kill them all at shutdown.

A process is *running* from spawn until it is reaped; then it moves to a short-lived table
of *ended* processes (``ended_ttl_s``, at most ``max_ended``), so that a ``Connect`` that
arrives just after the exit still learns the end event. Signals and input only reach
running processes: anything else is ``NotFoundError`` (the SDK turns that into
``kill() -> False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict

from hutch.envd.process.fanout import DEFAULT_CAPACITY
from hutch.envd.process.handle import ProcessHandle
from hutch.envd.process.models import ProcessSpec
from hutch.envd.process.reaper import ChildReaper
from hutch.envd.process.spawn import build_env, check_cwd, spawn, validate_spec
from hutch.envd.state import EnvdState
from hutch.envd.users import User
from hutch.shared.errors import NotFoundError, UnavailableError

log = logging.getLogger("hutch.envd.process")

#: How long to wait for killed children to be reaped at shutdown.
CLOSE_TIMEOUT_S = 5.0


class ProcessManager:
    """Every process envd started (see the module docstring)."""

    def __init__(
        self,
        *,
        state: EnvdState,
        ended_ttl_s: float = 60.0,
        max_ended: int = 1000,
        subscriber_capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self._state = state
        self._ended_ttl_s = ended_ttl_s
        self._max_ended = max_ended
        self._capacity = subscriber_capacity
        self._reaper = ChildReaper()
        self._running: dict[int, ProcessHandle] = {}
        #: pid -> (handle, monotonic time it ended), oldest first.
        self._ended: OrderedDict[int, tuple[ProcessHandle, float]] = OrderedDict()
        self._closed = False

    def start(
        self, spec: ProcessSpec, *, user: User, cwd: str, timeout_s: float | None = None
    ) -> ProcessHandle:
        """Start ``spec`` as ``user`` in ``cwd`` (already resolved, see ``Envd.path``).

        ``timeout_s`` is the Start call's deadline: the whole command is killed when it
        passes, whether or not a client is still attached (E2B's behaviour). The caller
        should ``subscribe`` before awaiting anything, or it may miss the first output.
        """
        if self._closed:
            raise UnavailableError("envd is shutting down")
        validate_spec(spec)
        workdir = check_cwd(cwd, explicit=bool(spec.cwd))
        env = build_env(user=user, init_env=self._state.env_vars, request_env=spec.envs)
        spawned = spawn(spec, user=user, cwd=workdir, env=env)
        handle = ProcessHandle(
            spawned=spawned,
            spec=spec,
            cwd=workdir,
            reaper=self._reaper,
            on_exit=self._on_exit,
            capacity=self._capacity,
        )
        self._running[handle.pid] = handle
        if timeout_s is not None:
            handle.kill_after(timeout_s)
        log.info("started pid %d as %s: %s", handle.pid, user.name, spec.cmd)
        return handle

    def _on_exit(self, handle: ProcessHandle) -> None:
        if self._running.get(handle.pid) is handle:
            del self._running[handle.pid]
        self._ended.pop(handle.pid, None)
        self._ended[handle.pid] = (handle, time.monotonic())
        self._expire()

    def _expire(self) -> None:
        cutoff = time.monotonic() - self._ended_ttl_s
        while self._ended:
            pid, (_, ended_at) = next(iter(self._ended.items()))
            if ended_at >= cutoff and len(self._ended) <= self._max_ended:
                break
            del self._ended[pid]

    def list(self) -> list[ProcessHandle]:
        """The running processes, oldest first."""
        return list(self._running.values())

    def get_running(self, *, pid: int | None = None, tag: str | None = None) -> ProcessHandle:
        """The running process with ``pid`` or ``tag``; ``NotFoundError`` otherwise."""
        handle = self._find(self._running.values(), pid=pid, tag=tag)
        if handle is None:
            raise NotFoundError(_not_found(pid, tag))
        return handle

    def get(self, *, pid: int | None = None, tag: str | None = None) -> ProcessHandle:
        """A running process, else a recently ended one, with ``pid`` or ``tag``."""
        self._expire()
        handle = self._find(self._running.values(), pid=pid, tag=tag)
        if handle is None:
            ended = [h for h, _ in reversed(self._ended.values())]  # newest first
            handle = self._find(ended, pid=pid, tag=tag)
        if handle is None:
            raise NotFoundError(_not_found(pid, tag))
        return handle

    @staticmethod
    def _find(handles, *, pid: int | None, tag: str | None) -> ProcessHandle | None:
        for handle in handles:
            if (pid is not None and handle.pid == pid) or (tag is not None and handle.tag == tag):
                return handle
        return None

    async def close(self) -> None:
        """Kill every running process and wait (bounded) until each is reaped."""
        self._closed = True
        handles = list(self._running.values())
        for handle in handles:
            handle.kill_all()
        if handles:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await asyncio.gather(*(h.wait() for h in handles))
        self._reaper.close()


def _not_found(pid: int | None, tag: str | None) -> str:
    if tag is not None:
        return f"process with tag {tag!r} not found"
    return f"process with pid {pid} not found"
