"""``UsageSampler``: cpu percentages, rings, disk walks, dropped sandboxes (fake probe)."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

from hutch.node.sandbox.models import RunningSandbox
from hutch.node.sandbox.ports import SandboxUsage
from hutch.node.sandbox.sampler import UsageSampler

MIB = 2**20


def _sandbox(sid: str) -> RunningSandbox:
    return RunningSandbox(
        sandbox_id=sid, template="busybox", address=IPv4Address("10.0.0.2"), envd_url="",
        pid=1, cpu_count=2.0, memory_mb=256, default_user="root", workdir="/",
        started_at=1000.0, sandbox_dir=Path("/nonexistent"),
    )  # fmt: skip


class FakeProbe:
    def __init__(self) -> None:
        self.cpu_ns = 0
        self.disk_reads = 0
        self.gone: set[str] = set()

    def read(self, sandbox: RunningSandbox, *, with_disk: bool) -> SandboxUsage:
        if sandbox.sandbox_id in self.gone:
            raise FileNotFoundError(sandbox.sandbox_id)
        if with_disk:
            self.disk_reads += 1
        return SandboxUsage(
            cpu_time_ns=self.cpu_ns, cpu_limit=None, mem_used=10 * MIB, mem_limit=None,
            mem_cache=MIB, disk_used=4096 * self.disk_reads if with_disk else None,
            disk_total=10**9 if with_disk else None,
        )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1010.0

    def __call__(self) -> float:
        return self.now


async def test_sampler_cpu_pct_ring_and_disk_every() -> None:
    probe, clock = FakeProbe(), Clock()
    running = [_sandbox("a")]
    sampler = UsageSampler(
        sandboxes=lambda: running, probe=probe, keep=3, disk_every=2,
        clock=clock, monotonic=clock,
    )  # fmt: skip
    probe.cpu_ns = 2 * 10**9  # 2 CPU-seconds in the 10 s since start, of 2 CPUs: 10%
    await sampler.sample_all()
    first = sampler.latest("a")
    assert first is not None
    assert (first.cpu_used_pct, first.cpu_count, first.mem_total) == (10.0, 2, 256 * MIB)
    assert (first.disk_used, first.disk_total) == (4096, 10**9)
    for _ in range(3):
        clock.now += 5
        probe.cpu_ns += 5 * 10**9  # one full CPU of two
        await sampler.sample_all()
    samples = sampler.samples("a")
    assert len(samples) == 3  # ring of 3
    assert [s.cpu_used_pct for s in samples] == [50.0, 50.0, 50.0]
    assert probe.disk_reads == 2  # ticks 0 and 2; the others repeat the last walk
    assert [s.disk_used for s in samples] == [4096, 8192, 8192]
    assert [s.timestamp for s in sampler.samples("a", start=1020, end=1025)] == [1020, 1025]


async def test_sampler_drops_gone_sandboxes_and_caps_pct() -> None:
    probe, clock = FakeProbe(), Clock()
    running = [_sandbox("a"), replace(_sandbox("b"), cpu_count=0.5)]
    sampler = UsageSampler(sandboxes=lambda: running, probe=probe, clock=clock, monotonic=clock)
    probe.cpu_ns = 100 * 10**9
    await sampler.sample_all()
    b = sampler.latest("b")
    assert b is not None and b.cpu_used_pct == 100.0 and b.cpu_count == 1
    probe.gone.add("a")  # killed between list and read: no sample, no error
    clock.now += 5
    await sampler.sample_all()
    assert len(sampler.samples("a")) == 1
    running.pop(0)
    await sampler.sample_all()
    assert sampler.samples("a") == [] and sampler.latest("a") is None
    assert len(sampler.samples("b")) == 3


async def test_sampler_samples_filesystem_pauses_and_survives_a_reboot() -> None:
    probe, clock = FakeProbe(), Clock()
    running = [_sandbox("a")]
    sampler = UsageSampler(sandboxes=lambda: running, probe=probe, clock=clock, monotonic=clock)
    probe.cpu_ns = 50 * 10**9
    await sampler.sample_all()
    running[0] = replace(running[0], paused="filesystem")
    probe.cpu_ns = 0  # the probe's reading of a container-less sandbox: disk only
    clock.now += 5
    reads = probe.disk_reads
    await sampler.sample_all()
    assert len(sampler.samples("a")) == 2  # its disk use stays reported
    assert probe.disk_reads == reads + 1  # walked on every tick while paused
    paused = sampler.latest("a")
    assert paused is not None and paused.cpu_used_pct == 0.0 and paused.disk_used > 0
    running[0] = replace(running[0], paused=None)
    probe.cpu_ns = 10**9  # a new container's counter starts again
    clock.now += 5
    await sampler.sample_all()
    latest = sampler.latest("a")
    assert latest is not None and 0 <= latest.cpu_used_pct <= 100
    assert len(sampler.samples("a")) == 3


async def test_sampler_first_sample_averages_over_the_process_age() -> None:
    class AgedProbe(FakeProbe):
        def read(self, sandbox: RunningSandbox, *, with_disk: bool) -> SandboxUsage:
            return replace(super().read(sandbox, with_disk=with_disk), age_s=100.0)

    probe, clock = AgedProbe(), Clock()  # started_at says 10 s, the process 100 s
    sampler = UsageSampler(
        sandboxes=lambda: [_sandbox("a")], probe=probe, clock=clock, monotonic=clock
    )
    probe.cpu_ns = 20 * 10**9  # 20 CPU-s over 100 s of 2 CPUs: 10%
    await sampler.sample_all()
    first = sampler.latest("a")
    assert first is not None and first.cpu_used_pct == 10.0
