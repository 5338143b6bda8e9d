"""The retention sweep of the SDK's uploaded build archives (ADR 0037): a singleton.

The store keeps a cluster api's archives (``store/build_files.py``); the SDK never deletes
one and never uploads a hash it was told is present, so without this they are kept for
ever. The elected leader (ADR 0024) runs :meth:`BuildFileSweeper.run`, which asks the store
every ``interval_s`` to delete the archives unused for ``retention_s`` that no unfinished
build names. Two sweeps at once (a leader change) are safe: each delete re-checks the row.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

_log = logging.getLogger(__name__)


class SweptFiles(Protocol):
    """The store's side (``SqlBuildFileStore``)."""

    async def sweep(self, retention_s: float) -> list[str]: ...


class BuildFileSweeper:
    """See the module docstring."""

    def __init__(self, files: SweptFiles, *, retention_s: float, interval_s: float) -> None:
        self._files = files
        self._retention_s = retention_s
        self._interval_s = interval_s

    async def sweep_once(self) -> list[str]:
        """One sweep; the hashes deleted (a failure is logged: the next sweep retries)."""
        try:
            gone = await self._files.sweep(self._retention_s)
        except Exception:
            _log.warning("the build archive sweep failed", exc_info=True)
            return []
        if gone:
            _log.info("deleted %d build archives unused for %.0f s: %s",
                      len(gone), self._retention_s, gone)  # fmt: skip
        return gone

    async def run(self) -> None:
        """Sweep, then every ``interval_s``, until cancelled."""
        while True:
            await self.sweep_once()
            await asyncio.sleep(self._interval_s)
