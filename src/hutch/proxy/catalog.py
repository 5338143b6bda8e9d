"""Which sandboxes exist and where they listen: the one thing the proxy asks the outside.

:class:`SandboxCatalog` is the seam (infra's client-proxy ``SandboxesCatalog``): the embedded
``hutch serve`` hands in an :class:`InMemorySandboxCatalog` that its api keeps current; the
edge ``hutch proxy`` implements it over the store (``hutch.cluster.edge``), and a node's own
proxy over the sandboxes it runs (``hutch.cluster.node_proxy``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol
from urllib.parse import parse_qs

from hutch.proxy.errors import SandboxTransitioningError
from hutch.shared.ids import SandboxID
from hutch.shared.signatures import FILE_OPERATIONS, signature_matches

#: The header an edge proxy sends its cluster token in to a node's proxy (ADR 0019); the
#: node proxy checks it and drops it, and every proxy drops one that a client sent.
NODE_TOKEN_HEADER: Final = b"x-hutch-node-token"


@dataclass(frozen=True, slots=True)
class NodeHop:
    """A node's own proxy, through which an edge reaches that node's sandboxes.

    The edge connects to ``host:port`` instead of the sandbox's private address and names
    the sandbox and port in ``E2b-Sandbox-Id``/``E2b-Sandbox-Port``, with the cluster token
    in :data:`NODE_TOKEN_HEADER`.
    """

    host: str
    port: int
    token: str = field(repr=False)


#: How long a request waits for the pause or resume in progress before a wake gives up with
#: 409 "still transitioning" (infra's ``autoResumeTransitionWaitBudget``).
WAKE_BUDGET_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class SandboxRoute:
    """Where one sandbox is reached, and what routing by signature needs to know of it.

    ``ports`` remaps a sandbox port to another port at ``host``: for sandboxes sharing the
    host's network (a bare envd in tests and development) whose envd is not on 49983.
    """

    sandbox_id: SandboxID
    host: str
    envd_access_token: str | None = None
    running: bool = True
    ports: Mapping[int, int] = field(default_factory=dict)
    #: Paused (``running`` False) but resumed by traffic: :meth:`SandboxCatalog.wake`.
    auto_resume: bool = False
    #: Set when the sandbox runs on another host: traffic goes through its node's proxy.
    via: NodeHop | None = None
    #: ``allowPublicTraffic: false``: requests to its ports (not envd's) must carry this in
    #: ``e2b-traffic-access-token``.
    traffic_access_token: str | None = field(default=None, repr=False)
    #: ``maskRequestHost``: the ``Host`` sent to its ports (``${PORT}`` replaced).
    mask_request_host: str | None = None

    def address(self, port: int) -> tuple[str, int]:
        """The ``(host, port)`` to connect to for the sandbox's ``port``."""
        if self.via is not None:
            return self.via.host, self.via.port
        return self.host, self.ports.get(port, port)

    def hop_headers(self, port: int) -> list[tuple[bytes, bytes]]:
        """The headers that name the sandbox to the node proxy (none without a hop)."""
        if self.via is None:
            return []
        return [
            (b"e2b-sandbox-id", self.sandbox_id.encode()),
            (b"e2b-sandbox-port", str(port).encode()),
            (NODE_TOKEN_HEADER, self.via.token.encode()),
        ]


class SandboxCatalog(Protocol):
    """Looks sandboxes up for the proxy; implementations must be cheap to call per request
    (a cache, with a store read only on a miss: ``hutch.cluster.edge.StoreCatalog``)."""

    async def lookup(self, sandbox_id: SandboxID) -> SandboxRoute | None:
        """The sandbox's route, or None when it does not exist (or no longer)."""
        ...

    async def lookup_by_file_signature(
        self, query_string: bytes, method: str
    ) -> SandboxRoute | None:
        """The one running sandbox whose envd token made the signed ``/files`` query, or None."""
        ...

    async def wake(self, sandbox_id: SandboxID) -> SandboxRoute | None:
        """Resume a paused ``auto_resume`` sandbox for a request; its running route, or
        None when it cannot be woken (gone, or the resume failed).
        :class:`~hutch.proxy.errors.SandboxTransitioningError` when the resume did not
        end within the wake budget (it goes on; the client is told to retry, 409)."""
        ...


def _signed_by(route: SandboxRoute, query: Mapping[str, list[str]], operation: str) -> bool:
    token = route.envd_access_token
    return (
        route.running
        and token is not None
        and signature_matches(query, operation=operation, token=token)
    )


class InMemorySandboxCatalog:
    """A :class:`SandboxCatalog` in a dict: for the single-process ``hutch serve`` and tests.

    Routing by signature tries every token: one sha256 per running secure sandbox, which is
    microseconds for the hundreds of sandboxes a node holds.
    """

    def __init__(
        self,
        routes: Mapping[SandboxID, SandboxRoute] | None = None,
        *,
        waker: Callable[[SandboxID], Awaitable[None]] | None = None,
        wake_budget_s: float = WAKE_BUDGET_S,
    ) -> None:
        self._routes: dict[SandboxID, SandboxRoute] = dict(routes or {})
        #: Resumes a sandbox (``hutch serve`` hands in the api's auto-resume); settable
        #: after construction because the api is built after the catalog.
        self.waker = waker
        self.wake_budget_s = wake_budget_s
        #: Wakes in progress, one per sandbox: later requests join the first one's, and a
        #: wake that outlives its requests' budget still finishes.
        self._waking: dict[SandboxID, asyncio.Task[Any]] = {}

    async def wake(self, sandbox_id: SandboxID) -> SandboxRoute | None:
        """See :meth:`SandboxCatalog.wake`."""
        route = await self.lookup(sandbox_id)
        if route is None or route.running:
            return route
        if not route.auto_resume or self.waker is None:
            return None
        task = self._waking.get(sandbox_id)
        if task is None:
            task = asyncio.ensure_future(self.waker(sandbox_id))
            self._waking[sandbox_id] = task
            task.add_done_callback(lambda t: self._wake_done(sandbox_id, t))
        try:
            await asyncio.wait_for(asyncio.shield(task), self.wake_budget_s)
        except TimeoutError:
            raise SandboxTransitioningError(sandbox_id) from None
        except Exception:  # the proxy answers "not found"; the api logged the cause
            return None
        route = await self.lookup(sandbox_id)
        return route if route is not None and route.running else None

    def _wake_done(self, sandbox_id: SandboxID, task: asyncio.Task[Any]) -> None:
        self._waking.pop(sandbox_id, None)
        if not task.cancelled():
            task.exception()  # retrieved: a wake every waiter gave up on must not warn

    def put(self, route: SandboxRoute) -> None:
        """Add or replace the route of ``route.sandbox_id``."""
        self._routes[route.sandbox_id] = route

    def remove(self, sandbox_id: SandboxID) -> None:
        """Forget a sandbox (killed); unknown ids are ignored."""
        self._routes.pop(sandbox_id, None)

    def find(self, sandbox_id: SandboxID) -> SandboxRoute | None:
        """The cached route of ``sandbox_id``, or None."""
        return self._routes.get(sandbox_id)

    async def lookup(self, sandbox_id: SandboxID) -> SandboxRoute | None:
        """See :meth:`SandboxCatalog.lookup`."""
        return self.find(sandbox_id)

    async def lookup_by_file_signature(
        self, query_string: bytes, method: str
    ) -> SandboxRoute | None:
        """See :meth:`SandboxCatalog.lookup_by_file_signature`."""
        return self.find_by_file_signature(query_string, method)

    def routes(self) -> list[SandboxRoute]:
        """Every cached route."""
        return list(self._routes.values())

    def find_by_file_signature(self, query_string: bytes, method: str) -> SandboxRoute | None:
        """The running cached route whose token made the signed query, or None."""
        operation = FILE_OPERATIONS.get(method)
        if operation is None:
            return None
        query = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
        for route in list(self._routes.values()):
            if _signed_by(route, query, operation):
                return route
        return None
