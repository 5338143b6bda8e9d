"""What ``GET /hutch/status`` reports of a node: capacity, sandboxes, warm pool fill.

A port of its own beside ``NodeClient`` (``ports.py``): the operator's view of the node,
not a sandbox operation. ``HttpNodeClient`` satisfies it over the node API
(``GET /v1/status``), in ``hutch serve`` as for a remote node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolFill:
    """One template's warm pool: members wanted and members booted and idle."""

    template: str
    target: int
    ready: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatus:
    """A node's load and limits (every team's sandboxes: the operator's view)."""

    node_id: str
    runtime: str
    #: Sandboxes the node starts at most (running and paused ones count).
    max_sandboxes: int
    running: int
    paused: int
    #: The host's CPUs and memory, and what the node's sandboxes were given of them.
    host_cpu_count: int
    host_memory_mb: int
    allocated_cpu: float
    allocated_memory_mb: int
    pool: Sequence[PoolFill] = ()


class NodeStatusSource(Protocol):
    """Answers :class:`NodeStatus` for the node it stands for."""

    async def status(self) -> NodeStatus:
        """The node's status now."""
        ...
