"""Run one cell in a context and yield the ``/execute`` stream's items.

Order: wait for the context (one cell at a time), give a fresh kernel the sandbox's env
vars, set the execution's env vars, run the cell, restore the env vars. Meanwhile it
sends a keepalive after ``keepalive_seconds`` of silence and watches the kernel process:
a kernel that dies ends the cell with a ``KernelDied`` error and is restarted for the
next one. When the client goes away (timeout, disconnect) the generator is cancelled:
the cell is interrupted, given ``interrupt_grace_seconds`` to stop (else the kernel is
restarted), and only then is the context free again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from hutch.interpreter import languages, wire
from hutch.interpreter.contexts import Context
from hutch.interpreter.envs import sandbox_envs
from hutch.interpreter.errors import InterpreterError
from hutch.interpreter.kernel import Inbox
from hutch.interpreter.settings import Settings
from hutch.interpreter.translate import ExecutionTranslator

log = logging.getLogger(__name__)

#: How often a waiting execution checks that its kernel process still lives.
POLL_SECONDS = 0.25
#: How long an interrupted cell gets before it is interrupted again.
INTERRUPT_RETRY_SECONDS = 0.5


def _died(context: Context) -> dict[str, Any]:
    code = context.kernel.exit_code()
    how = f"exited with code {code}" if code is not None and code >= 0 else "was killed"
    return wire.error(
        "KernelDied",
        f"The {context.language} kernel {how} while running this code; its state is lost "
        "and it is being restarted for the next execution.",
        "",
    )


async def _prepare(
    context: Context, env_vars: dict[str, str], token: str | None, settings: Settings
) -> dict[str, Any] | None:
    """Sandbox env vars (once per kernel), then this execution's; an error item if any."""
    kernel = context.kernel
    if context.env_generation != kernel.generation:
        envs = await sandbox_envs(settings.envd_url, token)
        if envs is not None:
            code = languages.apply_env(context.language, envs)
            if code:
                await kernel.run_silent(code)
            context.env_generation = kernel.generation
    code = languages.set_env(context.language, env_vars)
    if code:
        err = await kernel.run_silent(code)
        if err:
            return wire.error("EnvVarsError", str(err.get("evalue", err)), "")
    return None


async def _settle(
    context: Context,
    msg_id: str | None,
    inbox: Inbox | None,
    translator: ExecutionTranslator,
    env_vars: dict[str, str],
    settings: Settings,
) -> None:
    """After the client left: stop the cell, restore env vars, free the context."""
    kernel = context.kernel
    try:
        if inbox is not None and not translator.done:
            # An interrupt that lands between cells (the request just accepted, the code
            # not yet running) is swallowed by ipykernel: send it again until the cell
            # stops, and restart the kernel when the grace time is over.
            deadline = time.monotonic() + settings.interrupt_grace_seconds
            while not translator.done:
                if time.monotonic() >= deadline or not kernel.is_alive():
                    log.warning("context %s did not stop when interrupted: restarting", context.id)
                    context.restart_soon()
                    assert context.restarting is not None
                    await context.restarting
                    return
                await kernel.interrupt()
                try:
                    async with asyncio.timeout(INTERRUPT_RETRY_SECONDS):
                        while not translator.done:
                            msg = await inbox.get()
                            if msg is None:
                                return
                            translator.feed(msg)
                except TimeoutError:
                    continue
        if env_vars and kernel.is_alive():
            code = languages.restore_env(context.language, env_vars)
            if code:
                await kernel.run_silent(code)
    except Exception:
        log.exception("settling an interrupted execution in context %s", context.id)
    finally:
        if msg_id is not None:
            kernel.forget(msg_id)
        context.lock.release()


async def run(
    context: Context,
    code: str,
    env_vars: dict[str, str],
    token: str | None,
    settings: Settings,
) -> AsyncIterator[dict[str, Any]]:
    await context.lock.acquire()
    kernel = context.kernel
    translator = ExecutionTranslator()
    msg_id: str | None = None
    inbox: Inbox | None = None
    settled = False
    try:
        try:
            await context.ready()
        except InterpreterError as e:
            yield wire.error(type(e).__name__, str(e), "")
            return
        failed = await _prepare(context, env_vars, token, settings)
        if failed is not None:
            yield failed
            return
        msg_id, inbox = kernel.execute(code)
        last_sent = time.monotonic()
        while not translator.done:
            try:
                async with asyncio.timeout(POLL_SECONDS):
                    msg = await inbox.get()
            except TimeoutError:
                if not kernel.is_alive():
                    yield _died(context)
                    context.restart_soon()
                    return
                if time.monotonic() - last_sent >= settings.keepalive_seconds:
                    last_sent = time.monotonic()
                    yield wire.KEEPALIVE
                continue
            if msg is None:  # channels closed under us: a restart or removal
                yield wire.error(
                    "ContextRestarting",
                    "The context was restarted or removed while this code ran",
                    "",
                )
                return
            for item in translator.feed(msg):
                last_sent = time.monotonic()
                yield item
        if inbox.dropped:
            yield {
                "type": "stderr",
                "text": f"[hutch: {inbox.dropped} characters of output were dropped: "
                "the client read slower than the code wrote]\n",
                "timestamp": None,
            }
        if env_vars:
            restore = languages.restore_env(context.language, env_vars)
            if restore:
                await kernel.run_silent(restore)
    except (asyncio.CancelledError, GeneratorExit):
        settled = True
        asyncio.get_running_loop().create_task(
            _settle(context, msg_id, inbox, translator, env_vars, settings)
        )
        raise
    finally:
        if not settled:
            if msg_id is not None:
                kernel.forget(msg_id)
            context.lock.release()
