"""``hutch serve`` on gVisor (``HUTCH_RUNTIME=runsc``), driven by the official SDK.

The session's serve is restarted on runsc for this module (same home, names and ports;
no sandbox runs across the switch) and back on runc afterwards: every test that needs
gVisor lives here, so the suite pays that restart once. docs/runtime.md lists
what differs under gVisor.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2b import CommandExitException, Sandbox

from .serveproc import Serve, restarted_on_runsc
from .test_limits import create_busybox, df_kb
from .test_pause import BOOT_ID, COUNTER, counter_of, counts_past

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def on_runsc(serve: Serve) -> Iterator[Serve]:
    with restarted_on_runsc(serve):
        yield serve


def test_runsc_create_run_files_kill(on_runsc: Serve) -> None:
    sbx = Sandbox.create("busybox", envs={"WHERE": "gvisor"}, timeout=120)
    try:
        result = sbx.commands.run('echo "$WHERE"; hostname; uname -r')
        where, hostname, kernel = result.stdout.split()
        assert (where, hostname) == ("gvisor", sbx.sandbox_id)
        assert kernel.startswith("4.4.0")  # gVisor's own kernel, not the host's
        out: list[str] = []
        sbx.commands.run("for i in 1 2; do echo $i; done", on_stdout=out.append)
        assert "".join(out) == "1\n2\n"

        sbx.files.write("/tmp/g.txt", "under gvisor", metadata={"k": "v"})
        # User xattrs under gVisor depend on its version (HOST-NOTES saw ENOTSUP; Debian's
        # 20221219 stores them): metadata is best effort there, the write always succeeds.
        assert sbx.files.get_info("/tmp/g.txt").metadata in ({"k": "v"}, {}, None)
        assert sbx.files.read("/tmp/g.txt") == "under gvisor"
        sbx.files.write("/tmp/big.bin", b"\x01" * (4 << 20))
        assert len(sbx.files.read("/tmp/big.bin", format="bytes")) == 4 << 20
        assert [e.name for e in sbx.files.list("/tmp") if e.name.endswith(".txt")] == ["g.txt"]
        assert sbx.commands.run("cat /tmp/g.txt").stdout == "under gvisor"

        bg = sbx.commands.run("sleep 300", background=True)
        assert bg.kill() is True
        assert sbx.get_info().template_id == "busybox"
    finally:
        assert sbx.kill() is True
    assert Sandbox.kill(sbx.sandbox_id) is False
    assert on_runsc.leaks().total() == 0, on_runsc.leaks()


def test_runsc_metrics(on_runsc: Serve) -> None:
    import time

    sbx = Sandbox.create("busybox", timeout=60)
    try:
        metrics = sbx.get_metrics()
        for _ in range(240):  # a count of polls, not a deadline
            if metrics:
                break
            time.sleep(0.25)
            metrics = sbx.get_metrics()
        assert metrics, "no samples of a runsc sandbox"
        m = metrics[-1]
        assert m.cpu_count >= 1 and 0 <= m.cpu_used_pct <= 100
        assert 0 < m.mem_used <= m.mem_total
        assert 0 < m.disk_used < m.disk_total
    finally:
        sbx.kill()


def test_runsc_pause_keeps_memory_and_processes(on_runsc: Serve) -> None:
    sbx = Sandbox.create("busybox", timeout=120)
    try:
        boot_id = sbx.commands.run(BOOT_ID).stdout
        sbx.commands.run(COUNTER, background=True, timeout=0)
        counts_past(sbx, 0)
        assert sbx.pause() is True
        again = Sandbox.connect(sbx.sandbox_id)
        counts_past(again, counter_of(again))  # the same process counts on: memory kept
        assert again.commands.run(BOOT_ID).stdout == boot_id
        sbx.pause(mode="filesystem")
        rebooted = Sandbox.connect(sbx.sandbox_id)
        assert rebooted.commands.run(BOOT_ID).stdout != boot_id  # gVisor booted again
    finally:
        sbx.kill()


def test_runsc_sandbox_is_held_by_its_disk_and_sees_its_memory(on_runsc: Serve) -> None:
    """Under gVisor the upper layer is on the same disk (test_limits.py's disk limit), and
    its /proc shows the memory limit."""
    made = create_busybox(on_runsc, diskSizeMB=64)
    assert made.status_code == 201, made.text
    sbx = Sandbox.connect(made.json()["sandboxID"])
    try:
        with pytest.raises(CommandExitException) as err:
            sbx.commands.run("dd if=/dev/zero of=/home/user/bomb bs=1M count=200")
        assert "No space left on device" in err.value.stderr, err.value.stderr
        size, _, avail = df_kb(sbx)  # gVisor's / is the host overlay on the disk
        assert 48 * 1024 < size <= 64 * 1024 and avail < 1024, (size, avail)
        # gVisor's own /proc (no lxcfs under runsc): the sandbox's 128 MiB.
        meminfo = sbx.commands.run("head -1 /proc/meminfo").stdout
        assert meminfo.split()[:2] == ["MemTotal:", "131072"], meminfo
    finally:
        sbx.kill()
