"""The long-running gateway: start the servers, then serve ``/mcp`` until stopped.

Run by the launcher as ``python -m hutch.mcpgateway serve --status-fd N``; reports one JSON
line on fd ``N``, ``{"ok": true}`` once the endpoint serves or ``{"error": "..."}``, then
closes it (the launcher's ``mcp-gateway --config`` exits on that line).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

from hutch.mcpgateway.app import listen, serve
from hutch.mcpgateway.catalog import parse_config
from hutch.mcpgateway.errors import GatewayError
from hutch.mcpgateway.gateway import Gateway
from hutch.mcpgateway.settings import CONFIG_FILE, Settings, access_token, process_env
from hutch.mcpgateway.upstream import started

log = logging.getLogger(__name__)


class _Status:
    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def report(self, **body: object) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, (json.dumps(body) + "\n").encode())
        finally:
            os.close(self._fd)
            self._fd = None


async def run(settings: Settings, *, status_fd: int | None) -> int:
    status = _Status(status_fd)
    try:
        config = json.loads((settings.state_dir / CONFIG_FILE).read_text())
        specs = parse_config(config, servers_dir=settings.servers_dir, state_dir=settings.state_dir)
        try:
            sock = listen(settings.host, settings.port)
        except OSError as exc:
            raise GatewayError(
                f"cannot listen on port {settings.port}: {exc.strerror or exc}"
                " (is a gateway already running in this sandbox?)"
            ) from exc
        async with started(
            specs,
            base_env=process_env(),
            log_dir=settings.log_dir,
            init_timeout_s=settings.init_timeout_s,
        ) as upstreams:
            names = [u.name for u in upstreams]
            log.info("MCP servers up: %s", ", ".join(names))
            await serve(
                Gateway(upstreams),
                sock,
                token=access_token(),
                on_ready=lambda: status.report(ok=True, servers=names),
            )
    except GatewayError as exc:
        log.error("%s", exc)
        status.report(error=str(exc))
        return 1
    except Exception as exc:
        log.exception("the gateway failed")
        status.report(error=f"the gateway failed: {type(exc).__name__}: {exc}")
        return 1
    status.report(error="the gateway stopped before it was ready")
    return 0


def main(settings: Settings, *, status_fd: int | None) -> int:
    return asyncio.run(run(settings, status_fd=status_fd))
