"""writer.WriteBehind: one write in its thread while the next bytes arrive (ADR 36)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from hutch.envd.filesystem.writer import WriteBehind


async def test_write_behind_returns_before_the_write_and_counts_it_on_the_next() -> None:
    gate = threading.Event()
    behind = WriteBehind()
    assert await behind.submit(lambda: gate.wait(60) and 5) == 0  # not blocked by the write
    assert behind.busy
    gate.set()
    assert await behind.submit(lambda: 7) == 5
    assert await behind.wait() == 7
    assert not behind.busy
    assert await behind.wait() == 0


async def test_write_behind_raises_the_previous_writes_error() -> None:
    def fail() -> int:
        raise OSError(28, "No space left on device")

    behind = WriteBehind()
    await behind.submit(fail)
    with pytest.raises(OSError, match="No space"):
        await behind.submit(lambda: 1)
    assert await behind.wait() == 0  # the failed write is settled, the next never started


async def test_write_behind_cleanup_waits_for_the_write_in_flight() -> None:
    gate = threading.Event()
    cleaned = asyncio.Event()
    done: list[int] = []
    behind = WriteBehind(on_done=lambda: done.append(1))
    await behind.submit(lambda: gate.wait(60) and 3)
    behind.after(cleaned.set)
    await asyncio.sleep(0.05)
    assert not cleaned.is_set()  # the descriptor is still the thread's
    gate.set()
    await asyncio.wait_for(cleaned.wait(), 60)
    assert done == [1]


async def test_write_behind_cancelled_wait_leaves_the_write_running() -> None:
    gate = threading.Event()
    behind = WriteBehind()
    await behind.submit(lambda: gate.wait(60) and 2)
    waiter = asyncio.create_task(behind.wait())
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert behind.busy  # shielded: the thread still owns the write
    gate.set()
    assert await behind.wait() == 2
