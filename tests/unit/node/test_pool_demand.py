"""Demand-sized warm pools (ADR 0038): the window of recent creates, the sizing within
bounds, and the keeper that boots members low and raises them when taken (fake clock,
fake host: no runc)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from hutch.node import cpu_weight
from hutch.node.bundle import SandboxSpec, build_spec
from hutch.node.sandbox.models import ManagerConfig, RunningSandbox, SandboxRequest
from hutch.node.sandbox.pool import Demand, PoolBounds, PoolKey, WarmPool, plan_targets
from hutch.node.sandbox.pool_keeper import PoolKeeper
from hutch.node.settings import NodeSettings
from hutch.node.templates.artifact import TemplateArtifact, TemplateNotFoundError

BASE = PoolKey(template="base", cpu_count=2.0, memory_mb=1024, allow_internet=True)
BUSYBOX = PoolKey(template="busybox", cpu_count=1.0, memory_mb=128, allow_internet=True)
IMAGE = PoolKey(template="image", cpu_count=1.0, memory_mb=512, allow_internet=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_demand_counts_creates_in_flight_and_bursts_within_the_window() -> None:
    clock = Clock()
    demand = Demand(window_s=60, burst_s=1, clock=clock)
    assert demand.peaks() == {}
    for _ in range(3):  # three at once
        demand.started(BUSYBOX)
    assert demand.peaks() == {BUSYBOX: 3}
    for _ in range(3):
        demand.ended(BUSYBOX)
    # A burst served from the pool: each create ends before the next starts, but five
    # start within one second: still a burst of five.
    clock.now += 10
    for _ in range(5):
        demand.started(IMAGE)
        demand.ended(IMAGE)
        clock.now += 0.1
    assert demand.peaks() == {BUSYBOX: 3, IMAGE: 5}
    # Sequential creates a second apart: demand 1 each, the peaks stay for the window.
    for _ in range(3):
        clock.now += 1.5
        demand.started(BASE)
        demand.ended(BASE)
    assert demand.peaks() == {BUSYBOX: 3, IMAGE: 5, BASE: 1}
    clock.now += 50  # busybox's burst is 65 s old, image's 55
    assert demand.peaks() == {IMAGE: 5, BASE: 1}
    clock.now += 60
    assert demand.peaks() == {}


def test_demand_counts_a_burst_the_api_hands_over_one_after_another() -> None:
    """Ten creates a loaded api passes on over 5 s, each before the last one ended: one
    busy period of ten, although never more than two ran at once nor three in a second."""
    clock = Clock()
    demand = Demand(window_s=60, burst_s=1, clock=clock)
    demand.started(BASE)
    for _ in range(9):
        clock.now += 0.5
        demand.started(BASE)  # the next arrives while the one before still runs
        demand.ended(BASE)
    demand.ended(BASE)
    assert demand.peaks() == {BASE: 10}
    # Creates that never overlap are periods of one each.
    clock.now += 5
    demand.started(BUSYBOX)
    demand.ended(BUSYBOX)
    clock.now += 5
    demand.started(BUSYBOX)
    demand.ended(BUSYBOX)
    assert demand.peaks()[BUSYBOX] == 1


def test_demand_keeps_a_create_still_in_flight_past_the_window() -> None:
    clock = Clock()
    demand = Demand(window_s=10, burst_s=1, clock=clock)
    demand.started(BASE)
    clock.now += 30  # a very slow create
    assert demand.peaks() == {BASE: 1}
    demand.ended(BASE)
    assert demand.peaks() == {}


def test_plan_keeps_floors_raises_to_demand_and_caps_per_key() -> None:
    bounds = PoolBounds(max_per_key=10, memory_budget_mb=100_000)
    assert plan_targets({BASE: 2}, {}, bounds) == {BASE: 2}
    assert plan_targets({BASE: 2}, {BASE: 1}, bounds) == {BASE: 2}  # floor kept
    assert plan_targets({BASE: 2}, {BASE: 7, BUSYBOX: 3}, bounds) == {BASE: 7, BUSYBOX: 3}
    assert plan_targets({BASE: 2}, {BASE: 100, IMAGE: 40}, bounds) == {BASE: 10, IMAGE: 10}
    # A floor above the cap is still a floor.
    assert plan_targets({BASE: 12}, {BASE: 100}, bounds) == {BASE: 12}
    # max_per_key 0: demand sizes nothing, floors only (the pre-ADR-0038 pool).
    off = PoolBounds(max_per_key=0, memory_budget_mb=100_000)
    assert plan_targets({BASE: 2}, {BASE: 9, BUSYBOX: 9}, off) == {BASE: 2}


def test_plan_fits_demand_in_the_memory_budget_most_wanted_first() -> None:
    # 4096 MiB: base's floor of 2 takes 2048; demand shares the other 2048.
    bounds = PoolBounds(max_per_key=10, memory_budget_mb=4096)
    plan = plan_targets({BASE: 2}, {BASE: 6, BUSYBOX: 4, IMAGE: 2}, bounds)
    used = sum(k.memory_mb * n for k, n in plan.items())
    assert used <= 4096
    # Round robin by unmet demand: base (4 more wanted) gets 1024 ones until busybox
    # (4) and image (2) are as hungry; base's next one no longer fits, the small ones do.
    assert plan[BASE] >= 2 and plan[BUSYBOX] == 4 and plan.get(IMAGE, 0) >= 1
    # The floors are kept even when they alone pass the budget; nothing above them.
    assert plan_targets({BASE: 6}, {BUSYBOX: 3}, bounds) == {BASE: 6}


def test_warm_pool_gives_back_surplus_when_a_key_shrinks() -> None:
    pool = WarmPool({BUSYBOX: 3})
    members = [_member(f"pool-{i}") for i in range(3)]
    for member in members:
        pool.add(BUSYBOX, member)
    dropped = pool.retarget({BUSYBOX: 1})
    assert [m.host_id for m in dropped] == ["pool-2", "pool-1"]  # newest first
    assert pool.idle_counts() == {BUSYBOX: 1}
    assert pool.retarget({}) == [members[0]]


def test_settings_pool_demand_defaults_and_budget() -> None:
    s = NodeSettings(home=Path("/nonexistent"))
    assert (s.pool_max_per_template, s.pool_cpu_weight, s.pool_window_s) == (10, 1, 120.0)
    assert s.pool_memory_budget_mb(24_000) == 24_000
    capped = NodeSettings(home=Path("/nonexistent"), capacity_memory_mb=8000)
    assert capped.pool_memory_budget_mb(24_000) == 8000
    fixed = NodeSettings(home=Path("/nonexistent"), pool_memory_mb=3000)
    assert fixed.pool_memory_budget_mb(24_000) == 3000
    with pytest.raises(ValueError):
        NodeSettings(home=Path("/nonexistent"), pool_cpu_weight=0)


def test_cpu_weight_scales_between_cgroup_versions(tmp_path: Path) -> None:
    assert cpu_weight.shares_of(100) == 1024 and cpu_weight.shares_of(1) == 10
    assert cpu_weight.weight_of_shares(1024) == 100 and cpu_weight.weight_of_shares(10) == 1
    v1, v2 = tmp_path / "cpu", tmp_path / "unified"
    v1.mkdir()
    v2.mkdir()
    cpu_weight.write_weight({"cpu": v1, "memory": tmp_path}, 1)
    assert (v1 / "cpu.shares").read_text() == "10\n"
    assert cpu_weight.read_weight({"cpu": v1}) == 1
    cpu_weight.write_weight({"unified": v2}, 100)
    assert (v2 / "cpu.weight").read_text() == "100\n"
    with pytest.raises(FileNotFoundError):
        cpu_weight.write_weight({"memory": tmp_path}, 5)
    # The OCI spec carries a low weight as shares; none by default (the kernel's).
    spec = SandboxSpec(sandbox_id="s1", rootfs=tmp_path, args=["/bin/true"])
    assert "shares" not in build_spec(spec)["linux"]["resources"]["cpu"]
    low = dataclasses.replace(spec, cpu_weight=1)
    assert build_spec(low)["linux"]["resources"]["cpu"]["shares"] == 10


# ---- the keeper over a fake host ----------------------------------------------------------


def _member(host_id: str, template: str = "busybox", root: Path = Path("/x")) -> RunningSandbox:
    return RunningSandbox(
        sandbox_id=host_id, template=template, address=IPv4Address("10.0.0.2"),
        envd_url="http://10.0.0.2:49983", pid=4242, cpu_count=1.0, memory_mb=128,
        default_user="user", workdir="/home/user", started_at=0.0, sandbox_dir=root / host_id,
    )  # fmt: skip


class _Templates:
    def __init__(self, root: Path, names: dict[str, int]) -> None:
        self.artifacts = {}
        for name, memory in names.items():
            (root / name).mkdir(parents=True)
            self.artifacts[name] = TemplateArtifact(
                name=name, rootfs=root / name, memory_mb=memory, disk_mb=64
            )

    async def get(self, name: str) -> TemplateArtifact:
        try:
            return self.artifacts[name]
        except KeyError:
            raise TemplateNotFoundError(f"no template {name}") from None


class _Runtime:
    async def set_hostname(self, host_id: str, hostname: str) -> None:
        pass


class _Envd:
    def __init__(self) -> None:
        self.inits: list[str] = []

    async def init(self, url: str, body: object) -> None:
        self.inits.append(url)


class _Host:
    """What ``PoolKeeper`` uses of ``SandboxHost``: boot makes a directory, no container."""

    def __init__(self, root: Path, config: ManagerConfig) -> None:
        self.config = config
        self.busy: set[str] = set()
        self.running: dict[str, RunningSandbox] = {}
        self.templates = _Templates(root / "templates", {"busybox": 128, "base": 1024})
        self.runtime = _Runtime()
        self.envd = _Envd()
        self.booted: list[SandboxRequest] = []
        self.destroyed: list[str] = []
        self.pids = iter(range(1000, 2000))

    async def boot(
        self, request: SandboxRequest, *, template: TemplateArtifact, undo: list[object]
    ) -> RunningSandbox:
        self.booted.append(request)
        etc = self.config.sandboxes_dir / request.sandbox_id / "rootfs" / "etc"
        etc.mkdir(parents=True)
        for name in ("hostname", "hosts"):  # written at boot, rewritten when taken
            (etc / name).write_text(request.sandbox_id)
        await asyncio.sleep(0)  # a real boot waits for runc and envd
        member = _member(request.sandbox_id, template.name, self.config.sandboxes_dir)
        return dataclasses.replace(member, pid=next(self.pids), memory_mb=template.memory_mb)

    async def destroy(self, host_id: str, *, address: IPv4Address | None = None) -> bool:
        self.destroyed.append(host_id)
        return True


async def _settle(keeper: PoolKeeper, host: _Host, size: int) -> None:
    """Until the keeper's idle members number ``size`` (the refill is a background task)."""
    for _ in range(500):
        keeper.wake()
        await asyncio.sleep(0.005)
        if len(keeper.pool_members()) == size and not keeper.host_ids() - {
            m.host_id for m in keeper.pool_members()
        }:
            return
    raise AssertionError(f"pool has {len(keeper.pool_members())} members, not {size}")


async def test_keeper_sizes_from_demand_boots_low_and_raises_a_taken_member(
    tmp_path: Path,
) -> None:
    clock = Clock()
    weights: dict[int, int] = {}
    config = ManagerConfig(
        sandboxes_dir=tmp_path / "sandboxes", envd_bundle_dir=tmp_path, tini_path=tmp_path,
        pool_sizes={"base": 1}, pool_max_per_template=4, pool_memory_mb=4096,
        pool_window_s=60, pool_recheck_s=0.01, pool_cpu_weight=1,
    )  # fmt: skip
    host = _Host(tmp_path, config)
    keeper = PoolKeeper(
        host,  # type: ignore[arg-type]
        clock=clock,
        set_cpu_weight=lambda pid, host_id, w: weights.__setitem__(pid, w),
    )
    busybox = await host.templates.get("busybox")
    await keeper.start_pool()
    try:
        await _settle(keeper, host, 1)  # base's floor only: nobody asked for busybox yet
        assert keeper.pool_targets() == {"base": 1}
        assert all(r.cpu_weight == 1 for r in host.booted)  # members boot low

        # Three busybox creates at once (none served: the pool had none of it).
        requests = [SandboxRequest(sandbox_id=f"sbx{i}", template="busybox") for i in range(3)]
        with contextlib.ExitStack() as stack:
            for request in requests:
                stack.enter_context(keeper.counting(request, template=busybox))
            host.busy.update(r.sandbox_id for r in requests)
            await asyncio.sleep(0.05)
            # No member boots while live creates are in flight.
            assert len(host.booted) == 1
            host.busy.clear()
        await _settle(keeper, host, 4)
        assert keeper.pool_targets() == {"base": 1, "busybox": 3}

        # Five more at once: busybox grows to the cap of 4, no further.
        with contextlib.ExitStack() as stack:
            for i in range(5):
                stack.enter_context(keeper.counting(requests[0], template=busybox))
                host.busy.add(f"more{i}")
                await asyncio.sleep(0.02)
            host.busy.clear()
        await _settle(keeper, host, 5)
        assert keeper.pool_targets() == {"base": 1, "busybox": 4}  # capped per key

        # A create takes one: its weight goes back to normal before its envd's /init.
        sandbox = await keeper.from_pool(
            SandboxRequest(sandbox_id="sbx9", template="busybox"), template=busybox
        )
        assert sandbox is not None and sandbox.sandbox_id == "sbx9"
        assert weights == {sandbox.pid: cpu_weight.NORMAL}
        assert len(host.envd.inits) == 1
        await _settle(keeper, host, 5)  # refilled to busybox's demand
        # A create with volumes, or without internet, is no demand (it never takes one).
        cold = SandboxRequest(sandbox_id="x", template="busybox", allow_internet=False)
        assert keeper.key_of(cold, template=busybox) is None

        # Nobody creates busybox for the window: it drains back to nothing, base keeps 1.
        clock.now += 61
        await _settle(keeper, host, 1)
        assert keeper.pool_targets() == {"base": 1}
        assert [m.template for m in keeper.pool_members()] == ["base"]
        assert len(host.destroyed) == 4
    finally:
        await keeper.stop_pool()
    assert len(host.destroyed) == 5  # and shutdown destroys the idle one


async def test_keeper_without_floors_or_demand_keeps_no_pool(tmp_path: Path) -> None:
    config = ManagerConfig(
        sandboxes_dir=tmp_path / "sandboxes", envd_bundle_dir=tmp_path, tini_path=tmp_path,
        pool_sizes={}, pool_max_per_template=10,
    )  # fmt: skip
    keeper = PoolKeeper(_Host(tmp_path, config))  # type: ignore[arg-type]
    assert not keeper.enabled  # HUTCH_NODE_POOL_SIZE empty: off, demand or not
    demand_only = dataclasses.replace(config, pool_sizes={"base": 0})
    assert PoolKeeper(_Host(tmp_path / "b", demand_only)).enabled  # type: ignore[arg-type]
    floors_only = dataclasses.replace(config, pool_sizes={"base": 0}, pool_max_per_template=0)
    assert not PoolKeeper(_Host(tmp_path / "c", floors_only)).enabled  # type: ignore[arg-type]
