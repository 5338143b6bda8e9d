"""``open_file``: a pseudo file's length is what it holds, not what ``stat`` says."""

from __future__ import annotations

import os
from pathlib import Path

from hutch.envd.filesystem.reader import open_file
from hutch.envd.users import get_user


def _read(opened) -> bytes:  # type: ignore[no-untyped-def]
    try:
        return opened.read(0, opened.size + 1)
    finally:
        opened.close()


def test_open_file_reads_proc_files_whose_stat_size_is_zero() -> None:
    assert os.stat("/proc/self/status").st_size == 0
    opened = open_file("/proc/self/status", user=get_user("root"))
    data = _read(opened)
    assert opened.size == len(data) > 0 and data.startswith(b"Name:")


def test_open_file_keeps_a_regular_file_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 5000)
    opened = open_file(str(path), user=get_user("root"))
    assert opened.size == 5000 and _read(opened) == b"x" * 5000
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    opened = open_file(str(empty), user=get_user("root"))
    assert opened.size == 0 and _read(opened) == b""
