"""``ImportWorker``: claims queued (or abandoned) template imports and runs them (ADR 0030).

One worker per api that can import. It claims with the store's ``SKIP LOCKED`` claim (so
workers of several apis never take the same import), runs up to ``max_running`` at once,
and wakes at once on its own api's submit (:meth:`wake`), on PostgreSQL ``NOTIFY`` from
another api (``listen``), and every ``poll_s`` otherwise (the fallback, and what finds
imports whose lease ended). While an import runs its lease is renewed with each progress
write (``TemplateImportService.execute``); an api that stops gives its running imports
back to the queue, so another worker claims them at once rather than after the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from contextlib import AbstractAsyncContextManager
from typing import Any

from hutch.api.service.job_wakeups import Listen, listening
from hutch.api.service.template_imports import TemplateImportService

_log = logging.getLogger(__name__)


class ImportWorker:
    """See the module docstring."""

    def __init__(
        self,
        service: TemplateImportService,
        *,
        listen: Listen | None = None,
        poll_s: float = 1.0,
        max_running: int = 2,
        take_over_at_start: bool = False,
    ) -> None:
        self._service = service
        self._listen = listen
        self._poll_s = poll_s
        self._max_running = max_running
        self._take_over_at_start = take_over_at_start
        self._wake = asyncio.Event()
        self._running: dict[asyncio.Task[None], str] = {}
        #: This process's worker id (a new one per start: a restart's old claims are others').
        self.worker_id = f"api-{uuid.uuid4().hex[:12]}"

    def wake(self) -> None:
        """Claim now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Claim and run imports until cancelled (running ones are given back)."""
        try:
            take_over = self._take_over_at_start
            async with self._listening():
                while True:
                    try:
                        await self.claim_and_start(take_over_all=take_over)
                        take_over = False
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        _log.exception("import worker: a pass failed")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_s)
                    self._wake.clear()
        finally:
            running = dict(self._running)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            for import_id in running.values():
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._service.jobs.release(import_id, self.worker_id))

    def _listening(self) -> AbstractAsyncContextManager[None]:
        return listening(self._listen, self.wake, worker="import worker", poll_s=self._poll_s)

    async def claim_and_start(self, *, take_over_all: bool = False) -> int:
        """Claim imports while there is room; return how many were started."""
        started = 0
        policy = self._service.policy
        while len(self._running) < self._max_running:
            record, failed = await self._service.jobs.claim(
                self.worker_id, lease_s=policy.lease_s, max_attempts=policy.max_attempts,
                take_over_all=take_over_all,
            )  # fmt: skip
            for gone in failed:
                _log.warning("import %s failed: %s", gone.import_id, gone.error_message)
            if record is None:
                break
            if record.attempts > 1:
                _log.warning("import %s: taken over (claim %d; its last worker stopped)",
                             record.import_id, record.attempts)  # fmt: skip
            task = asyncio.create_task(self._execute(record), name=f"import-{record.import_id}")
            self._running[task] = record.import_id
            task.add_done_callback(self._done)
            started += 1
        return started

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self.wake()  # room for the next one

    async def _execute(self, record: Any) -> None:
        try:
            await self._service.execute(record, worker=self.worker_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("import %s: the worker failed", record.import_id)
