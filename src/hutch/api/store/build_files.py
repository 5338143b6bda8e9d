"""The SDK's uploaded build archives of a cluster api (``build_files``, migration 0020).

A cluster api whose nodes register does not know at upload time which node will run the
build (it is placed when it starts), so the archives are kept here, chunked, and pushed to
the building node before its build runs (``api/nodes/builds.py``). An archive counts as
present only once all its chunks are in (the ``build_files`` row is written last, in the
same transaction), so a half-written upload is never pushed.

**Retention** (ADR 0037): the SDK asks whether a hash is present before each build and
uploads only what is not, so an archive is never replaced and nothing deleted it. Each
"present" answer (:meth:`has`) stamps the row's ``used_at``, as do an upload and a push to
a building node; the elected leader's :meth:`sweep` deletes the archives whose ``used_at``
is older than the retention and that no unfinished build (``waiting``/``building``) names
in its start request. The race of an SDK told "present" and a sweep is decided row by
row: the stamp is an ``UPDATE`` of the row and the sweep's ``DELETE`` re-checks
``used_at`` in its own ``WHERE``, so either the stamp comes first (the row is kept for a
whole retention more, longer than any SDK takes from its check to its build's start) or the
delete does (the stamp finds no row, the answer is "absent" and the SDK uploads again).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Final

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.store.base import Clock, utc_now
from hutch.api.store.engine import read_transaction, write_transaction
from hutch.api.store.nodes import store_now
from hutch.api.store.tables import build_file_chunks, build_files, template_builds
from hutch.shared.errors import InvalidArgumentError

#: Bytes per stored chunk (one row; read back one at a time).
CHUNK_BYTES: Final = 4 * 1024 * 1024
#: The largest archive kept (the SDK tars a step's files; larger ones answer 400).
MAX_ARCHIVE_BYTES: Final = 1024 * 1024 * 1024


#: The build states whose start request still needs its archives.
UNFINISHED: Final = ("waiting", "building")


def files_named(start: str | None) -> list[str]:
    """The ``filesHash`` of every step of a build's start request (JSON); [] if unreadable."""
    try:
        body = json.loads(start or "null")
    except ValueError:
        return []
    steps = body.get("steps") if isinstance(body, dict) else None
    return [
        s["filesHash"]
        for s in (steps if isinstance(steps, list) else [])
        if isinstance(s, dict) and isinstance(s.get("filesHash"), str) and s["filesHash"]
    ]


class SqlBuildFileStore:
    """See the module docstring."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def has(self, files_hash: str) -> bool:
        """Whether the archive of ``files_hash`` is kept (complete); when it is, its
        ``used_at`` is now (the sweep keeps it a whole retention more)."""
        async with write_transaction(self._engine) as conn:
            now = await store_now(conn, self._clock)
            done = await conn.execute(
                update(build_files)
                .where(build_files.c.files_hash == files_hash)
                .values(used_at=now)
            )
            return bool(done.rowcount)

    async def sweep(self, retention_s: float) -> list[str]:
        """Delete the archives unused for ``retention_s`` that no unfinished build names;
        the hashes deleted."""
        async with write_transaction(self._engine) as conn:
            cutoff = await store_now(conn, self._clock) - timedelta(seconds=retention_s)
            rows = await conn.execute(
                select(build_files.c.files_hash).where(build_files.c.used_at < cutoff)
            )
            old = {r.files_hash for r in rows}
            if not old:
                return []
            starts = await conn.execute(
                select(template_builds.c.start).where(
                    template_builds.c.status.in_(UNFINISHED), template_builds.c.start.is_not(None)
                )
            )
            named = {h for r in starts for h in files_named(r.start)}
            gone: list[str] = []
            for files_hash in sorted(old - named):
                # ``used_at`` again: a "present" answer since the select keeps the row.
                done = await conn.execute(
                    delete(build_files).where(
                        build_files.c.files_hash == files_hash, build_files.c.used_at < cutoff
                    )
                )
                if done.rowcount:
                    await conn.execute(
                        delete(build_file_chunks).where(
                            build_file_chunks.c.files_hash == files_hash
                        )
                    )
                    gone.append(files_hash)
            return gone

    async def put(
        self, files_hash: str, chunks: AsyncIterator[bytes], *, max_bytes: int = MAX_ARCHIVE_BYTES
    ) -> int:
        """Keep the archive (idempotent: a second upload of a hash replaces nothing);
        its size. ``InvalidArgumentError`` past ``max_bytes`` (nothing kept)."""
        # Spooled to a temporary file (not memory) while the client sends it; written in
        # one transaction once whole, so a broken upload leaves nothing.
        with tempfile.TemporaryFile() as spool:
            size = 0
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise InvalidArgumentError(
                        f"the build archive is larger than {max_bytes} bytes, the limit"
                    )
                await asyncio.to_thread(spool.write, chunk)
            spool.seek(0)
            async with write_transaction(self._engine) as conn:
                present = await conn.execute(
                    select(build_files.c.files_hash)
                    .where(build_files.c.files_hash == files_hash)
                    .with_for_update()
                )
                if present.first() is not None:
                    now = await store_now(conn, self._clock)
                    await conn.execute(
                        update(build_files)
                        .where(build_files.c.files_hash == files_hash)
                        .values(used_at=now)
                    )
                    return size
                await conn.execute(
                    delete(build_file_chunks).where(build_file_chunks.c.files_hash == files_hash)
                )
                seq = 0
                while True:
                    data = await asyncio.to_thread(spool.read, CHUNK_BYTES)
                    if not data and seq:
                        break
                    await conn.execute(
                        build_file_chunks.insert().values(files_hash=files_hash, seq=seq, data=data)
                    )
                    seq += 1
                    if not data:
                        break
                now = await store_now(conn, self._clock)
                await conn.execute(
                    build_files.insert().values(
                        files_hash=files_hash, size=size, chunks=seq, created_at=now, used_at=now
                    )
                )
        return size

    async def read(self, files_hash: str) -> AsyncIterator[bytes]:
        """The archive's bytes, one stored chunk at a time (``KeyError`` when not kept)."""
        async with read_transaction(self._engine) as conn:
            row = (
                await conn.execute(
                    select(build_files.c.chunks).where(build_files.c.files_hash == files_hash)
                )
            ).first()
        if row is None:
            raise KeyError(files_hash)
        for seq in range(int(row.chunks)):
            async with read_transaction(self._engine) as conn:
                data = (
                    await conn.execute(
                        select(build_file_chunks.c.data).where(
                            build_file_chunks.c.files_hash == files_hash,
                            build_file_chunks.c.seq == seq,
                        )
                    )
                ).scalar_one()
            yield bytes(data)
