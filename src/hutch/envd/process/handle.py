"""One started process: its output fan-out, its stdin or terminal, signals, its end.

Output is read with ``loop.add_reader`` on non-blocking fds and published to the fan-out;
when a subscriber is full, reading pauses (back-pressure, see ``fanout.py``).

When the process exits (the reaper's future resolves), what it wrote before exiting is
still in the pipes: envd reads it without blocking, then closes its ends and publishes the
end event. It does not wait for EOF, because a background grandchild (``cmd &``) may hold
the pipes open for hours; E2B's envd (Go ``cmd.Wait``) behaves the same. A terminal's
output goes through the kernel's tty buffer, so for a PTY envd keeps reading until the
slave side hangs up (EIO) or ``PTY_DRAIN_GRACE_S`` has passed since the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
from collections.abc import Callable

from hutch.envd.process import pty as ptys
from hutch.envd.process.fanout import DEFAULT_CAPACITY, OutputFanout, Subscription
from hutch.envd.process.models import Output, OutputStream, ProcessEnd, ProcessSpec, PtySize
from hutch.envd.process.oom import MemoryCgroup, oom_message
from hutch.envd.process.reaper import ChildReaper
from hutch.envd.process.spawn import Spawned
from hutch.shared.errors import ConflictError, InvalidArgumentError, NotFoundError

log = logging.getLogger("hutch.envd.process")

#: Largest single read from a pipe or terminal.
CHUNK_BYTES = 64 * 1024
#: At exit, read at most this much more from each pipe (a grandchild may keep writing).
EXIT_DRAIN_BYTES = 1024 * 1024
#: At exit, how long a terminal may still deliver output before the end is sent anyway.
PTY_DRAIN_GRACE_S = 0.25


@functools.cache
def _memory_cgroup() -> MemoryCgroup | None:
    return MemoryCgroup.find()


class ProcessHandle:
    """A process envd started, from spawn until its end event (see the module docstring)."""

    def __init__(
        self,
        *,
        spawned: Spawned,
        spec: ProcessSpec,
        cwd: str,
        reaper: ChildReaper,
        on_exit: Callable[[ProcessHandle], None],
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self.pid = spawned.pid
        self.spec = spec
        self.cwd = cwd
        self._loop = asyncio.get_running_loop()
        self._popen = spawned.popen
        self._on_exit_cb = on_exit
        self._fanout = OutputFanout(on_room=self._resume, capacity=capacity)
        self._stdin_fd = spawned.stdin_fd
        self._pty_fd = spawned.pty_fd
        self._readers: dict[int, OutputStream] = {}
        if spawned.pty_fd is not None:
            self._readers[spawned.pty_fd] = OutputStream.PTY
        if spawned.stdout_fd is not None:
            self._readers[spawned.stdout_fd] = OutputStream.STDOUT
        if spawned.stderr_fd is not None:
            self._readers[spawned.stderr_fd] = OutputStream.STDERR
        self._paused = False
        self._stdin_lock = asyncio.Lock()
        self._pending_writes: set[asyncio.Future[None]] = set()
        self._wait_status: int | None = None
        #: The sandbox's OOM kill count at the start: a SIGKILL while it rose is an OOM.
        memcg = _memory_cgroup()
        self._oom_kills = memcg.oom_kills() if memcg is not None else None
        self._end: ProcessEnd | None = None
        self._ended = asyncio.Event()
        self._timers: list[asyncio.TimerHandle] = []
        for fd in self._readers:
            self._loop.add_reader(fd, self._on_readable, fd)
        reaper.watch(self.pid).add_done_callback(self._on_exit)

    # -- state ------------------------------------------------------------------------------

    @property
    def tag(self) -> str | None:
        """The client's name for the process, if any."""
        return self.spec.tag

    @property
    def is_pty(self) -> bool:
        """Whether the process runs on a terminal."""
        return self._pty_fd is not None or self.spec.pty is not None

    @property
    def running(self) -> bool:
        """True until the process has exited (and been reaped)."""
        return self._wait_status is None

    @property
    def end(self) -> ProcessEnd | None:
        """How the process ended, once its output is complete."""
        return self._end

    def subscribe(self) -> Subscription:
        """Attach a stream: output from now on, then the end (at once if already ended)."""
        return self._fanout.subscribe()

    async def wait(self) -> ProcessEnd:
        """Wait for the end event."""
        await self._ended.wait()
        assert self._end is not None
        return self._end

    def kill_after(self, seconds: float) -> None:
        """SIGKILL the whole command after ``seconds`` unless it ended before (a deadline)."""
        self._timers.append(self._loop.call_later(max(0.0, seconds), self._deadline))

    def _deadline(self) -> None:
        if self.running:
            log.info("pid %d: deadline exceeded, killing it", self.pid)
            self.kill_all()

    # -- output -----------------------------------------------------------------------------

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, CHUNK_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: every holder of the terminal's slave side has closed it
        if not data:
            self._close_reader(fd)
            if not self.running and not self._readers:
                self._finish()
            return
        self._fanout.publish(Output(self._readers[fd], data))
        if self._fanout.congested:
            self._pause()

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            for fd in self._readers:
                self._loop.remove_reader(fd)

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            for fd in self._readers:
                self._loop.add_reader(fd, self._on_readable, fd)

    def _close_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is None:
            return
        self._loop.remove_reader(fd)
        if fd == self._pty_fd:
            return  # the terminal's master is also the input side: closed in _finish
        os.close(fd)

    def _drain_pipe(self, fd: int) -> None:
        stream = self._readers[fd]
        left = EXIT_DRAIN_BYTES
        while left > 0:
            try:
                data = os.read(fd, min(CHUNK_BYTES, left))
            except (BlockingIOError, OSError):
                break
            if not data:
                break
            left -= len(data)
            self._fanout.publish(Output(stream, data))

    # -- exit -------------------------------------------------------------------------------

    def _on_exit(self, future: asyncio.Future[int]) -> None:
        if future.cancelled():
            return
        self._wait_status = future.result()
        # Tell subprocess the child is reaped, so it never waitpid()s this pid again
        # (the pid may be reused by then).
        self._popen.returncode = self._wait_status
        for timer in self._timers:
            timer.cancel()
        self._on_exit_cb(self)
        if self._pty_fd is None:
            for fd in list(self._readers):
                self._drain_pipe(fd)
                self._close_reader(fd)
            self._finish()
        elif not self._readers:
            self._finish()
        else:
            self._resume()  # a stuck subscriber must not hold back the end forever
            self._timers.append(self._loop.call_later(PTY_DRAIN_GRACE_S, self._finish))

    def _finish(self) -> None:
        if self._end is not None:
            return
        for fd in list(self._readers):
            self._close_reader(fd)
        self._close_stdin_fd()
        fd, self._pty_fd = self._pty_fd, None
        if fd is not None:
            self._loop.remove_writer(fd)
            os.close(fd)
            self._wake_writers()
        assert self._wait_status is not None
        self._end = self._ended_how(self._wait_status)
        self._fanout.finish(self._end)
        self._ended.set()
        log.info("pid %d ended: %s", self.pid, self._end.status)

    def _ended_how(self, wait_status: int) -> ProcessEnd:
        """The end event; an OOM kill says so in its ``error`` and in envd's log."""
        end = ProcessEnd.from_wait_status(wait_status)
        memcg = _memory_cgroup()
        if memcg is None or self._oom_kills is None:
            return end
        why = oom_message(wait_status, before=self._oom_kills, after=memcg.oom_kills(),
                          limit_mib=memcg.limit_mib())  # fmt: skip
        if why is None:
            return end
        command = " ".join([self.spec.cmd, *self.spec.args])
        log.warning("pid %d (%s) %s", self.pid, command[:200], why)
        return dataclasses.replace(end, error=f"{end.status} ({why})")

    # -- input ------------------------------------------------------------------------------

    async def write_stdin(self, data: bytes) -> None:
        """Write ``data`` to the process's stdin pipe, in order with other writes."""
        if self.is_pty:
            raise InvalidArgumentError(
                f"process {self.pid} has a PTY: send input as 'pty', not 'stdin'"
            )
        async with self._stdin_lock:
            await self._write_all(lambda: self._stdin_fd, data, what="stdin")

    async def write_pty(self, data: bytes) -> None:
        """Write ``data`` to the process's terminal, as if typed."""
        if not self.is_pty:
            raise InvalidArgumentError(
                f"process {self.pid} has no PTY: send input as 'stdin', not 'pty'"
            )
        async with self._stdin_lock:
            await self._write_all(lambda: self._pty_fd, data, what="terminal")

    async def _write_all(
        self, current_fd: Callable[[], int | None], data: bytes, *, what: str
    ) -> None:
        view = memoryview(data)
        while view:
            # Re-read the fd each round: CloseStdin or the exit may have closed it meanwhile.
            fd = current_fd()
            if fd is None:
                raise ConflictError(f"process {self.pid}: {what} is not enabled or was closed")
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                await self._writable(fd)
            except (BrokenPipeError, OSError) as exc:
                raise ConflictError(
                    f"process {self.pid}: cannot write to {what}: {exc.strerror or exc}"
                ) from exc

    async def _writable(self, fd: int) -> None:
        future: asyncio.Future[None] = self._loop.create_future()
        self._pending_writes.add(future)
        self._loop.add_writer(fd, lambda: future.done() or future.set_result(None))
        try:
            await future
        finally:
            self._pending_writes.discard(future)
            # The fd may have been closed (and even reused) while we waited.
            if fd in (self._stdin_fd, self._pty_fd):
                self._loop.remove_writer(fd)

    def close_stdin(self) -> None:
        """Close stdin so the process reads EOF (idempotent; not for PTYs: send Ctrl-D)."""
        if self.is_pty:
            raise InvalidArgumentError(
                f"process {self.pid} has a PTY: it has no stdin to close (send Ctrl-D, 0x04)"
            )
        self._close_stdin_fd()

    def _close_stdin_fd(self) -> None:
        fd, self._stdin_fd = self._stdin_fd, None
        if fd is None:
            return
        self._loop.remove_writer(fd)
        os.close(fd)
        self._wake_writers()

    def _wake_writers(self) -> None:
        for future in list(self._pending_writes):
            if not future.done():
                future.set_result(None)  # the writer re-checks its fd and fails cleanly

    def resize(self, size: PtySize) -> None:
        """Resize the process's terminal."""
        if self._pty_fd is None:
            if self.is_pty:
                raise ConflictError(f"process {self.pid} has ended")
            raise InvalidArgumentError(f"process {self.pid} has no PTY to resize")
        ptys.resize(self._pty_fd, size)

    # -- signals ----------------------------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the process's group (SIGKILL: to its whole session, see kill_all)."""
        if not self.running:
            raise NotFoundError(f"process with pid {self.pid} not found")
        if sig == signal.SIGKILL:
            self.kill_all()
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill_all(self) -> None:
        """SIGKILL the process's group and every other process of its session.

        Job control (``bash -i``) moves background jobs into process groups of their own;
        they stay in the session, so scanning for it reaches them. Processes that started a
        session of their own (daemons) are deliberately out of reach.
        """
        if not self.running:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        for pid in session_members(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def session_members(sid: int) -> list[int]:
    """The pids of live processes in session ``sid`` (from ``/proc``; empty without it)."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        # Fields after the command name (which may contain spaces and parentheses):
        # state ppid pgrp session ...
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) > 3 and fields[3] == str(sid).encode():
            members.append(int(entry))
    return members
