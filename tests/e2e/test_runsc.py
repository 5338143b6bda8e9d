"""``hutch serve`` on gVisor (``HUTCH_RUNTIME=runsc``), driven by the official SDK.

The session's serve is restarted on runsc for this module (same home, names and ports;
no sandbox runs across the switch) and back on runc afterwards. docs/runtime.md lists
what differs under gVisor.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2b import Sandbox

from .serveproc import Serve, restarted_on_runsc

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
