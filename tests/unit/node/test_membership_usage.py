"""``node/membership.py``'s ``CpuMeter``: utilisation from ``/proc/stat`` deltas, 0..100."""

from __future__ import annotations

from pathlib import Path

from hutch.node.membership import CpuMeter, measure_usage


def _stat(path: Path, *, busy: int, idle: int, iowait: int = 0) -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    path.write_text(f"cpu  {busy} 0 0 {idle} {iowait} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")


def test_cpu_meter_reports_the_busy_share_since_the_previous_read(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    _stat(stat, busy=1000, idle=1000)
    meter = CpuMeter(stat)
    assert meter.read() == 50.0  # first read: since boot
    _stat(stat, busy=1300, idle=1100)  # +300 busy, +100 idle
    assert meter.read() == 75.0
    _stat(stat, busy=1300, idle=1150, iowait=50)  # iowait counts as idle
    assert meter.read() == 0.0
    assert meter.read() == 0.0  # no time passed


def test_cpu_meter_never_passes_100_on_a_loaded_host(tmp_path: Path) -> None:
    # The 1-minute load average per CPU reported 719 % here; busy time cannot exceed time.
    stat = tmp_path / "stat"
    _stat(stat, busy=0, idle=0)
    meter = CpuMeter(stat)
    meter.read()
    _stat(stat, busy=8000, idle=0)
    assert meter.read() == 100.0


def test_cpu_meter_on_this_host_stays_within_0_and_100(tmp_path: Path) -> None:
    meter = CpuMeter()
    for _ in range(3):
        usage = measure_usage(tmp_path, cpu=meter)
        assert 0.0 <= usage.cpu_pct <= 100.0
        assert usage.memory_used_mb > 0
