"""The SDK's uploaded build archives of a cluster api (``build_files``, migration 0020).

A cluster api whose nodes register does not know at upload time which node will run the
build (it is placed when it starts), so the archives are kept here, chunked, and pushed to
the building node before its build runs (``api/nodes/builds.py``). An archive counts as
present only once all its chunks are in (the ``build_files`` row is written last, in the
same transaction), so a half-written upload is never pushed.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from typing import Final

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.store.base import Clock, utc_now
from hutch.api.store.engine import read_transaction, write_transaction
from hutch.api.store.tables import build_file_chunks, build_files
from hutch.shared.errors import InvalidArgumentError

#: Bytes per stored chunk (one row; read back one at a time).
CHUNK_BYTES: Final = 4 * 1024 * 1024
#: The largest archive kept (the SDK tars a step's files; larger ones answer 400).
MAX_ARCHIVE_BYTES: Final = 1024 * 1024 * 1024


class SqlBuildFileStore:
    """See the module docstring."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def has(self, files_hash: str) -> bool:
        """Whether the archive of ``files_hash`` is kept (complete)."""
        async with read_transaction(self._engine) as conn:
            row = await conn.execute(
                select(build_files.c.files_hash).where(build_files.c.files_hash == files_hash)
            )
            return row.first() is not None

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
                await conn.execute(
                    build_files.insert().values(
                        files_hash=files_hash, size=size, chunks=seq, created_at=self._clock()
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
