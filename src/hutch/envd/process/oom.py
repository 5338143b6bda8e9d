"""Telling an OOM kill from any other SIGKILL: the sandbox's memory cgroup counts them.

Inside a sandbox, envd sees its own cgroup as the root of ``/sys/fs/cgroup`` (a cgroup
namespace). The kernel counts every process its OOM killer ended there: ``oom_kill N`` in
``memory.events`` (cgroup v2) or in ``memory/memory.oom_control`` (v1, kernel 4.13+). A
process that ended by SIGKILL while that count went up was, all but certainly, killed
because the sandbox reached its memory limit; envd says so in the process's end (its
``error``, which the SDK's ``CommandExitException`` carries) and in its log (the sandbox's
logs). Outside a limited cgroup (envd run on a host) nothing is counted and nothing said.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_V2: Final = Path("/sys/fs/cgroup")
_V1: Final = Path("/sys/fs/cgroup/memory")


@dataclass(frozen=True, slots=True)
class MemoryCgroup:
    """Where envd reads its sandbox's OOM kill count and memory limit."""

    events: Path
    limit: Path

    @classmethod
    def find(cls, root: Path = _V2) -> MemoryCgroup | None:
        """The v2 or v1 files below ``root``; None when there are none (not in a cgroup)."""
        if (root / "memory.events").is_file():
            return cls(events=root / "memory.events", limit=root / "memory.max")
        v1 = root / "memory" if root == _V2 else root
        if (v1 / "memory.oom_control").is_file():
            return cls(events=v1 / "memory.oom_control", limit=v1 / "memory.limit_in_bytes")
        return None

    def oom_kills(self) -> int | None:
        """How many processes the OOM killer ended in the sandbox so far; None: unknown."""
        try:
            text = self.events.read_text()
        except OSError:
            return None
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return None

    def limit_mib(self) -> int | None:
        """The sandbox's memory limit in MiB; None when unlimited or unreadable."""
        try:
            text = self.limit.read_text().strip()
        except OSError:
            return None
        if not text.isdigit() or int(text) >= 1 << 60:  # "max", or v1's "no limit"
            return None
        return int(text) >> 20


def oom_message(wait_status: int, *, before: int | None, after: int | None,
                limit_mib: int | None) -> str | None:  # fmt: skip
    """Why a process ended, when it was an OOM kill: a SIGKILL while the count went up."""
    if before is None or after is None or after <= before:
        return None
    if not (os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) == signal.SIGKILL):
        return None
    limit = f" of {limit_mib} MiB" if limit_mib is not None else ""
    return f"out of memory: killed by the OOM killer, the sandbox reached its memory limit{limit}"
