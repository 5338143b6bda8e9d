"""The files a sandbox leaves in its directory that the manager reads back.

``sandbox.json`` is the record kill and reconcile find a sandbox by (its host id, its
owner's id, its resources); ``envd.log`` is the container's output (envd's log), kept
under a size by :func:`bound_log`.
"""

from __future__ import annotations

import os
from pathlib import Path

from hutch.node.runtime.procmount import BOOT_ID_FILE
from hutch.node.sandbox.models import RunningSandbox

RECORD = "sandbox.json"
ENVD_LOG = "envd.log"
BOOT_ID = BOOT_ID_FILE


def write_record(sandbox: RunningSandbox) -> None:
    """``sandbox.json``, replaced atomically (a crash leaves the old or the new one)."""
    path = sandbox.sandbox_dir / RECORD
    tmp = path.with_name(f".{RECORD}.tmp")
    tmp.write_text(sandbox.dumps())
    os.replace(tmp, path)


def tail(path: Path, limit: int = 2000) -> str:
    """The last ``limit`` characters of a log file, for an error message."""
    try:
        return path.read_text(errors="replace")[-limit:] or "(no output)"
    except OSError:
        return "(no output)"


def bound_log(path: Path, *, max_bytes: int) -> int:
    """Keep the log at ``path`` under ``max_bytes``: once past it, its last half (from a
    line's start) replaces it, behind a line saying how many bytes went; the bytes dropped.

    The writer (the container's stdout and stderr) has the file open with ``O_APPEND``, so
    its next line lands at the new end. The trim is done in place (no moment with an empty
    file); a line written between its read and its truncate, microseconds, is lost.
    """
    try:
        size = path.stat().st_size
    except OSError:
        return 0
    if size <= max_bytes:
        return 0
    keep = max_bytes // 2
    with path.open("r+b") as f:
        f.seek(max(0, size - keep))
        data = f.read()  # to the end: what was written since the stat as well
        data = data.partition(b"\n")[2]  # the first line is cut: drop it
        dropped = f.tell() - len(data)
        note = f"[hutch: {dropped} bytes of older log dropped (HUTCH_NODE_ENVD_LOG_MAX_BYTES)]\n"
        f.seek(0)
        f.write(note.encode() + data)
        f.truncate()
    return dropped
