"""Telling an OOM kill from another SIGKILL (``envd/process/oom.py``), on cgroup files."""

from __future__ import annotations

import signal
from pathlib import Path

from hutch.envd.process.oom import MemoryCgroup, oom_message

KILLED = signal.SIGKILL  # a wait status of "killed by SIGKILL" is the signal number itself
EXITED_1 = 1 << 8


def test_memory_cgroup_reads_v2_counts_and_limit(tmp_path: Path) -> None:
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
    (tmp_path / "memory.max").write_text("268435456\n")
    cg = MemoryCgroup.find(tmp_path)
    assert cg is not None
    assert (cg.oom_kills(), cg.limit_mib()) == (2, 256)
    (tmp_path / "memory.max").write_text("max\n")
    assert cg.limit_mib() is None


def test_memory_cgroup_reads_v1_oom_control(tmp_path: Path) -> None:
    v1 = tmp_path / "memory"
    v1.mkdir()
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n")
    (v1 / "memory.limit_in_bytes").write_text("134217728\n")
    cg = MemoryCgroup.find(v1)
    assert cg is not None
    assert (cg.oom_kills(), cg.limit_mib()) == (5, 128)
    (v1 / "memory.limit_in_bytes").write_text(f"{(1 << 63) - 4096}\n")  # v1's "no limit"
    assert cg.limit_mib() is None


def test_memory_cgroup_absent_or_unreadable(tmp_path: Path) -> None:
    assert MemoryCgroup.find(tmp_path) is None
    gone = MemoryCgroup(events=tmp_path / "nope", limit=tmp_path / "nope")
    assert gone.oom_kills() is None and gone.limit_mib() is None


def test_oom_message_only_for_a_sigkill_while_the_count_rose() -> None:
    said = oom_message(KILLED, before=1, after=2, limit_mib=128)
    assert said == (
        "out of memory: killed by the OOM killer, the sandbox reached its memory limit of 128 MiB"
    )
    assert oom_message(KILLED, before=2, after=2, limit_mib=128) is None  # killed by someone
    assert oom_message(EXITED_1, before=1, after=2, limit_mib=128) is None
    assert oom_message(signal.SIGTERM, before=1, after=2, limit_mib=None) is None
    assert oom_message(KILLED, before=None, after=2, limit_mib=None) is None
    assert oom_message(KILLED, before=0, after=1, limit_mib=None).endswith("memory limit")
