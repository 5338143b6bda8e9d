"""One local template build per host (``node/templates/local_build.py``): a second build's
lock waits for the first's, whose build node (bridge ``hib0``, nft table ``hib``) it would
otherwise tear down as a crashed leftover."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
from pathlib import Path

from hutch.node.templates.local_build import one_build_at_a_time

WAIT_S = 60.0  # a deadline for waiting on a condition, never an assertion on time


async def test_a_second_build_waits_for_the_first_and_says_so(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "build.lock"
    said: list[str] = []
    order: list[str] = []
    first_in, release = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with one_build_at_a_time(lock, lambda level, message, step: None):
            order.append("first in")
            first_in.set()
            await release.wait()
            order.append("first out")

    async def second() -> None:
        await first_in.wait()
        async with one_build_at_a_time(lock, lambda level, message, step: said.append(message)):
            order.append("second in")

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    async with asyncio.timeout(WAIT_S):
        while not said:  # the second is waiting on the lock
            await asyncio.sleep(0.01)
    assert order == ["first in"]
    assert "waiting for another local template build" in said[0] and str(lock) in said[0]
    release.set()
    async with asyncio.timeout(WAIT_S):
        await asyncio.gather(*tasks)
    assert order == ["first in", "first out", "second in"]


async def test_the_lock_is_free_after_the_block_and_after_a_failure(tmp_path: Path) -> None:
    lock = tmp_path / "build.lock"
    try:
        async with one_build_at_a_time(lock, lambda *_: None):
            raise RuntimeError("a failed build")
    except RuntimeError:
        pass
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: would raise if still held
    finally:
        os.close(fd)


async def test_a_build_holds_it_against_another_process(tmp_path: Path) -> None:
    """The lock is flock(2): another process (another install.sh) sees it held."""
    lock = tmp_path / "build.lock"
    probe = [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR);"
             " fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", str(lock)]  # fmt: skip
    async with one_build_at_a_time(lock, lambda *_: None):
        held = subprocess.run(probe, capture_output=True, text=True, check=False)
    assert held.returncode != 0 and "BlockingIOError" in held.stderr
    assert subprocess.run(probe, check=False).returncode == 0
