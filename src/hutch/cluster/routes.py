"""Routes over PostgreSQL NOTIFY: how ``hutch api`` tells every edge ``hutch proxy`` where a
sandbox runs (ADR 0019).

``NotifyRoutes`` is the api's ``SandboxRoutes``: each call is one ``pg_notify`` on
:data:`CHANNEL`, committed before it returns, so a kill's withdrawal has been sent before
the node is asked to tear the sandbox down. The payload is the whole route (the sandbox
row is not ``running`` yet when a create publishes it, nor ``killed`` when a kill
withdraws it), so an edge applies it without reading the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.service.ports import SandboxRoute
from hutch.shared.errors import UnavailableError
from hutch.shared.ids import NodeID, SandboxID

CHANNEL: Final = "hutch_routes"


@dataclass(frozen=True, slots=True)
class RouteEvent:
    """One message on :data:`CHANNEL`: ``op`` is ``publish``, ``paused`` or ``withdraw``."""

    op: str
    sandbox_id: SandboxID
    node_id: NodeID | None = None
    address: str | None = None
    envd_access_token: str | None = None
    running: bool = True
    auto_resume: bool = False
    #: ``allowPublicTraffic: false``'s token and ``maskRequestHost`` (issue 13).
    traffic_access_token: str | None = None
    mask_request_host: str | None = None

    def encode(self) -> str:
        """The NOTIFY payload (JSON; well under PostgreSQL's 8000 bytes)."""
        return json.dumps(
            {
                "op": self.op,
                "id": self.sandbox_id,
                "node": self.node_id,
                "address": self.address,
                "token": self.envd_access_token,
                "running": self.running,
                "autoResume": self.auto_resume,
                "trafficToken": self.traffic_access_token,
                "maskHost": self.mask_request_host,
            }
        )

    @classmethod
    def decode(cls, payload: str) -> RouteEvent:
        """Parse a payload; ValueError when it is not one."""
        data: Any = json.loads(payload)
        if not isinstance(data, dict) or data.get("op") not in ("publish", "paused", "withdraw"):
            raise ValueError(f"not a route event: {payload[:200]!r}")
        return cls(
            op=data["op"],
            sandbox_id=SandboxID(str(data["id"])),
            node_id=data.get("node"),
            address=data.get("address"),
            envd_access_token=data.get("token"),
            running=bool(data.get("running", True)),
            auto_resume=bool(data.get("autoResume")),
            traffic_access_token=data.get("trafficToken"),
            mask_request_host=data.get("maskHost"),
        )


class NotifyRoutes:
    """Satisfies ``hutch.api.service.ports.SandboxRoutes`` for ``hutch api``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _send(self, event: RouteEvent) -> None:
        try:
            async with self._engine.connect() as conn:
                await conn.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": CHANNEL, "payload": event.encode()},
                )
                await conn.commit()
        except (SQLAlchemyError, OSError) as exc:
            raise UnavailableError(
                f"could not tell the proxies about sandbox {event.sandbox_id}: {exc}"
            ) from exc

    async def publish(self, route: SandboxRoute) -> None:
        """See ``SandboxRoutes.publish``."""
        await self._send(
            RouteEvent(
                "publish",
                route.sandbox_id,
                node_id=route.node_id,
                address=route.address,
                envd_access_token=route.envd_access_token,
                running=route.running,
                auto_resume=route.auto_resume,
                traffic_access_token=route.traffic_access_token,
                mask_request_host=route.mask_request_host,
            )
        )

    async def mark_paused(self, sandbox_id: SandboxID) -> None:
        """See ``SandboxRoutes.mark_paused``."""
        await self._send(RouteEvent("paused", sandbox_id, running=False))

    async def withdraw(self, sandbox_id: SandboxID) -> None:
        """See ``SandboxRoutes.withdraw``."""
        await self._send(RouteEvent("withdraw", sandbox_id, running=False))
