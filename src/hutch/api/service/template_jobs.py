"""``BuildWorker``: claims started template builds from the store and runs them (ADR 0024).

One worker per api that can build. It claims with the store's ``SKIP LOCKED`` claim (so
workers of several apis never take the same build), runs up to ``max_running`` builds at
once, heartbeats each claim every ``heartbeat_s``, and wakes:

* at once when this api started the build (:meth:`wake`, called by the service);
* at once on PostgreSQL ``NOTIFY`` from another api (``listen``: the store's listener);
* every ``poll_s`` otherwise: the fallback when NOTIFY is missed or there is none (SQLite).

Orphans: a claimed build whose heartbeat is older than ``orphan_after_s`` belonged to an
api that died or restarted; any worker fails it with that reason (its node-side run may
be half-done and its steps are not known to be safe to run twice, so it is never re-run).
On SQLite (one api) every claim found at startup is such an orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

from hutch.api.service.job_wakeups import Listen, listening
from hutch.api.service.template_builds import TemplateBuildService
from hutch.api.store.base import Clock, utc_now

_log = logging.getLogger(__name__)


class BuildWorker:
    """See the module docstring."""

    def __init__(
        self,
        service: TemplateBuildService,
        *,
        listen: Listen | None = None,
        poll_s: float = 1.0,
        heartbeat_s: float = 2.0,
        orphan_after_s: float = 30.0,
        max_running: int = 4,
        orphans_at_start: bool = False,
        clock: Clock = utc_now,
    ) -> None:
        self._service = service
        self._listen = listen
        self._poll_s = poll_s
        self._heartbeat_s = heartbeat_s
        self._orphan_after = timedelta(seconds=orphan_after_s)
        self._sweep_every_s = min(orphan_after_s / 3, 10.0)
        self._max_running = max_running
        self._orphans_at_start = orphans_at_start
        self._clock = clock
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        #: This process's worker id (a new one per start: a restart's old claims are orphans).
        self.worker_id = f"api-{uuid.uuid4().hex[:12]}"

    def wake(self) -> None:
        """Claim now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Claim and run builds until cancelled (running builds are cancelled with it)."""
        try:
            if self._orphans_at_start:
                await self.fail_orphans(everything_claimed=True)
            next_sweep = 0.0
            async with self._listening():
                while True:
                    try:
                        await self.claim_and_start()
                        if time.monotonic() >= next_sweep:  # not on every wake-up
                            next_sweep = time.monotonic() + self._sweep_every_s
                            await self.fail_orphans()
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        _log.exception("build worker: a pass failed")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_s)
                    self._wake.clear()
        finally:
            for task in list(self._running):
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)

    def _listening(self) -> AbstractAsyncContextManager[None]:
        return listening(self._listen, self.wake, worker="build worker", poll_s=self._poll_s)

    async def claim_and_start(self) -> int:
        """Claim started builds while there is room; return how many were started."""
        started = 0
        while len(self._running) < self._max_running:
            record = await self._service.jobs.claim(self.worker_id)
            if record is None:
                break
            task = asyncio.create_task(self._execute(record), name=f"build-{record.build_id}")
            self._running.add(task)
            task.add_done_callback(self._done)
            started += 1
        return started

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self.wake()  # room for the next one

    async def _execute(self, record: Any) -> None:
        me = asyncio.current_task()
        assert me is not None
        lost: list[bool] = []
        beat = asyncio.create_task(self._heartbeat(record.build_id, me, lost))
        try:
            await self._service.execute(record, worker=self.worker_id)
        except asyncio.CancelledError:
            if lost and me.uncancel() == 0:  # ended elsewhere (cancelled): stop this run
                _log.info("build %s: ended elsewhere (cancelled); run stopped", record.build_id)
                return
            # This api is stopping: say so now rather than after the orphan timeout.
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self._service.fail_orphan(
                        record,
                        f"the api running this build ({self.worker_id}) was stopped; "
                        "start the build again",
                    )
                )
            raise
        except Exception:
            _log.exception("build %s: the worker failed", record.build_id)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _heartbeat(self, build_id: str, run: asyncio.Task[Any], lost: list[bool]) -> None:
        """Renew the claim; when the store says the build is no longer ours and building
        (cancelled, or failed as orphaned), cancel its run."""
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                ours = await self._service.jobs.heartbeat(build_id, self.worker_id)
            except Exception:
                continue  # the store's hiccup: the next beat tries again
            if not ours:
                lost.append(True)
                run.cancel()
                return

    async def fail_orphans(self, *, everything_claimed: bool = False) -> int:
        """Fail builds whose worker stopped heartbeating; return how many."""
        now = self._clock()
        cutoff = now + timedelta(seconds=1) if everything_claimed else now - self._orphan_after
        failed = 0
        for record in await self._service.jobs.orphans(heartbeat_before=cutoff):
            if record.worker == self.worker_id:
                continue  # ours and running (a slow heartbeat, not a dead api)
            reason = (
                f"the api that was running this build stopped (worker {record.worker}, last "
                f"heartbeat {record.heartbeat_at:%Y-%m-%dT%H:%M:%SZ}); start the build again"
            )
            if await self._service.fail_orphan(record, reason):
                _log.warning("build %s: %s", record.build_id, reason)
                failed += 1
        return failed
