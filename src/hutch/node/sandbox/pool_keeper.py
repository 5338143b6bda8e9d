"""``PoolKeeper``: the event-loop side of the warm pool (ADR 0011) the manager owns.

``pool.py`` keeps the books (which members wait under which :class:`PoolKey`); this
module boots members in the background, refills, replaces members of a rebuilt template,
hands a matching member to a create and personalises it: hostname, ``/etc/hostname`` and
``/etc/hosts`` are set to the new id, then ``/init``. Such a sandbox keeps its pool id as
``host_id`` (directory, container, cgroup, netns and veth names), recorded in its
``sandbox.json`` so that kill and reconcile find it.

Sizes (ADR 0038): each template named in ``pool_sizes`` keeps that many (its floor); above
the floors, every key gets what its recent demand asks for (:class:`Demand`), capped per
key and by a memory budget (:func:`plan_targets`), and drains back to its floor once
nobody created it for ``pool_window_s``. Refill never competes with live traffic: a
member's boot starts only while no create or kill is in flight, runs in the background
(its ``runc``/``ip`` processes niced, ``cpu_weight.BACKGROUND``) and its container boots
with a low cgroup CPU weight, raised to the normal one when a create takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator

from hutch.node import cpu_weight
from hutch.node.sandbox import lifecycle
from hutch.node.sandbox.host import SandboxHost, init_body
from hutch.node.sandbox.models import RunningSandbox, SandboxRequest, effective_policy
from hutch.node.sandbox.pool import (
    Demand,
    PoolBounds,
    PoolKey,
    WarmPool,
    new_pool_id,
    plan_targets,
)
from hutch.node.sandbox.records import write_record
from hutch.node.sandbox.undo import Undo, unwind
from hutch.node.templates.artifact import TemplateArtifact
from hutch.shared.errors import HutchError

log = logging.getLogger("hutch.node.sandbox")

#: How often the pool's refill looks again whether user creates are still in flight.
_POOL_YIELD_S = 0.02


class PoolKeeper:
    """Keeps members per key booted on ``host``: the floors of ``config.pool_sizes``,
    raised by recent demand (ADR 0038).

    ``clock`` (monotonic seconds) and ``set_cpu_weight`` (``(pid, host id, weight)``) are
    injectable for tests; by default the real clock and cgroup files.
    """

    def __init__(
        self,
        host: SandboxHost,
        *,
        clock: Callable[[], float] = time.monotonic,
        set_cpu_weight: Callable[[int, str, int], None] = cpu_weight.set_sandbox_weight,
    ) -> None:
        self._host = host
        self._config = host.config
        self._set_cpu_weight = set_cpu_weight
        self._demand = Demand(
            window_s=self._config.pool_window_s, burst_s=self._config.pool_burst_s, clock=clock
        )
        self._bounds = PoolBounds(
            max_per_key=self._config.pool_max_per_template,
            memory_budget_mb=self._config.pool_memory_mb,
        )
        #: Host ids of pool members being booted or personalised (reconcile leaves them).
        self._hosts_in_flight: set[str] = set()
        self._pool = WarmPool({})
        #: host id -> the template's stamp when that member booted (a rebuilt template
        #: makes older members stale).
        self._member_stamps: dict[str, str] = {}
        self._pool_task: asyncio.Task[None] | None = None
        #: Pool templates not built here (logged once until they appear).
        self._pool_missing: set[str] = set()
        self._pool_wakeup = asyncio.Event()

    async def start_pool(self) -> None:
        """Start keeping ``config.pool_sizes`` members per template; call after reconcile.

        Members boot one at a time in the background, so refills never take both cores
        from user creates. The templates are looked at again on every pass (and at least
        every ``pool_recheck_s``): one built after the start gets its pool then, and
        members of a template rebuilt since they booted are replaced.
        """
        if self._pool_task is None and self.enabled:
            self._pool_task = asyncio.create_task(self._keep_pool(), name="hutch-warm-pool")

    @property
    def enabled(self) -> bool:
        """Whether this node keeps a pool: a floor above 0, or demand sizing on with any
        template named (``HUTCH_NODE_POOL_SIZE`` empty: no pool at all)."""
        floors = self._config.pool_sizes
        return any(n > 0 for n in floors.values()) or (
            bool(floors) and self._bounds.max_per_key > 0
        )

    async def stop_pool(self) -> None:
        """Stop refilling and destroy every idle member (shutdown). Idempotent."""
        task, self._pool_task = self._pool_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for member in self._pool.drain():
            await self._discard_member(member)

    def pool_members(self) -> list[RunningSandbox]:
        """The idle members (for tests and metrics)."""
        return list(self._pool.idle())

    def pool_targets(self) -> dict[str, int]:
        """Members wanted per template now (floors raised by demand), summed over keys."""
        out: Counter[str] = Counter()
        for key, n in self._pool.targets.items():
            out[key.template] += n
        return dict(out)

    @contextlib.contextmanager
    def counting(self, request: SandboxRequest, *, template: TemplateArtifact) -> Iterator[None]:
        """Count a create the pool could serve as demand while it runs (ADR 0038)."""
        key = self.key_of(request, template=template)
        if self._pool_task is None or key is None:
            yield
            return
        self._demand.started(key)
        self._pool_wakeup.set()  # a key's first create: look at the targets again
        try:
            yield
        finally:
            self._demand.ended(key)

    def key_of(self, request: SandboxRequest, *, template: TemplateArtifact) -> PoolKey | None:
        """The key a create takes a member of; None: it never takes one (volumes, a build,
        or no internet at all: members boot with internet access)."""
        if request.volume_mounts or request.artifact is not None:
            return None
        if effective_policy(request).blocks_all:
            return None
        return pool_key(template, cpu=request.cpu_count, memory=request.memory_mb,
                        disk=request.disk_mb, allow_internet=True,
                        default_disk_mb=self._config.default_disk_mb)  # fmt: skip

    def host_ids(self) -> set[str]:
        """Host ids of this process's own members, idle or on their way (reconcile leaves them)."""
        return self._hosts_in_flight | {m.host_id for m in self._pool.idle()}

    def wake(self) -> None:
        """Look again now whether the pool is short (a member was taken, or room freed)."""
        self._pool_wakeup.set()

    async def _keep_pool(self) -> None:
        cpu_weight.BACKGROUND.set(True)  # this task's runc and ip processes are niced
        while True:
            self._pool_wakeup.clear()
            try:
                await self._retarget()
                await self._refill()
            except Exception:  # a bug must not end the refill for good: log, retry later
                log.exception("warm pool: refill failed")
                await asyncio.sleep(self._config.pool_retry_s)
                continue
            if not self._pool.missing() or not self._room_for_pool():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._pool_wakeup.wait(), timeout=self._config.pool_recheck_s
                    )

    async def _retarget(self) -> None:
        """Targets from the floors, recent demand and the templates as they are now;
        discard members that no longer fit (a template gone or rebuilt, demand passed)."""
        floors: dict[PoolKey, int] = {}
        stamps: dict[str, str] = {}
        for name, size in self._config.pool_sizes.items():
            if size <= 0:
                continue
            template = await self._template(name)
            if template is None:
                continue
            key = pool_key(template, cpu=None, memory=None, disk=None, allow_internet=True,
                           default_disk_mb=self._config.default_disk_mb)  # fmt: skip
            floors[key] = size
            stamps[name] = template_stamp(template)
        demand = self._demand.peaks() if self._bounds.max_per_key > 0 else {}
        for name in {key.template for key in demand} - set(stamps):
            template = await self._template(name, quiet=True)
            if template is not None:
                stamps[name] = template_stamp(template)
        demand = {key: n for key, n in demand.items() if key.template in stamps}
        targets = plan_targets(floors, demand, self._bounds)
        if targets != self._pool.targets:
            log.info("warm pool: targets %s", ", ".join(
                f"{k.template}/{k.cpu_count:g}cpu/{k.memory_mb}MiB={n}"
                for k, n in sorted(targets.items(), key=lambda kv: kv[0].template)
            ) or "none")  # fmt: skip
        for member in self._pool.retarget(targets):
            await self._discard_member(member)
        for member in list(self._pool.idle()):
            # remove() first: a create may have taken it while an earlier one was destroyed.
            stale = self._member_stamps.get(member.host_id) != stamps.get(member.template)
            if stale and self._pool.remove(member):
                await self._discard_member(member)

    async def _template(self, name: str, *, quiet: bool = False) -> TemplateArtifact | None:
        try:
            template = await self._host.templates.get(name)
        except HutchError:  # not built (yet), or unreadable
            if not quiet and name not in self._pool_missing:
                log.warning("warm pool: template %s is not built here (yet)", name)
                self._pool_missing.add(name)
            return None
        self._pool_missing.discard(name)
        return template

    async def _discard_member(self, member: RunningSandbox) -> None:
        self._member_stamps.pop(member.host_id, None)
        await self._host.destroy(member.host_id, address=member.address)

    async def _refill(self) -> None:
        while True:
            # User creates first: a member's boot costs the CPU of a cold create, so it
            # starts only while no create or kill is in flight (on 2 cores it would slow them).
            waited = False
            while self._host.busy:
                waited = True
                await asyncio.sleep(_POOL_YIELD_S)
            if waited:  # the creates that just ran are demand the targets have not seen
                await self._retarget()
            missing = self._pool.missing()  # the emptiest key first
            if not missing or not self._room_for_pool():
                return
            if not await self._boot_member(missing[0]):
                await asyncio.sleep(self._config.pool_retry_s)
                return

    def _room_for_pool(self) -> bool:
        used = len(self._host.running) + len(self._host.busy) + self._pool.size()
        return used < self._config.max_sandboxes

    async def _boot_member(self, key: PoolKey) -> bool:
        host_id = new_pool_id()
        request = SandboxRequest(
            sandbox_id=host_id, template=key.template, cpu_count=key.cpu_count,
            memory_mb=key.memory_mb, allow_internet=key.allow_internet, disk_mb=key.disk_mb,
            cpu_weight=self._config.pool_cpu_weight,
        )  # fmt: skip
        undo: list[Undo] = []
        self._hosts_in_flight.add(host_id)
        self._pool.booting(key, +1)
        try:
            template = await self._host.templates.get(key.template)
            member = await self._host.boot(request, template=template, undo=undo)
        except BaseException as exc:
            await unwind(undo, sandbox_id=host_id)
            if not isinstance(exc, HutchError | OSError):
                raise
            log.warning("warm pool: booting a %s member failed: %s", key.template, exc)
            return False
        finally:
            self._pool.booting(key, -1)
            self._hosts_in_flight.discard(host_id)
        self._member_stamps[host_id] = template_stamp(template)
        if not self._pool.add(key, member):  # the key's target went away meanwhile
            await self._discard_member(member)
            return True
        log.info("warm pool: %s member %s ready", key.template, host_id)
        return True

    async def from_pool(
        self, request: SandboxRequest, *, template: TemplateArtifact
    ) -> RunningSandbox | None:
        """A pool member personalised as ``request``, or None (no match: create cold).

        A member that cannot be personalised (or whose template was rebuilt since it
        booted) is destroyed, and the next one, or a cold create, is tried.
        """
        # Members boot with internet access. A policy that still allows some of it (deny
        # lists) is put in force on the taken member before its envd is /init-ed (no
        # user code ran in it yet); one that denies 0.0.0.0/0 keys a pool of its own,
        # which has no members (cold, as before policies existed).
        allow = not effective_policy(request).blocks_all
        key = pool_key(template, cpu=request.cpu_count, memory=request.memory_mb,
                       disk=request.disk_mb, allow_internet=allow,
                       default_disk_mb=self._config.default_disk_mb)  # fmt: skip
        while (member := self._pool.take(key)) is not None:
            self._pool_wakeup.set()
            fresh = self._member_stamps.pop(member.host_id, None) == template_stamp(template)
            self._hosts_in_flight.add(member.host_id)
            try:
                if fresh:
                    return await self._personalise(member, request, template=template)
            except (HutchError, OSError) as exc:
                log.warning("warm pool: member %s failed to become %s: %s",
                            member.host_id, request.sandbox_id, exc)  # fmt: skip
            except BaseException:
                await unwind([_destroy_step(self._host, member)], sandbox_id=member.host_id)
                raise
            finally:
                self._hosts_in_flight.discard(member.host_id)
            await self._host.destroy(member.host_id, address=member.address)
        return None

    async def _personalise(
        self, member: RunningSandbox, request: SandboxRequest, *, template: TemplateArtifact
    ) -> RunningSandbox:
        """Give a booted member ``request``'s identity; its envd gets ``/init`` last."""
        policy = effective_policy(request)
        if policy != member.egress:
            await self._host.networks.apply_policy(member.address, policy)
        sandbox = dataclasses.replace(
            member, sandbox_id=request.sandbox_id, started_at=time.time(),
            metadata=dict(request.metadata), egress=policy,
            allow_internet=not policy.blocks_all,
        )  # fmt: skip
        # Its weight back to normal first: from here on it is a user's sandbox.
        self._set_cpu_weight(member.pid, member.host_id, cpu_weight.NORMAL)
        await self._host.runtime.set_hostname(member.host_id, request.sandbox_id)
        lifecycle.write_identity(
            member.sandbox_dir / "rootfs", sandbox_id=request.sandbox_id, address=member.address
        )
        await self._host.envd.init(sandbox.envd_url, init_body(request, sandbox, template))
        write_record(sandbox)
        log.info("warm pool: member %s became sandbox %s", member.host_id, request.sandbox_id)
        return sandbox


def pool_key(
    template: TemplateArtifact,
    *,
    cpu: float | None,
    memory: int | None,
    allow_internet: bool,
    disk: int | None = None,
    default_disk_mb: int = 0,
) -> PoolKey:
    """The pool key of a create: its effective resources, the template's by default (the
    disk: the template's, else the node's ``default_disk_mb``)."""
    return PoolKey(
        template=template.name,
        cpu_count=float(cpu if cpu is not None else template.cpu_count),
        memory_mb=int(memory if memory is not None else template.memory_mb),
        allow_internet=allow_internet,
        disk_mb=int(disk or template.disk_mb or default_disk_mb),
    )


def template_stamp(template: TemplateArtifact) -> str:
    """Changes when the template is rebuilt (publishing renames a new directory in)."""
    try:
        st = template.rootfs.stat()
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}"


def _destroy_step(host: SandboxHost, member: RunningSandbox) -> Undo:
    async def run() -> None:
        await host.destroy(member.host_id, address=member.address)

    return run
