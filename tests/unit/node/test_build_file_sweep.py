"""The node's sweep of the SDK's build archives (``template-files/``, ADR 0037) on a real
directory: unused for the retention and named by no running build → deleted; a "present"
answer (``has_files``) or an upload counts as a use; a build running here keeps what its
steps name however old; an upload's leftover temporary file goes, a live one stays."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from hutch.node.templates.manager import TemplateManager

DAY = 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000_000.0

    def __call__(self) -> float:
        return self.now


def _manager(tmp_path: Path, clock: Clock, **kwargs: Any) -> TemplateManager:
    return TemplateManager(
        templates_dir=tmp_path / "templates", envd_bundle=tmp_path / "envd",
        files_dir=tmp_path / "files", files_retention_s=DAY, clock=clock, **kwargs,
    )  # fmt: skip


async def _store(manager: TemplateManager, files_hash: str, clock: Clock) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b"archive"

    await manager.store_files(files_hash, chunks())
    os.utime(manager._files_dir / files_hash, (clock.now, clock.now))


def test_unused_archives_go_used_ones_stay(tmp_path: Path) -> None:
    clock = Clock()
    manager = _manager(tmp_path, clock)
    old, asked, fresh = "a" * 64, "b" * 64, "c" * 64
    for h in (old, asked):
        asyncio.run(_store(manager, h, clock))
    leftover = tmp_path / "files" / f".tmp-{old}-dead"
    leftover.write_bytes(b"half")
    os.utime(leftover, (clock.now, clock.now))
    clock.now += 2 * DAY
    assert manager.has_files(asked)  # the SDK's "exists?" two days later: a use
    live = tmp_path / "files" / f".tmp-{fresh}-writing"
    live.write_bytes(b"")
    os.utime(live, (clock.now, clock.now))
    # An archive arriving sweeps (the first time, then once per tenth of the retention).
    asyncio.run(_store(manager, fresh, clock))
    assert not manager.has_files(old) and not leftover.exists()
    assert manager.has_files(asked) and manager.has_files(fresh) and live.exists()
    assert manager.sweep_files() == []
    clock.now += 2 * DAY
    assert manager.has_files(fresh)
    assert manager.sweep_files() == [asked]


def test_a_build_running_here_keeps_the_archives_it_names(tmp_path: Path) -> None:
    clock = Clock()
    manager = _manager(tmp_path, clock, sandboxes=object())  # type: ignore[arg-type]
    named, other = "d" * 64, "e" * 64
    for h in (named, other):
        asyncio.run(_store(manager, h, clock))
    clock.now += 2 * DAY
    swept: list[list[str]] = []

    async def build(*args: Any, **kwargs: Any) -> None:
        swept.append(manager.sweep_files())  # a sweep while the build runs

    manager._run_build = build  # type: ignore[method-assign]
    start = {"steps": [{"type": "COPY", "args": ["x", "/x"], "filesHash": named}]}
    asyncio.run(manager.run_build("t", start, cpu_count=1, memory_mb=256,
                                  log=lambda *a: None, build_id="b1"))  # fmt: skip
    # The build's start swept (``other`` went, ``named`` stayed); a sweep while it ran
    # found nothing more to take.
    assert swept == [[]]
    assert not manager.has_files(other) and manager.has_files(named)
    # Once it ended, the archive ages like any other.
    clock.now += 2 * DAY
    assert manager.sweep_files() == [named]
