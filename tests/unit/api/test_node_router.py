"""``NodeRouter`` (ADR 0025) stands for every node of a cluster: it must offer every call
of the ``NodeClient`` Protocol, or a call added there would fail only in a cluster."""

from __future__ import annotations

import inspect

from hutch.api.nodes.router import NodeRouter
from hutch.api.service.ports import NodeClient


def _calls(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls) if not name.startswith("_")}


def test_the_router_offers_every_node_call() -> None:
    assert _calls(NodeClient) - _calls(NodeRouter) == set()
