"""``LocalNodeStatus``: the api's ``NodeStatusSource`` over the in-process node.

Read-only and cheap (the manager's own bookkeeping and ``/proc/meminfo``), so
``GET /hutch/status`` may be polled.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from hutch.api.service.node_status import NodeStatus, PoolFill
from hutch.node.sandbox.manager import SandboxManager


class LocalNodeStatus:
    """Satisfies ``NodeStatusSource`` for the node of this process."""

    def __init__(self, manager: SandboxManager, *, node_id: str, runtime: str) -> None:
        self._manager = manager
        self._node_id = node_id
        self._runtime = runtime

    async def status(self) -> NodeStatus:
        """See ``NodeStatusSource.status``."""
        sandboxes = self._manager.list()
        config = self._manager.config
        idle = Counter(m.template for m in self._manager.pool_members())
        paused = sum(1 for s in sandboxes if s.paused is not None)
        return NodeStatus(
            node_id=self._node_id,
            runtime=self._runtime,
            max_sandboxes=config.max_sandboxes,
            running=len(sandboxes) - paused,
            paused=paused,
            host_cpu_count=os.cpu_count() or 1,
            host_memory_mb=_memory_mb(),
            allocated_cpu=sum(s.cpu_count for s in sandboxes),
            allocated_memory_mb=sum(s.memory_mb for s in sandboxes),
            pool=[
                PoolFill(template=name, target=target, ready=idle.get(name, 0))
                for name, target in sorted(config.pool_sizes.items())
                if target > 0
            ],
        )


def _memory_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0
