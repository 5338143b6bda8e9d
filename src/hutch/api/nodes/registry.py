"""``NodeRegistry``: one ``HttpNodeClient`` per registered node, built from its row.

The nodes table (``store/nodes.py``) says where each node's API is (``address``:
``http://host:port`` or ``unix:/path``); the registry connects on first use, checks that the
node answering there is the one asked for, and keeps the client. A registration
(:meth:`forget`) or a transport failure drops it, so the next call reads the row again
(a node that moved, or came back, is found where it now is).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import httpx

from hutch.api.nodes.http_client import HttpNodeClient
from hutch.api.nodes_model import Node
from hutch.shared.errors import UnavailableError
from hutch.shared.ids import NodeID


class NodeRows(Protocol):
    """What the registry reads (``SqlNodeStore``)."""

    async def get_node(self, node_id: NodeID) -> Node: ...


def transport_for(address: str) -> tuple[str, httpx.AsyncBaseTransport | None]:
    """``(base_url, transport)`` for a node ``address``."""
    if address.startswith("unix:"):
        return "http://node", httpx.AsyncHTTPTransport(uds=address.removeprefix("unix:"))
    if address.startswith(("http://", "https://")):
        return address.rstrip("/"), None
    raise UnavailableError(f"node address {address!r}: want http(s)://host:port or unix:/path")


class NodeRegistry:
    """See the module docstring."""

    def __init__(self, *, nodes: NodeRows, token: str | None) -> None:
        self._nodes = nodes
        self._token = token
        self._clients: dict[NodeID, tuple[str, HttpNodeClient]] = {}
        self._locks: dict[NodeID, asyncio.Lock] = {}

    async def client(self, node_id: NodeID) -> HttpNodeClient:
        """The node's client (connected on first use); ``UnavailableError`` when the node
        does not answer at its address, ``NotFoundError`` when it never registered."""
        cached = self._clients.get(node_id)
        if cached is not None:
            return cached[1]
        async with self._locks.setdefault(node_id, asyncio.Lock()):
            cached = self._clients.get(node_id)
            if cached is not None:
                return cached[1]
            row = await self._nodes.get_node(node_id)
            base_url, transport = transport_for(row.address)
            client = await HttpNodeClient.connect(base_url, token=self._token, transport=transport)
            if client.node_id != node_id:
                await client.aclose()
                raise UnavailableError(
                    f"node {node_id}: {row.address} answers as node {client.node_id}"
                )
            self._clients[node_id] = (row.address, client)
            return client

    async def forget(self, node_id: NodeID) -> None:
        """Drop the node's client (the next call connects again from its row)."""
        cached = self._clients.pop(node_id, None)
        if cached is not None:
            await cached[1].aclose()

    async def aclose(self) -> None:
        """Close every client."""
        for node_id in list(self._clients):
            await self.forget(node_id)
