"""Contexts: one kernel each, an id, a language and a working directory.

``Contexts`` creates, finds, restarts and removes them, and keeps one default context
per language (those in ``Settings.preload`` started with the server, others at their
first use).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from dataclasses import dataclass, field

from hutch.interpreter.errors import BadRequest, ContextNotFound
from hutch.interpreter.kernel import Kernel
from hutch.interpreter.languages import Languages
from hutch.interpreter.settings import Settings, kernel_env

log = logging.getLogger(__name__)


@dataclass
class Context:
    id: str
    language: str
    cwd: str
    kernel: Kernel
    #: One execution at a time; held past the response when an interrupted cell settles.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The kernel generation that has the sandbox's env vars.
    env_generation: int = 0
    #: A restart under way after the kernel died; the next execution waits for it.
    restarting: asyncio.Task[None] | None = None

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    async def ready(self) -> None:
        """Wait for a pending restart; restart a kernel found dead."""
        while self.restarting is not None and not self.restarting.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self.restarting)
        if not self.kernel.is_alive() or not self.kernel.connected:
            self.restarting = asyncio.create_task(self.kernel.restart())
            await asyncio.shield(self.restarting)

    def restart_soon(self) -> None:
        if self.restarting is None or self.restarting.done():
            self.restarting = asyncio.create_task(self.kernel.restart())


class Contexts:
    def __init__(self, settings: Settings, languages: Languages) -> None:
        self.settings = settings
        self.languages = languages
        self._contexts: dict[str, Context] = {}
        self._defaults: dict[str, str] = {}
        self._default_locks: dict[str, asyncio.Lock] = {}

    async def start(self) -> None:
        for language in self.settings.preload:
            if language in self.languages.commands:
                await self.default(language)
            else:
                log.warning("not preloading %s: no kernel installed", language)

    async def create(self, language: str, cwd: str | None = None) -> Context:
        command = self.languages.command(language)
        cwd = cwd or self.settings.cwd
        if not os.path.isdir(cwd):
            raise BadRequest(f"cwd {cwd!r} is not a directory in the sandbox")
        kernel = Kernel(
            command, cwd, kernel_env(self.settings.python), self.settings.max_buffered_output
        )
        await kernel.start()
        context = Context(id=str(uuid.uuid4()), language=language, cwd=cwd, kernel=kernel)
        self._contexts[context.id] = context
        log.info("context %s (%s) in %s", context.id, language, cwd)
        return context

    async def default(self, language: str) -> Context:
        lock = self._default_locks.setdefault(language, asyncio.Lock())
        async with lock:
            cid = self._defaults.get(language)
            if cid is not None and cid in self._contexts:
                return self._contexts[cid]
            context = await self.create(language)
            self._defaults[language] = context.id
            return context

    def get(self, context_id: str) -> Context:
        context = self._contexts.get(context_id)
        if context is None:
            raise ContextNotFound(f"Context {context_id} not found")
        return context

    def list(self) -> list[Context]:
        return list(self._contexts.values())

    async def restart(self, context_id: str) -> None:
        """A fresh kernel now, even under a running cell (which ends with an error)."""
        context = self.get(context_id)
        pending = context.restarting
        if pending is not None and not pending.done():
            with contextlib.suppress(Exception):
                await pending
        context.restarting = asyncio.create_task(context.kernel.restart())
        await asyncio.shield(context.restarting)

    async def remove(self, context_id: str) -> None:
        context = self.get(context_id)
        del self._contexts[context_id]
        for language, cid in list(self._defaults.items()):
            if cid == context_id:
                del self._defaults[language]
        await context.kernel.shutdown()

    async def close(self) -> None:
        contexts, self._contexts = list(self._contexts.values()), {}
        await asyncio.gather(*(c.kernel.shutdown() for c in contexts), return_exceptions=True)
