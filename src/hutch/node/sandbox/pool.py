"""The warm pool's bookkeeping (pure): which pre-booted sandboxes wait, under which key.

A pool member is a sandbox booted ahead of demand up to a healthy envd that has not been
``/init``-ed: no env vars, no access token, no owner. Everything fixed once its container
runs is part of its :class:`PoolKey` (template, CPU, memory, internet access, disk); a create
takes a member only when its own key is equal, and the manager then personalises it
(hostname, ``/etc/hostname``, ``/etc/hosts``, ``/init``). See ADR 0011.

The manager owns the event loop side (booting, refilling, draining); this module only
answers "is there one for this key", "what is missing", and "is this host id a member".
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from hutch.node.sandbox.models import RunningSandbox

#: Pool members' host ids: ``pool-`` + 12 hex digits. API sandbox ids never contain a
#: ``-`` (``shared/ids.py``), so a member can never be mistaken for a user's sandbox.
POOL_ID_PREFIX = "pool-"


def new_pool_id() -> str:
    """A fresh host id for a pool member."""
    return POOL_ID_PREFIX + secrets.token_hex(6)


def is_pool_id(host_id: str) -> bool:
    """Whether ``host_id`` names a pool member (idle or already taken)."""
    return host_id.startswith(POOL_ID_PREFIX)


@dataclass(frozen=True, slots=True)
class PoolKey:
    """Everything about a sandbox that cannot change after its container started."""

    template: str
    cpu_count: float
    memory_mb: int
    allow_internet: bool
    #: The disk's size: its filesystem is made at boot (ADR 0023).
    disk_mb: int = 0


class WarmPool:
    """Idle members per key, and how many each key should have.

    ``targets`` maps a key to its wanted size. ``booting`` counts members being booted, so
    that a refill never overshoots while one is on its way.
    """

    def __init__(self, targets: Mapping[PoolKey, int]) -> None:
        self._targets = {key: n for key, n in targets.items() if n > 0}
        self._idle: dict[PoolKey, deque[RunningSandbox]] = {k: deque() for k in self._targets}
        self._booting: dict[PoolKey, int] = dict.fromkeys(self._targets, 0)

    @property
    def targets(self) -> Mapping[PoolKey, int]:
        """The wanted size of each key (only keys with a size above zero)."""
        return dict(self._targets)

    def take(self, key: PoolKey) -> RunningSandbox | None:
        """Remove and return the oldest idle member of ``key``, or None."""
        idle = self._idle.get(key)
        return idle.popleft() if idle else None

    def add(self, key: PoolKey, member: RunningSandbox) -> bool:
        """A member of ``key`` finished booting; False if ``key`` is no longer wanted."""
        if key not in self._targets:
            return False
        self._idle[key].append(member)
        return True

    def booting(self, key: PoolKey, delta: int) -> None:
        """Count a boot of ``key`` as started (+1) or ended (-1)."""
        self._booting[key] = self._booting.get(key, 0) + delta

    def retarget(self, targets: Mapping[PoolKey, int]) -> list[RunningSandbox]:
        """Replace the wanted sizes; return the idle members no key wants any more.

        A key whose size shrank keeps its surplus until it is taken (members are cheap
        to keep and costly to boot); a key that is gone gives its members back.
        """
        self._targets = {key: n for key, n in targets.items() if n > 0}
        dropped: list[RunningSandbox] = []
        for key in list(self._idle):
            if key not in self._targets:
                dropped.extend(self._idle.pop(key))
        for key in self._targets:
            self._idle.setdefault(key, deque())
            self._booting.setdefault(key, 0)
        return dropped

    def remove(self, member: RunningSandbox) -> bool:
        """Take ``member`` out of the pool (to destroy it); False if it is no longer idle."""
        for queue in self._idle.values():
            if member in queue:
                queue.remove(member)
                return True
        return False

    def missing(self) -> list[PoolKey]:
        """One entry per member to boot now, the emptiest keys first."""
        need = {
            key: target - len(self._idle[key]) - self._booting.get(key, 0)
            for key, target in self._targets.items()
        }
        order = sorted((k for k, n in need.items() if n > 0), key=lambda k: -need[k])
        out: list[PoolKey] = []
        while any(need[k] > 0 for k in order):
            for key in order:
                if need[key] > 0:
                    out.append(key)
                    need[key] -= 1
        return out

    def size(self) -> int:
        """Idle members plus those being booted (what the pool holds on the host)."""
        return sum(len(q) for q in self._idle.values()) + sum(self._booting.values())

    def idle(self) -> Iterator[RunningSandbox]:
        """Every idle member."""
        for queue in self._idle.values():
            yield from queue

    def drain(self) -> list[RunningSandbox]:
        """Remove and return every idle member (shutdown)."""
        out = list(self.idle())
        for queue in self._idle.values():
            queue.clear()
        return out

    def is_idle_member(self, host_id: str) -> bool:
        """Whether ``host_id`` is an idle member right now."""
        return any(m.host_id == host_id for m in self.idle())
