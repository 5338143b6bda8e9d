"""The warm pool's bookkeeping (pure): which pre-booted sandboxes wait, under which key.

A pool member is a sandbox booted ahead of demand up to a healthy envd that has not been
``/init``-ed: no env vars, no access token, no owner. Everything fixed once its container
runs is part of its :class:`PoolKey` (template, CPU, memory, internet access, disk); a create
takes a member only when its own key is equal, and the manager then personalises it
(hostname, ``/etc/hostname``, ``/etc/hosts``, ``/init``). See ADR 0011.

The manager owns the event loop side (booting, refilling, draining); this module only
answers "is there one for this key", "what is missing", and "is this host id a member",
and sizes each key from recent demand (:class:`Demand`, :func:`plan_targets`; ADR 0038).
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
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

        A key that is gone gives its members back; one whose size shrank (its demand
        passed) gives back its newest members above the new size.
        """
        self._targets = {key: n for key, n in targets.items() if n > 0}
        dropped: list[RunningSandbox] = []
        for key in list(self._idle):
            if key not in self._targets:
                dropped.extend(self._idle.pop(key))
                continue
            queue = self._idle[key]
            while len(queue) > self._targets[key]:
                dropped.append(queue.pop())
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

    def idle_counts(self) -> dict[PoolKey, int]:
        """Idle members per key that has any."""
        return {key: len(queue) for key, queue in self._idle.items() if queue}

    def is_idle_member(self, host_id: str) -> bool:
        """Whether ``host_id`` is an idle member right now."""
        return any(m.host_id == host_id for m in self.idle())


class Demand:
    """Recent creates per :class:`PoolKey`: what the pool is sized from (ADR 0038).

    Each create that could have been served from the pool is counted when it starts and
    when it ends. A key's demand is the largest of, over the last ``window_s``:

    * the creates of that key in flight at once (a create counts itself),
    * the creates of that key started within any ``burst_s`` (a burst served from the
      pool ends each create in tens of ms, so in-flight counts alone would under-count it:
      the pool would shrink after a burst it served and miss the next one), and
    * the creates of one busy period: each that started while another of the key was in
      flight belongs to the period of that one. The api hands a burst's creates to the
      node one after another when it is loaded (placement locks, ADR 0035), spread over
      seconds; a burst is still one period. Sequential creates (one client creating the
      next after the last returned) never overlap: periods of one.

    A key nobody created for ``window_s`` has no demand (its pool drains to its floor).
    ``clock`` is injectable for tests (monotonic seconds).
    """

    def __init__(
        self,
        *,
        window_s: float = 120.0,
        burst_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.burst_s = burst_s
        self._clock = clock
        #: key -> (time, demand seen then) of each start within the window, oldest first.
        self._starts: dict[PoolKey, deque[tuple[float, int]]] = {}
        self._in_flight: dict[PoolKey, int] = {}
        #: key -> creates in its current busy period.
        self._period: dict[PoolKey, int] = {}

    def started(self, key: PoolKey) -> None:
        """A create of ``key`` began."""
        now = self._clock()
        self._expire(now)
        starts = self._starts.setdefault(key, deque())
        flying = self._in_flight.get(key, 0) + 1
        self._in_flight[key] = flying
        recent = 1 + sum(1 for t, _ in starts if t > now - self.burst_s)
        period = self._period.get(key, 0) + 1 if flying > 1 else 1
        self._period[key] = period
        starts.append((now, max(flying, recent, period)))

    def ended(self, key: PoolKey) -> None:
        """A create of ``key`` ended (served, cold or failed)."""
        left = self._in_flight.get(key, 0) - 1
        if left > 0:
            self._in_flight[key] = left
        else:
            self._in_flight.pop(key, None)

    def peaks(self) -> dict[PoolKey, int]:
        """Each key's demand over the window (keys with none are left out)."""
        self._expire(self._clock())
        out = {key: max(n for _, n in starts) for key, starts in self._starts.items() if starts}
        for key, flying in self._in_flight.items():
            out[key] = max(out.get(key, 0), flying)
        return out

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        for key in list(self._starts):
            starts = self._starts[key]
            while starts and starts[0][0] <= horizon:
                starts.popleft()
            if not starts:
                del self._starts[key]
                if not self._in_flight.get(key):
                    self._period.pop(key, None)  # its next create starts a new one


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolBounds:
    """What a demand-sized pool may hold on one node (``NodeSettings.pool_*``)."""

    #: Most members of one key that demand alone may ask for (0: demand sizes nothing).
    max_per_key: int = 10
    #: Sum of the members' memory limits (MiB) that demand may fill; the floors count
    #: against it first and are kept even above it.
    memory_budget_mb: int = 0


def plan_targets(
    floors: Mapping[PoolKey, int],
    demand: Mapping[PoolKey, int],
    bounds: PoolBounds,
) -> dict[PoolKey, int]:
    """Each key's wanted size: its floor, raised towards its demand within ``bounds``.

    The floors (``HUTCH_NODE_POOL_SIZE``) are always kept. Above them, demand is capped at
    ``max_per_key`` and granted one member at a time, the key with the most unmet demand
    first (ties: the smaller member first, then the name), while the members' memory
    limits fit in ``memory_budget_mb``; a member that does not fit ends its key's share.
    """
    targets = {key: n for key, n in floors.items() if n > 0}
    used = sum(key.memory_mb * n for key, n in targets.items())
    want = {
        key: min(bounds.max_per_key, n) - targets.get(key, 0)
        for key, n in demand.items()
        if min(bounds.max_per_key, n) > targets.get(key, 0)
    }
    while want:
        key = min(want, key=lambda k: (-want[k], k.memory_mb, k.template, k.cpu_count))
        if used + key.memory_mb > bounds.memory_budget_mb:
            del want[key]
            continue
        used += key.memory_mb
        targets[key] = targets.get(key, 0) + 1
        want[key] -= 1
        if want[key] <= 0:
            del want[key]
    return targets
