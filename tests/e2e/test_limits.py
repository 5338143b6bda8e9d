"""Hard limits a sandbox cannot pass (issue 13), through the official SDK against a real
``hutch serve``: a disk of its own (ADR 0023) and what happens at it.

A disk bomb gets ENOSPC at the sandbox's ``diskSizeMB`` while another sandbox writes on and
the node answers; ``df /`` and ``get_metrics()`` show the sandbox's own disk; a create may
ask for another size (hutch's ``diskSizeMB`` in the create body) up to the node's limit,
and above it gets a 400 naming the limit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from e2b import CommandExitException, Sandbox

from tests.conftest import machine_lacks

from .serveproc import Serve

pytestmark = pytest.mark.root

MIB = 1 << 20


def _api(serve: Serve) -> httpx.Client:
    return httpx.Client(
        base_url=serve.api_url, headers={"X-API-Key": os.environ["E2B_API_KEY"]}, timeout=60
    )


def create_busybox(serve: Serve, **body: object) -> httpx.Response:
    with _api(serve) as api:
        return api.post("/v2/sandboxes", json={"templateID": "busybox", "timeout": 120, **body})


def df_kb(sbx: Sandbox) -> tuple[int, int, int]:
    """``df -k /`` in the sandbox: (size, used, available) in KiB."""
    line = sbx.commands.run("df -k / | tail -1").stdout.split()
    return int(line[1]), int(line[2]), int(line[3])


def test_disk_bomb_gets_enospc_and_leaves_the_node_and_others_alone(serve: Serve) -> None:
    other = Sandbox.create("busybox", timeout=120)
    made = create_busybox(serve, diskSizeMB=64)
    assert made.status_code == 201, made.text
    bomb = Sandbox.connect(made.json()["sandboxID"])
    try:
        with _api(serve) as api:
            shown = {s["sandboxID"]: s["diskSizeMB"] for s in api.get("/v2/sandboxes").json()}
            assert shown[bomb.sandbox_id] == 64
            assert shown[other.sandbox_id] == 1024  # the template's (busybox: the default)
            assert api.get(f"/sandboxes/{bomb.sandbox_id}").json()["diskSizeMB"] == 64
        image = serve.node_settings().sandboxes_dir / bomb.sandbox_id / "disk.ext4"
        assert image.stat().st_size == 64 * MIB

        with pytest.raises(CommandExitException) as err:
            bomb.commands.run("dd if=/dev/zero of=/home/user/bomb bs=1M count=200", user="root")
        assert err.value.exit_code == 1
        assert "No space left on device" in err.value.stderr
        size, used, avail = df_kb(bomb)
        assert 48 * 1024 < size <= 64 * 1024 and avail < 1024, (size, used, avail)
        # Everything it wrote is in its image: not a byte more of the node's disk.
        assert image.stat().st_size == 64 * MIB
        assert image.stat().st_blocks * 512 <= 64 * MIB + 1 * MIB

        # The other sandbox sees its own 1 GiB disk and writes on; the node serves.
        size, _, _ = df_kb(other)
        assert 900 * 1024 < size <= 1024 * 1024, size
        other.commands.run("dd if=/dev/zero of=/home/user/ok bs=1M count=32")
        assert other.files.read("/etc/hostname").strip() == other.sandbox_id
        assert httpx.get(f"{serve.api_url}/health").status_code == 200
        # The bomb recovers by deleting what it wrote.
        bomb.commands.run("rm /home/user/bomb && echo fine > /home/user/after")
        assert bomb.files.read("/home/user/after") == "fine\n"
    finally:
        bomb.kill()
        other.kill()
    assert not image.exists()


def test_disk_size_request_larger_and_above_the_node_limit(serve: Serve) -> None:
    made = create_busybox(serve, diskSizeMB=2048)
    assert made.status_code == 201, made.text
    sbx = Sandbox.connect(made.json()["sandboxID"])
    try:
        size, _, _ = df_kb(sbx)
        assert 1900 * 1024 < size <= 2048 * 1024, size
    finally:
        sbx.kill()

    limit = serve.node_settings().max_disk_mb
    too_big = create_busybox(serve, diskSizeMB=limit + 1)
    assert too_big.status_code == 400, too_big.text
    assert f"limit of {limit} MB" in too_big.json()["message"], too_big.text
    assert create_busybox(serve, diskSizeMB=0).status_code == 400
    assert create_busybox(serve, diskSizeMB="big").status_code == 400
    with _api(serve) as api:
        running = [s["sandboxID"] for s in api.get("/v2/sandboxes").json()]
    assert sbx.sandbox_id not in running  # killed, and the refused creates left no rows


def test_memory_bomb_is_reported_as_out_of_memory_and_the_sandbox_lives_on(
    serve: Serve,
) -> None:
    sbx = Sandbox.create("busybox", timeout=120)  # busybox: 128 MiB
    try:
        with pytest.raises(CommandExitException) as err:
            # A string that doubles until the sandbox's memory cgroup has no room for it.
            sbx.commands.run("awk 'BEGIN { s = \"x\"; while (1) s = s s }'", timeout=60)
        assert err.value.exit_code == -1  # a signal, as E2B's envd reports it
        assert err.value.error is not None
        assert err.value.error.startswith("signal: killed (out of memory"), err.value.error
        assert "memory limit of 128 MiB" in err.value.error
        # envd and the sandbox survived their process.
        assert sbx.commands.run("echo alive").stdout == "alive\n"
        with _api(serve) as api:
            logs = api.get(f"/v2/sandboxes/{sbx.sandbox_id}/logs", params={"search": "OOM"})
        assert logs.status_code == 200, logs.text
        oom = [x for x in logs.json()["logs"] if "out of memory" in x["message"]]
        assert oom and oom[0]["level"] == "warn", logs.text
        assert "awk" in oom[0]["message"]
        # The node serves others as before.
        again = Sandbox.create("busybox", timeout=60)
        assert again.commands.run("echo ok").stdout == "ok\n"
        again.kill()
    finally:
        sbx.kill()


def test_fork_bomb_is_held_at_the_pids_limit(serve: Serve) -> None:
    other = Sandbox.create("busybox", timeout=120)
    bomb = Sandbox.create("busybox", timeout=120)
    try:
        pids = next(Path("/sys/fs/cgroup/pids").rglob(bomb.sandbox_id))
        limit = serve.node_settings().pids_limit
        assert int((pids / "pids.max").read_text()) == limit
        # The classic bomb: every shell forks two more, for ever, until pids.max says no.
        bomb.commands.run("b() { b | b & }; b", background=True, user="root", timeout=0)
        current = 0
        for _ in range(1200):  # a count of polls, not a deadline
            current = int((pids / "pids.current").read_text())
            if current >= limit:
                break
            time.sleep(0.05)
        assert current == limit  # held there: not one process more
        # Another sandbox, and the node, carry on.
        assert other.commands.run("echo ok").stdout == "ok\n"
        assert httpx.get(f"{serve.api_url}/health").status_code == 200
        third = Sandbox.create("busybox", timeout=60)
        assert third.commands.run("echo ok").stdout == "ok\n"
        third.kill()
    finally:
        assert bomb.kill() is True  # every process in it goes with it (leaks are checked)
        other.kill()


def test_sandbox_sees_its_own_memory_cpus_uptime_and_disk(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", timeout=120)  # busybox: 128 MiB, 1 CPU, 1024 MiB disk
    try:
        meminfo = sbx.commands.run("cat /proc/meminfo").stdout
        assert "MemTotal:         131072 kB" in meminfo, meminfo.splitlines()[0]
        cpuinfo = sbx.files.read("/proc/cpuinfo")  # lxcfs's size is the host's: envd reads it
        assert cpuinfo.count("processor\t:") == 1, cpuinfo.count("processor")
        stat = sbx.commands.run("cat /proc/stat").stdout.splitlines()
        assert [line.split()[0] for line in stat[:2]] == ["cpu", "cpu0"]
        assert not any(line.startswith("cpu1") for line in stat)
        uptime = float(sbx.commands.run("cat /proc/uptime").stdout.split()[0])
        host_uptime = float(Path("/proc/uptime").read_text().split()[0])
        assert uptime < 120 < host_uptime, (uptime, host_uptime)  # the sandbox's own
        size, _, _ = df_kb(sbx)
        assert 900 * 1024 < size <= 1024 * 1024
        # glibc's sysconf(_SC_NPROCESSORS_ONLN) reads this (lxcfs's: the quota's CPUs).
        assert sbx.commands.run("cat /sys/devices/system/cpu/online").stdout == "0\n"
        limit = sbx.commands.run(
            "cat /sys/fs/cgroup/memory.max 2>/dev/null"
            " || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"
        ).stdout
        assert int(limit) == 128 * MIB, limit
    finally:
        sbx.kill()


def test_what_still_shows_the_hosts_cpus_and_memory(serve: Serve) -> None:
    """ADR 0031, pinned: no cpuset is set (the quota limits, as Docker's ``--cpus`` and
    Kubernetes' CPU limits), so counts of the affinity mask (busybox ``nproc``) are the
    host's; busybox ``free`` asks sysinfo(2), which lxcfs cannot answer: the host's RAM."""
    sbx = Sandbox.create("busybox", timeout=120)  # 1 CPU, 128 MiB
    try:
        host_cpus = len(os.sched_getaffinity(0))
        assert int(sbx.commands.run("nproc").stdout) == host_cpus
        host_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
        free = sbx.commands.run("free | sed -n 2p").stdout.split()
        assert free[0] == "Mem:" and int(free[1]) == host_kb, free
        # /proc/meminfo (what procps' free and most runtimes read) is the sandbox's.
        meminfo = sbx.commands.run("head -1 /proc/meminfo").stdout
        assert meminfo.split()[:2] == ["MemTotal:", "131072"], meminfo
    finally:
        sbx.kill()


def test_base_tools_size_themselves_from_the_sandbox(serve: Serve) -> None:
    if not (serve.home / "templates" / "base" / "template.json").is_file():
        machine_lacks("the base template is not installed (./install.sh builds it)")
    sbx = Sandbox.create("base", timeout=120)  # base: 1024 MiB, 2 CPUs
    try:
        free = sbx.commands.run("free -m | sed -n 2p").stdout.split()  # procps: /proc/meminfo
        assert free[0] == "Mem:" and int(free[1]) == 1024, free
        assert int(sbx.commands.run("grep -c ^processor /proc/cpuinfo").stdout) == 2
        # sysconf-based counts are the template's 2 vCPUs (lxcfs's cpu/online), the
        # affinity-based ones the host's (ADR 0031).
        counts = sbx.commands.run(
            "python3 -c 'import os; print(os.cpu_count(), len(os.sched_getaffinity(0)))';"
            " getconf _NPROCESSORS_ONLN; nproc"
        ).stdout.split()
        host_cpus = len(os.sched_getaffinity(0))
        assert counts == ["2", str(host_cpus), "2", str(host_cpus)], counts
        up = sbx.commands.run("cut -d' ' -f1 /proc/uptime").stdout
        assert float(up) < 120, up
        assert sbx.commands.run("df -k --output=size / | tail -1").stdout.strip().isdigit()
    finally:
        sbx.kill()
