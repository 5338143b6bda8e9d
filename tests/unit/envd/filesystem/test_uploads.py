"""UploadManager: a session's part writes go to its one writer thread (ADR 36 addendum 3)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from hutch.envd.filesystem import uploads as uploads_module
from hutch.envd.filesystem.uploads import UploadManager
from hutch.envd.filesystem.writer import FLUSH_BYTES
from hutch.envd.settings import EnvdSettings
from hutch.envd.users import get_user
from hutch.shared.errors import ConflictError

PART = 3 * FLUSH_BYTES  # three flushes per part


class _Writes:
    """Wraps ``write_buffers``: counts writes running at once and the threads they ran in."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.threads: set[int] = set()
        self.real = uploads_module.write_buffers

    def __call__(self, fd: int, buffers: Sequence[bytes], *, offset: int | None, what: str) -> int:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.get_ident())
        try:
            time.sleep(0.01)  # long enough for writes of other parts to overlap if they can
            return self.real(fd, buffers, offset=offset, what=what)
        finally:
            with self._lock:
                self.running -= 1


async def _body(data: bytes, piece: int = 256 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        await asyncio.sleep(0)  # parts interleave as they would from sockets
        yield data[i : i + piece]


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("upload-writer")]


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> _Writes:
    w = _Writes()
    monkeypatch.setattr(uploads_module, "write_buffers", w)
    return w


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[UploadManager]:
    m = UploadManager(settings=EnvdSettings(state_dir=tmp_path / "state"))
    await m.start()
    yield m
    await m.close()


async def test_parallel_parts_are_written_one_at_a_time_by_one_thread(
    manager: UploadManager, writes: _Writes, tmp_path: Path
) -> None:
    data = os.urandom(4 * PART - 12345)
    target = tmp_path / "out.bin"
    session = await manager.create(
        path=str(target), user=get_user("root"), total_size=len(data), part_size=PART, metadata={}
    )
    parts = range(session.num_parts)
    sizes = await asyncio.gather(
        *(
            manager.write_part(
                session.upload_id,
                part=p,
                body=_body(data[p * PART : (p + 1) * PART]),
                length=None,
            )
            for p in reversed(parts)
        )
    )
    assert sum(sizes) == len(data)
    assert writes.most == 1  # the kernel serialises them anyway; nobody spins on the lock
    assert len(writes.threads) == 1
    await manager.complete(session.upload_id)
    assert target.read_bytes() == data
    for _ in range(200):  # shut down without waiting: the idle thread exits on its own
        if not _writer_threads():
            break
        await asyncio.sleep(0.01)
    assert _writer_threads() == []


async def test_abort_ends_the_writer_and_a_later_part_conflicts(
    manager: UploadManager, writes: _Writes, tmp_path: Path
) -> None:
    data = os.urandom(2 * PART)
    target = tmp_path / "gone.bin"
    session = await manager.create(
        path=str(target), user=get_user("root"), total_size=len(data), part_size=PART, metadata={}
    )
    await manager.write_part(session.upload_id, part=0, body=_body(data[:PART]), length=PART)
    await manager.abort(session.upload_id)
    with pytest.raises(ConflictError):
        await manager.write_part(session.upload_id, part=1, body=_body(data[PART:]), length=PART)
    for _ in range(200):
        if not _writer_threads():
            break
        await asyncio.sleep(0.01)
    assert _writer_threads() == []
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "state"] == []
