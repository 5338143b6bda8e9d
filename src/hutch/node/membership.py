"""The node's side of membership (ADR 0025): register with an api, then keep the lease.

The node is told api URLs (``HUTCH_NODE_CLUSTER_API_URLS``, comma-separated); it registers
with the first that answers (``POST /hutch/cluster/nodes``: its id, address, capacity,
labels, boot id and versions; the api reconciles the node's sandboxes before it answers)
and beats every ``heartbeat_interval_s`` the api gave it. When an api stops answering it
moves to the next URL; a heartbeat refused with 404 (unknown or lost) or 409 (another
boot) registers again. A registration refused as incompatible (409
``node_version_incompatible``) or unauthenticated (401) is final: :class:`RegistrationRefused`.

``hutch serve`` runs the same :class:`Registrar` over an in-process transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import httpx

from hutch.node.settings import NodeSettings
from hutch.shared import clusterwire as wire

log = logging.getLogger("hutch.node.membership")

#: How long to wait between rounds over every URL when none answered.
_RETRY_S = 1.0
_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class RegistrationRefused(Exception):
    """The api refused the node for good (incompatible version, wrong token)."""


def host_boot_id() -> str:
    """The kernel's boot id: the same across node restarts, new after a host reboot."""
    return _BOOT_ID.read_text().strip()


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[name] = int(parts[0])  # kB
    return values


def measure_capacity(home: Path, *, max_sandboxes: int, cpu_count: int = 0,
                     memory_mb: int = 0, disk_mb: int = 0) -> wire.Capacity:  # fmt: skip
    """The host's CPUs, memory and the home's disk (each overridden when non-zero)."""
    total_disk = shutil.disk_usage(home).total >> 20 if home.exists() else 0
    return wire.Capacity(
        cpu_count=cpu_count or os.cpu_count() or 1,
        memory_mb=memory_mb or max(1, _meminfo().get("MemTotal", 0) >> 10),
        disk_mb=disk_mb or total_disk,
        max_sandboxes=max_sandboxes,
    )


class CpuMeter:
    """The host's CPU utilisation (0..100) between two reads of ``/proc/stat``.

    Each :meth:`read` gives the busy share of all CPUs' time since the previous read (the
    first: since boot), as E2B's orchestrator does (gopsutil ``cpu.Percent(0)``): unlike
    the load average it counts time, not runnable tasks, so it cannot pass 100.
    """

    def __init__(self, stat: Path = Path("/proc/stat")) -> None:
        self._stat = stat
        self._last = (0, 0)

    def _sample(self) -> tuple[int, int]:
        """(busy, total) jiffies of the ``cpu`` line; guest time is already in user/nice."""
        try:
            line = self._stat.read_text().splitlines()[0].split()
        except (OSError, IndexError):
            return self._last
        ticks = [int(x) for x in line[1:9]]  # user nice system idle iowait irq softirq steal
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        return sum(ticks) - idle, sum(ticks)

    def read(self) -> float:
        """Percent of CPU time busy since the previous read, 0..100 (0 if no time passed)."""
        busy, total = self._sample()
        d_busy, d_total = busy - self._last[0], total - self._last[1]
        self._last = (busy, total)
        if d_total <= 0:
            return 0.0
        return round(min(100.0, max(0.0, 100.0 * d_busy / d_total)), 1)


def measure_usage(home: Path, *, cpu: CpuMeter) -> wire.Usage:
    """The host's load now: CPU utilisation since the last measure, memory and the home's
    disk."""
    info = _meminfo()
    used_mb = max(0, info.get("MemTotal", 0) - info.get("MemAvailable", 0)) >> 10
    disk = shutil.disk_usage(home).used >> 20 if home.exists() else 0
    return wire.Usage(cpu_pct=cpu.read(), memory_used_mb=used_mb, disk_used_mb=disk)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("message") or body)
    except ValueError:
        return response.text


class Registrar:
    """Registers the node and renews its lease (see the module docstring)."""

    def __init__(
        self,
        *,
        api_urls: Sequence[str],
        token: str,
        registration: Callable[[], Awaitable[wire.RegisterNode]],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not api_urls:
            raise ValueError("no api URL to register with (HUTCH_NODE_CLUSTER_API_URLS)")
        self._urls = [u.rstrip("/") for u in api_urls]
        self._current = 0
        self._registration = registration
        self._http = httpx.AsyncClient(
            transport=transport, headers={"Authorization": f"Bearer {token}"}, timeout=_TIMEOUT
        )
        self.lease: wire.Lease | None = None
        #: How many times the node registered (the first one and every re-registration).
        self.registrations = 0

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _post(self, path: str, body: wire.RegisterNode | wire.Heartbeat) -> httpx.Response:
        """POST to the current api, moving on to the next one while none answers."""
        tried = 0
        while True:
            url = self._urls[self._current]
            try:
                return await self._http.post(
                    url + wire.CLUSTER_PREFIX + path, content=body.model_dump_json(),
                    headers={"Content-Type": "application/json"},
                )  # fmt: skip
            except httpx.TransportError as exc:
                log.warning("api %s did not answer %s: %s", url, path, exc)
            self._current = (self._current + 1) % len(self._urls)
            tried += 1
            if tried % len(self._urls) == 0:
                await asyncio.sleep(_RETRY_S)

    async def register(self) -> wire.Lease:
        """Register (waiting for an api to answer); :class:`RegistrationRefused` if it
        refuses the node."""
        while True:
            body = await self._registration()
            response = await self._post("/nodes", body)
            if response.status_code == 200:
                self.lease = wire.Lease.model_validate_json(response.content)
                self.registrations += 1
                log.info(
                    "registered as %s (%s) with %s: lease %.0f s, adopted %d, removed %d",
                    self.lease.node_id, self.lease.status, self._urls[self._current],
                    self.lease.lease_s, len(self.lease.adopted), len(self.lease.removed),
                )  # fmt: skip
                return self.lease
            if response.status_code in (400, 401, 403, 409):
                raise RegistrationRefused(
                    f"the api at {self._urls[self._current]} refused node {body.node_id}: "
                    f"{response.status_code} {_message(response)}"
                )
            log.warning("registration answered %s: %s", response.status_code, _message(response))
            self._current = (self._current + 1) % len(self._urls)
            await asyncio.sleep(_RETRY_S)

    async def beat(self) -> wire.Lease:
        """One heartbeat (registering again when the api no longer knows this boot)."""
        if self.lease is None:
            return await self.register()
        body = await self._registration()
        beat = wire.Heartbeat(boot_id=body.boot_id, usage=body.usage, templates=body.templates)
        response = await self._post(f"/nodes/{body.node_id}/heartbeat", beat)
        if response.status_code == 200:
            self.lease = wire.Lease.model_validate_json(response.content)
            return self.lease
        if response.status_code in (404, 409):
            log.warning("heartbeat refused (%s: %s); registering again",
                        response.status_code, _message(response))  # fmt: skip
            return await self.register()
        log.warning("heartbeat answered %s: %s", response.status_code, _message(response))
        self._current = (self._current + 1) % len(self._urls)
        return self.lease

    async def run(self) -> None:
        """Beat forever (until cancelled); failures are logged, never raised, except a
        final refusal."""
        while True:
            interval = self.lease.heartbeat_interval_s if self.lease else _RETRY_S
            await asyncio.sleep(interval)
            try:
                await self.beat()
            except RegistrationRefused:
                raise
            except Exception:
                log.exception("heartbeat failed")


def registration_factory(
    settings: NodeSettings,
    *,
    node_id: str,
    address: str,
    version: str,
    templates: Callable[[], Awaitable[Sequence[str]]] | None = None,
) -> Callable[[], Awaitable[wire.RegisterNode]]:
    """What the node registers as, measured anew at each call (usage and templates
    change)."""
    from hutch.shared.nodewire import API_VERSION

    boot_id = settings.boot_id or host_boot_id()
    # One per process: the api keeps this process's creates in flight across its
    # registrations and cleans only a previous process's (ADR 0033).
    incarnation = uuid.uuid4().hex
    capacity = measure_capacity(
        settings.home, max_sandboxes=settings.max_sandboxes,
        cpu_count=settings.capacity_cpu_count, memory_mb=settings.capacity_memory_mb,
        disk_mb=settings.capacity_disk_mb,
    )  # fmt: skip
    labels = settings.label_map
    cpu = CpuMeter()  # each heartbeat reports the utilisation since the previous one

    async def build() -> wire.RegisterNode:
        held = sorted(await templates()) if templates is not None else []
        return wire.RegisterNode(
            node_id=node_id, address=address, api_version=API_VERSION, version=version,
            boot_id=boot_id, incarnation=incarnation, capacity=capacity, labels=labels,
            usage=measure_usage(settings.home, cpu=cpu),
            templates=held,
        )  # fmt: skip

    return build
