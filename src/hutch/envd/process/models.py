"""The process domain's vocabulary: what to run, what it prints, how it ended.

These types know nothing of protobuf or HTTP; ``rpc/process.py`` converts them.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True, kw_only=True)
class PtySize:
    """A terminal's size in character cells."""

    cols: int
    rows: int


@dataclass(frozen=True, kw_only=True)
class ProcessSpec:
    """What a client asked to run (E2B's ``ProcessConfig`` plus the ``StartRequest`` options)."""

    cmd: str
    args: tuple[str, ...] = ()
    envs: dict[str, str] = field(default_factory=dict)
    #: The cwd as the client gave it (None: the default workdir, else the home).
    cwd: str | None = None
    tag: str | None = None
    #: A terminal of this size instead of pipes, or None.
    pty: PtySize | None = None
    #: Whether stdin is a pipe the client writes to (else /dev/null). Ignored for PTYs.
    stdin: bool = True


class OutputStream(StrEnum):
    """Which of the process's outputs a chunk came from."""

    STDOUT = "stdout"
    STDERR = "stderr"
    PTY = "pty"


@dataclass(frozen=True, slots=True)
class Output:
    """One chunk of output, as read from the process."""

    stream: OutputStream
    data: bytes


@dataclass(frozen=True, kw_only=True)
class ProcessEnd:
    """How a process ended, in the shape of Go's ``os.ProcessState`` (what E2B's envd reports)."""

    exit_code: int
    exited: bool
    status: str
    error: str | None = None

    @classmethod
    def from_wait_status(cls, wait_status: int) -> ProcessEnd:
        """The end described by a ``waitpid`` status word.

        ``status`` is Go's ``ProcessState.String()`` ("exit status 1", "signal: killed"); a
        signalled process has exit code -1 and ``exited`` False, as in Go. ``error`` is set
        whenever the process did not exit with 0 (Go's ``*ExitError`` text, the same string).
        """
        if os.WIFEXITED(wait_status):
            code = os.WEXITSTATUS(wait_status)
            status = f"exit status {code}"
            return cls(exit_code=code, exited=True, status=status, error=status if code else None)
        if os.WIFSIGNALED(wait_status):
            sig = os.WTERMSIG(wait_status)
            status = f"signal: {signal_name(sig)}"
            if os.WCOREDUMP(wait_status):
                status += " (core dumped)"
            return cls(exit_code=-1, exited=False, status=status, error=status)
        return cls(exit_code=-1, exited=False, status=f"wait status {wait_status}", error=None)


def signal_name(sig: int) -> str:
    """A signal's description the way Go prints it ("killed", "terminated", "hangup")."""
    try:
        text = signal.strsignal(sig)
    except ValueError:
        text = None
    return text.lower() if text else f"signal {sig}"
