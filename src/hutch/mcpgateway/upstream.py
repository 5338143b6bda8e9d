"""Starting the configured MCP servers and holding one client session to each.

A stdio server runs as a subprocess of the gateway for the gateway's lifetime, its
stderr in ``<log dir>/<prefix>.log``. Each is started in a task of its own (so the servers
start in parallel, and each one's transport is entered and left by the same task); a
server that cannot be spawned, exits, or does not answer ``initialize`` in time fails the
whole start with a :class:`ServerStartError` naming it and quoting its stderr's tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import ServerCapabilities

from hutch.mcpgateway.catalog import ServerSpec
from hutch.mcpgateway.errors import ServerStartError

log = logging.getLogger(__name__)

_TAIL_BYTES = 2000


@dataclass
class Upstream:
    """One started MCP server: its namespace and the gateway's session to it."""

    name: str
    prefix: str
    session: ClientSession

    @property
    def capabilities(self) -> ServerCapabilities:
        """What the server said it serves at ``initialize``."""
        return self.session.get_server_capabilities() or ServerCapabilities()


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()[-_TAIL_BYTES:]
    except OSError:
        return ""
    return data.decode(errors="replace").strip()


async def _install(spec: ServerSpec, log_path: Path) -> None:
    """Run ``spec.install`` when its command is not there yet (a github entry's clone)."""
    if spec.install is None:
        return
    if spec.cwd is not None:
        spec.cwd.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = await asyncio.create_subprocess_shell(
            spec.install, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
        code = await proc.wait()
    if code != 0:
        raise ServerStartError(
            spec.name, f"its install exited with {code}: {_tail(log_path) or '(no output)'}"
        )


@contextlib.asynccontextmanager
async def started(
    specs: Sequence[ServerSpec],
    *,
    base_env: Mapping[str, str],
    log_dir: Path,
    init_timeout_s: float,
) -> AsyncIterator[list[Upstream]]:
    """Start every server of ``specs``; yield their sessions; stop them all on exit.

    Raises:
        ServerStartError: the first server (in config order) that failed to start.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    stop = anyio.Event()
    results: dict[str, Upstream | ServerStartError] = {}
    started_all = anyio.Event()

    async def run(spec: ServerSpec) -> None:
        log_path = log_dir / f"{spec.prefix}.log"
        try:
            if spec.package is not None and not Path(spec.command).exists():
                raise ServerStartError(
                    spec.name,
                    f"{spec.package.spec} is not installed in this template "
                    f"(add it with Template().add_mcp_server({spec.name!r}), docs/mcp.md)",
                )
            await _install(spec, log_path)
            params = StdioServerParameters(
                command=spec.command,
                args=list(spec.args),
                env={**base_env, **spec.env},
                cwd=spec.cwd,
            )
            with log_path.open("a") as errlog:
                async with (
                    stdio_client(params, errlog=errlog) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    with anyio.fail_after(init_timeout_s):
                        await session.initialize()
                    results[spec.name] = Upstream(spec.name, spec.prefix, session)
                    if len(results) == len(specs):
                        started_all.set()
                    await stop.wait()
        except Exception as exc:  # every failure is reported, by server
            results.setdefault(spec.name, _reason(spec, exc, log_path))
            if len(results) == len(specs):
                started_all.set()

    failure: ServerStartError | None = None
    async with anyio.create_task_group() as tg:
        for spec in specs:
            tg.start_soon(run, spec)
        await started_all.wait()
        failed = [r for s in specs if isinstance(r := results[s.name], ServerStartError)]
        if failed:
            failure = failed[0]
            stop.set()  # the others stop; raised once the task group is left (unwrapped)
        else:
            try:
                yield [results[s.name] for s in specs]  # type: ignore[misc]
            finally:
                stop.set()  # each task leaves its session and stdio transport
    if failure is not None:
        raise failure


def _reason(spec: ServerSpec, exc: BaseException, log_path: Path) -> ServerStartError:
    if isinstance(exc, ServerStartError):
        return exc
    if isinstance(exc, TimeoutError):
        why = "it did not answer initialize in time"
    elif isinstance(exc, OSError):
        why = f"cannot run {spec.command}: {os.strerror(exc.errno) if exc.errno else exc}"
    else:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    tail = _tail(log_path)
    return ServerStartError(spec.name, f"{why}" + (f"; its stderr: {tail}" if tail else ""))
