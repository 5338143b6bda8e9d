"""Serving the node API: on a Unix socket in a private directory, or on TCP with a token.

The rule (docs/node-api.md): a node API on TCP refuses to start without a cluster token;
on a Unix socket the token is optional, because the socket lives in a directory only the
node's user may enter (uvicorn itself makes the socket world-writable). ``hutch serve``
binds a socket in its home and sets a token anyway; ``hutch node`` serves TCP or a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import tempfile
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from starlette.types import ASGIApp

from hutch.node.settings import NodeSettings
from hutch.node.templates.artifact_s3 import ArtifactStoreConfigError
from hutch.shared.errors import InvalidArgumentError
from hutch.shared.telemetry import run_observed

if TYPE_CHECKING:
    from hutch.node.app import Node
    from hutch.node.templates.artifact_store import Blobs

log = logging.getLogger("hutch.node")

#: Servers a wiring runs beside the node API (``hutch node --proxy-listen``: the node's
#: own proxy, ``hutch.cluster.node_proxy``), made once the node has started.
ExtraServers = Callable[["Node"], list[uvicorn.Config]]

#: ``sun_path`` is 108 bytes on Linux, the terminating NUL included.
_MAX_SOCKET_PATH = 107


class NodeApiServer(uvicorn.Server):
    """A uvicorn server that leaves signals to its caller (which stops it through
    ``should_exit``): uvicorn's own handling re-raises a captured SIGTERM after shutdown,
    which would end the process before the other servers are closed."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def private_socket(home: Path, name: str = "node-api.sock") -> Path:
    """``<home>/run/<name>`` in a 0700 directory (a stale socket removed); a private
    temporary directory instead when that path is too long for a Unix socket."""
    run = home / "run"
    if len(str(run / name)) > _MAX_SOCKET_PATH:
        run = Path(tempfile.mkdtemp(prefix="hutch-node-"))
    run.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(run, 0o700)
    path = run / name
    path.unlink(missing_ok=True)
    return path


def node_api_server(
    app: ASGIApp,
    *,
    token: str | None,
    uds: Path | None = None,
    host: str | None = None,
    port: int | None = None,
) -> NodeApiServer:
    """A server for the node API ``app`` on ``uds`` or on ``host:port`` (see the module
    docstring for when ``token`` may be None)."""
    if (uds is None) == (port is None):
        raise InvalidArgumentError("the node API listens on a Unix socket or on a port")
    if uds is None and not token:
        raise InvalidArgumentError(
            "the node API refuses to listen on TCP without a cluster token "
            "(HUTCH_NODE_API_TOKEN or HUTCH_NODE_API_TOKEN_FILE)"
        )
    common = {
        "lifespan": "off", "log_level": "warning", "access_log": False,
        "server_header": False, "timeout_keep_alive": 30,
    }  # fmt: skip
    if uds is not None:
        config = uvicorn.Config(app, uds=str(uds), **common)  # type: ignore[arg-type]
    else:
        config = uvicorn.Config(app, host=host or "127.0.0.1", port=port, **common)  # type: ignore[arg-type]
    return NodeApiServer(config)


# ---- ``hutch node``: the node role alone ------------------------------------------------


def _records(sandboxes_dir: Path) -> tuple[list[str], list[str]]:
    """The sandbox ids (and the paused ones) recorded under ``sandboxes_dir``."""
    known, paused = [], []
    for record in sorted(sandboxes_dir.glob("*/sandbox.json")):
        try:
            data = json.loads(record.read_text())
            sid = str(data["sandbox_id"])
        except (OSError, ValueError, KeyError):
            continue  # unreadable: reconcile destroys what it belongs to
        (paused if data.get("paused") else known).append(sid)
    return known, paused


async def run_node(settings: NodeSettings, *, host: str | None, port: int | None,
                   uds: Path | None, extra: ExtraServers | None = None) -> None:  # fmt: skip
    """Run the node role until SIGTERM/SIGINT: its sandboxes, templates, sampler and warm
    pool, served as the node API on ``host:port`` or ``uds``.

    Until membership lands (issue 11), a standalone node adopts every sandbox it still has
    from a previous run (and destroys leftovers that are not whole sandboxes); the api's
    reconcile (``POST /v1/reconcile``) then trims the node to the store's view. Shutdown
    destroys the idle pool members and leaves sandboxes running, as ``hutch serve`` does.
    """
    from hutch.node.app import build_node, build_node_service
    from hutch.node.http.app import create_node_app
    from hutch.volumes.local import LocalVolumeBackend

    token = settings.effective_api_token()
    artifact_blobs = await artifact_blobs_or_exit(settings, role="hutch node")
    node = build_node(settings)
    volumes = LocalVolumeBackend(settings.volumes_dir or settings.home / "volumes")
    try:
        await node.manager.start()
        await node.egress.start()
        known, paused = _records(settings.sandboxes_dir)
        report = await node.manager.reconcile(known, paused_ids=paused)
        log.info("adopted %d sandboxes, removed %d leftovers", len(report.adopted),
                 len(report.removed))  # fmt: skip
        await node.manager.start_pool()
        node.sampler.start()
        service = build_node_service(
            node,
            settings,
            node_id=settings.node_id,
            volumes={volumes.name: volumes},
            artifact_blobs=artifact_blobs,
        )
        server = node_api_server(
            create_node_app(service, token=token), token=token, uds=uds, host=host, port=port
        )
        others = [NodeApiServer(config) for config in (extra(node) if extra else [])]
        loop = asyncio.get_running_loop()

        def stop() -> None:
            for each in (server, *others):
                each.should_exit = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        try:
            tasks = [asyncio.ensure_future(each.serve()) for each in (server, *others)]
            membership = (
                asyncio.ensure_future(
                    _keep_registered(
                        server,
                        settings,
                        address=_address(settings, host, port, uds),
                        token=token,
                        templates=template_names(node),
                    )
                )
                if settings.cluster_api_url_list
                else None
            )
            await asyncio.wait(
                [*tasks, *([membership] if membership else [])],
                return_when=asyncio.FIRST_COMPLETED,
            )
            stop()  # one ended (a port in use, a signal, a refusal): end them all
            if membership is not None and not membership.done():
                membership.cancel()
            await asyncio.gather(*tasks)
            if membership is not None:
                await asyncio.gather(membership, return_exceptions=True)
                refused = None if membership.cancelled() else membership.exception()
                if refused is not None:
                    raise SystemExit(f"hutch node: {refused}")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        if not all(each.started for each in (server, *others)):
            raise SystemExit("hutch node: a server failed to start (is its port in use?)")
    finally:
        await node.manager.stop_pool()
        await volumes.aclose()
        await node.aclose()
    log.info("stopped; sandboxes keep running until the next start adopts them")


async def artifact_blobs_or_exit(settings: NodeSettings, *, role: str) -> Blobs | None:
    """The node's artifact store adapter, checked (an S3 bucket: credentials found, the
    bucket there); a store that cannot work ends the process with a message naming why."""
    from hutch.node.app import build_artifact_blobs

    try:
        return await asyncio.to_thread(build_artifact_blobs, settings)
    except ArtifactStoreConfigError as exc:
        raise SystemExit(f"{role}: {exc.message}") from None


def _address(settings: NodeSettings, host: str | None, port: int | None,
             uds: Path | None) -> str:  # fmt: skip
    """How apis reach this node's API (``advertise_address`` wins)."""
    if settings.advertise_address:
        return settings.advertise_address
    if uds is not None:
        return f"unix:{uds}"
    shown = f"[{host}]" if host and ":" in host else host
    return f"http://{shown}:{port}"


def template_names(node: Node) -> Callable[[], Awaitable[list[str]]]:
    """The names of the node's templates, asked anew at each call (for registration)."""

    async def names() -> list[str]:
        return [t.name for t in await node.templates.list()]

    return names


async def _keep_registered(
    server: NodeApiServer,
    settings: NodeSettings,
    *,
    address: str,
    token: str | None,
    templates: Callable[[], Awaitable[list[str]]] | None = None,
) -> None:
    """Once the node API listens, register with the cluster's apis (``cluster_api_urls``)
    and keep the lease until cancelled; a final refusal (``RegistrationRefused``) ends it."""
    from hutch import __version__
    from hutch.node.membership import Registrar, registration_factory

    if not token:
        raise InvalidArgumentError(
            "registering with an api needs the cluster token "
            "(HUTCH_NODE_API_TOKEN or HUTCH_NODE_API_TOKEN_FILE)"
        )
    while not server.started:
        await asyncio.sleep(0.01)
    registrar = Registrar(
        api_urls=settings.cluster_api_url_list, token=token,
        registration=registration_factory(
            settings, node_id=settings.node_id, address=address, version=__version__,
            templates=templates,
        ),
    )  # fmt: skip
    try:
        await registrar.register()  # RegistrationRefused: the node ends with its message
        await registrar.run()
    finally:
        await registrar.aclose()


def parse_listen(listen: str, what: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` → ``(host, port)``; SystemExit with the option's name otherwise."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit():
        raise SystemExit(f"hutch node: {what} {listen!r}: want HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port_text)


def run(settings: NodeSettings, *, listen: str | None, socket_path: Path | None,
        extra: ExtraServers | None = None) -> None:  # fmt: skip
    """Blocking entry point for ``hutch node``: ``listen`` is ``HOST:PORT``."""
    host: str | None = None
    port: int | None = None
    if listen is not None:
        host, port = parse_listen(listen)
    elif socket_path is None:
        socket_path = private_socket(settings.home)
    try:
        run_observed(run_node(settings, host=host, port=port, uds=socket_path, extra=extra),
                     service="hutch-node")  # fmt: skip
    except (InvalidArgumentError, ValueError) as exc:
        raise SystemExit(f"hutch node: {exc}") from None
