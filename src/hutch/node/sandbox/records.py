"""The files a sandbox leaves in its directory that the manager reads back.

``sandbox.json`` is the record kill and reconcile find a sandbox by (its host id, its
owner's id, its resources); ``envd.log`` is the container's output (envd's log).
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
