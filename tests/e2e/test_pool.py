"""The warm pool (ADR 0011) through the official SDK: a pooled sandbox is indistinguishable
from a cold one, creates beyond the pool fall back to cold ones, kill and the reaper never
touch idle members, and a SIGKILL of serve leaves no member behind after the restart.

A pooled sandbox pauses, resumes and snapshots as itself. The session's ``hutch serve`` is
restarted with ``HUTCH_NODE_POOL_SIZE=busybox=2`` for this module and restarted without a
pool afterwards (a SIGTERM destroys the idle members): every test that needs a pool lives
here, so the suite pays that restart once.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox

from hutch.node import zygote
from hutch.node.templates.busybox import build_busybox

from .serveproc import Serve
from .test_observability import scrape
from .test_pause import BOOT_ID, COUNTER, counter_of, counts_past

pytestmark = pytest.mark.root

POOL = 2


@pytest.fixture(scope="module")
def pooled(serve: Serve) -> Iterator[Serve]:
    serve.stop()
    # "late" is built only by a test, after the start.
    # Floors only: demand sizing (ADR 0038, test_pool_demand.py) would grow busybox's pool
    # from these tests' own creates and blur what each of them expects.
    serve.extra_env = {
        "HUTCH_NODE_POOL_SIZE": f"busybox={POOL},late=1",
        "HUTCH_NODE_POOL_MAX_PER_TEMPLATE": "0",
    }
    serve.start()
    try:
        yield serve
    finally:
        serve.extra_env = {}
        if serve.proc is not None:
            serve.stop()
        assert _idle_members(serve) == [], "SIGTERM must destroy the idle pool members"
        serve.start()


def _records(serve: Serve) -> dict[str, dict[str, object]]:
    """Host id -> sandbox.json of every sandbox directory that has one."""
    out = {}
    for record in (serve.home / "sandboxes").glob("*/sandbox.json"):
        out[record.parent.name] = json.loads(record.read_text())
    return out


def _idle_members(serve: Serve) -> list[str]:
    """Pool members' directories that no sandbox took yet."""
    root = serve.home / "sandboxes"
    if not root.is_dir():
        return []
    return sorted(
        d.name
        for d in root.iterdir()
        if d.name.startswith("pool-") and not (d / "sandbox.json").exists()
    )


def _wait_for_pool(serve: Serve, size: int = POOL, timeout: float = 120) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        members = _idle_members(serve)
        # A member's directory exists from the start of its boot; its envd log shows it
        # ready only when the node added it (the node logs that line).
        log = _log(serve)
        ready = [m for m in members if f"member {m} ready" in log]
        if len(ready) >= size:
            return ready
        time.sleep(0.1)
    raise AssertionError(f"pool not refilled to {size}: {_idle_members(serve)}")


def _log(serve: Serve) -> str:
    return (serve.home / "serve.log").read_text(errors="replace")


def _host_id(serve: Serve, sandbox_id: str) -> str:
    for host, record in _records(serve).items():
        if record["sandbox_id"] == sandbox_id:
            return host
    raise AssertionError(f"no record names {sandbox_id}")


#: Everything a user could look at to tell sandboxes apart, ids and addresses aside.
FINGERPRINT = (
    "hostname; cat /etc/hostname; cat /etc/hosts; id; pwd; umask; echo $HOME $USER $SHELL; "
    "env | sort; cat /etc/resolv.conf; ls -la /etc | grep -E ' (hosts|hostname|resolv.conf)$' "
    "| awk '{print $1, $3, $4, $NF}'; tr '\\0' '\\n' < /proc/1/environ | sort; "
    "tr '\\0' ' ' < /proc/1/cmdline; echo; grep ' / / ' /proc/self/mountinfo | sed 's/.* - //'; "
    # Its own disk and lxcfs's views (issue 13), as a cold sandbox's.
    "df -k / | tail -1 | awk '{print $2}'; head -1 /proc/meminfo; "
    "cat /sys/devices/system/cpu/online"
)


def _fingerprint(sbx: Sandbox, serve: Serve) -> str:
    out = sbx.commands.run(FINGERPRINT, user="root").stdout
    address = next(line.split()[0] for line in sbx.files.read("/etc/hosts").splitlines()
                   if sbx.sandbox_id in line)  # fmt: skip
    out = re.sub(r"/proc/self/fd/\d+/", "<FD>/", out)  # the overlay's upper and work
    return out.replace(sbx.sandbox_id, "<ID>").replace(address, "<ADDR>")


def test_pooled_sandbox_is_indistinguishable_from_a_cold_one(pooled: Serve) -> None:
    _wait_for_pool(pooled)
    envs = {"GREETING": "hi", "PATH_EXTRA": "/opt/x"}
    pooled_sbx = Sandbox.create("busybox", envs=envs, metadata={"k": "v"}, timeout=123, secure=True)
    # allow_internet_access is part of the pool key: a different value cannot use the pool.
    cold_sbx = Sandbox.create("busybox", envs=envs, metadata={"k": "v"}, timeout=123, secure=True,
                              allow_internet_access=False)  # fmt: skip
    try:
        assert _host_id(pooled, pooled_sbx.sandbox_id).startswith("pool-")
        assert _host_id(pooled, cold_sbx.sandbox_id) == cold_sbx.sandbox_id

        result = pooled_sbx.commands.run('hostname; echo "$GREETING"; whoami; pwd')
        assert result.stdout == f"{pooled_sbx.sandbox_id}\nhi\nuser\n/home/user\n"
        fingerprint = _fingerprint(pooled_sbx, pooled)
        assert "upperdir=<FD>/upper" in fingerprint and "<ID>\n<ID>\n" in fingerprint
        assert fingerprint.endswith("131072 kB\n0\n"), fingerprint[-80:]  # 128 MiB, 1 CPU
        assert fingerprint == _fingerprint(cold_sbx, pooled)

        info = pooled_sbx.get_info()
        assert info.metadata == {"k": "v"}
        assert (info.end_at - info.started_at).total_seconds() == 123
        # Secured: envd wants the access token the API returned, and signed URLs work.
        envd = httpx.post(
            pooled.sandbox_url + "/process.Process/List",
            headers={"E2b-Sandbox-Id": pooled_sbx.sandbox_id, "E2b-Sandbox-Port": "49983",
                     "Content-Type": "application/json"},
            content=b"{}",
        )  # fmt: skip
        assert envd.status_code == 401
        pooled_sbx.files.write("/home/user/signed.txt", "data")
        assert httpx.get(pooled_sbx.download_url("/home/user/signed.txt")).text == "data"
    finally:
        pooled_sbx.kill()
        cold_sbx.kill()


def _init_pid(serve: Serve, host_id: str) -> int:
    import asyncio

    from hutch.node.runtime.runc import RuncRuntime

    runtime = RuncRuntime(root=serve.node_settings().runtime_root)
    pid = asyncio.run(runtime.state(host_id)).pid
    assert pid, host_id
    return pid


def _nices_in(init_pid: int) -> dict[int, int]:
    """Pid -> nice value of every process in the pid namespace of ``init_pid``."""
    ns = Path(f"/proc/{init_pid}/ns/pid").readlink()
    out = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "ns" / "pid").readlink() == ns:
                    out[int(proc.name)] = zygote.nice_of(int(proc.name))
    return out


def test_members_boot_niced_and_a_taken_one_runs_at_nice_0(pooled: Serve) -> None:
    """A member boots at the refill's low priority (ADR 0038), its envd too, forked or
    exec'd (the same nice as its PID 1); the sandbox a create gets from it, and what it
    runs for the user, at the normal nice 0."""
    for member in _wait_for_pool(pooled):
        init = _init_pid(pooled, member)
        nices = _nices_in(init)
        assert len(nices) >= 3, nices  # tini, the waiter or envd, envd
        assert set(nices.values()) == {zygote.nice_of(init)}, nices
    sbx = Sandbox.create("busybox", timeout=120)
    try:
        host_id = _host_id(pooled, sbx.sandbox_id)
        assert host_id.startswith("pool-")
        assert set(_nices_in(_init_pid(pooled, host_id)).values()) == {0}
        assert sbx.commands.run("cut -d ' ' -f 19 /proc/self/stat").stdout == "0\n"
    finally:
        sbx.kill()


def test_a_pooled_sandbox_gets_the_creates_egress_policy(pooled: Serve) -> None:
    """A member boots with all egress; a create with a deny list takes it and its chain
    holds the list before the sandbox is handed out (the record keeps it too)."""
    import subprocess

    _wait_for_pool(pooled)
    sbx = Sandbox.create("busybox", timeout=60, network={"deny_out": ["198.51.100.7"]})
    try:
        host_id = _host_id(pooled, sbx.sandbox_id)
        assert host_id.startswith("pool-")
        record = _records(pooled)[host_id]
        assert record["egress"] == {"allow_out": [], "deny_out": ["198.51.100.7"]}
        chain = "egress_" + str(record["address"]).replace(".", "_")
        listed = subprocess.run(
            ["nft", "list", "chain", "inet", pooled.names.nft_table, chain],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "198.51.100.7 reject" in listed
        assert sbx.get_info().network["deny_out"] == ["198.51.100.7"]  # type: ignore[index]
    finally:
        sbx.kill()


def test_hutch_status_reports_the_pool_fill(pooled: Serve) -> None:
    _wait_for_pool(pooled)
    report = json.loads(pooled.hutch("status", "--json"))
    assert report["pool"] == [
        {"templateID": "busybox", "target": POOL, "ready": POOL},
        {"templateID": "late", "target": 1, "ready": 0},  # not built (yet)
    ]
    assert f"busybox {POOL}/{POOL}, late 0/1" in pooled.hutch("status")
    # The same fill on /metrics (docs/observability.md): wanted and ready per template.
    scraped = scrape(pooled)
    assert scraped.value("hutch_node_pool_wanted", template="busybox") == POOL
    assert scraped.value("hutch_node_pool_ready", template="busybox") == POOL
    assert scraped.value("hutch_node_pool_wanted", template="late") == 1
    assert scraped.value("hutch_node_pool_ready", template="late") == 0


def test_pooled_sandbox_pauses_resumes_and_reboots_as_itself(pooled: Serve) -> None:
    """Pause, resume and snapshots of a sandbox taken from the pool: its host objects keep
    a ``pool-*`` id, the sandbox is still itself after each."""
    _wait_for_pool(pooled)
    sbx = Sandbox.create("busybox", envs={"E": "1"}, timeout=120)
    try:
        assert _host_id(pooled, sbx.sandbox_id).startswith("pool-")
        boot_id = sbx.commands.run(BOOT_ID).stdout
        sbx.commands.run(COUNTER, background=True, timeout=0)
        sbx.pause()
        again = Sandbox.connect(sbx.sandbox_id)
        assert again.commands.run(BOOT_ID).stdout == boot_id
        counts_past(again, counter_of(again))  # the same process counts on
        sbx.files.write("/tmp/kept", "yes")
        sbx.pause(mode="filesystem")
        rebooted = Sandbox.connect(sbx.sandbox_id)
        out = rebooted.commands.run('hostname; cat /etc/hostname; echo "$E"').stdout.split()
        assert out == [sbx.sandbox_id, sbx.sandbox_id, "1"]
        assert rebooted.commands.run(BOOT_ID).stdout != boot_id
        assert rebooted.files.read("/tmp/kept") == "yes"
        snap = rebooted.create_snapshot()
        child = Sandbox.create(snap.snapshot_id, timeout=60)
        try:
            assert child.files.read("/tmp/kept") == "yes"
        finally:
            child.kill()
            Sandbox.delete_snapshot(snap.snapshot_id)
    finally:
        sbx.kill()


def test_creates_beyond_the_pool_fall_back_to_cold_ones(pooled: Serve) -> None:
    _wait_for_pool(pooled)
    with ThreadPoolExecutor(POOL + 3) as ex:
        sandboxes = list(ex.map(lambda _: Sandbox.create("busybox", timeout=120), range(POOL + 3)))
    try:
        hosts = {s.sandbox_id: _host_id(pooled, s.sandbox_id) for s in sandboxes}
        assert any(h.startswith("pool-") for h in hosts.values())
        assert any(h == sid for sid, h in hosts.items())
        for sbx in sandboxes:
            assert sbx.commands.run("hostname").stdout == f"{sbx.sandbox_id}\n"
    finally:
        with ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda s: s.kill(), sandboxes))
    _wait_for_pool(pooled)  # refilled in the background


def test_kill_and_reaper_never_touch_idle_members(pooled: Serve) -> None:
    members = _wait_for_pool(pooled)
    assert Sandbox.kill(members[0]) is False  # no such sandbox for the API: 404
    assert _idle_members(pooled) == members
    # It takes a member; the reaper kills it once a 1 s timeout is set. Created with 1 s,
    # a loaded machine's reaper could kill it before its host id was read.
    short = Sandbox.create("busybox", timeout=120)
    taken = _host_id(pooled, short.sandbox_id)
    short.set_timeout(1)
    deadline = time.monotonic() + 30
    while short.is_running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not short.is_running()
    # The route goes before the teardown (kill's order), so the directory may lag a moment.
    while (pooled.home / "sandboxes" / taken).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (pooled.home / "sandboxes" / taken).exists()
    for member in set(members) - {taken}:
        assert member in _idle_members(pooled)


def test_sigkill_restart_destroys_members_and_adopts_pooled_sandboxes(pooled: Serve) -> None:
    _wait_for_pool(pooled)
    kept = Sandbox.create("busybox", timeout=300)
    try:
        kept_host = _host_id(pooled, kept.sandbox_id)
        assert kept_host.startswith("pool-")
        kept.commands.run("echo before > /tmp/state")
        old_members = _wait_for_pool(pooled)
        assert pooled.stop(signal.SIGKILL) == -signal.SIGKILL
        pooled.start()
        for member in old_members:
            assert not (pooled.home / "sandboxes" / member).exists()
        # The pooled sandbox was adopted under its host id and still is what it was.
        assert _host_id(pooled, kept.sandbox_id) == kept_host
        assert (
            kept.commands.run("cat /tmp/state; hostname").stdout == f"before\n{kept.sandbox_id}\n"
        )
        new_members = _wait_for_pool(pooled)
        assert not set(new_members) & set(old_members)
    finally:
        kept.kill()
    assert not (pooled.home / "sandboxes" / kept_host).exists()


def test_a_dead_member_is_discarded_and_the_create_still_succeeds(pooled: Serve) -> None:
    import asyncio

    from hutch.node.runtime.runc import RuncRuntime

    members = _wait_for_pool(pooled)
    runtime = RuncRuntime(root=pooled.node_settings().runtime_root)
    for member in members:  # every idle member dies behind the node's back
        asyncio.run(runtime.kill(member))
    sbx = Sandbox.create("busybox", timeout=120)
    try:
        assert sbx.commands.run("hostname").stdout == f"{sbx.sandbox_id}\n"
        assert _host_id(pooled, sbx.sandbox_id) == sbx.sandbox_id  # a cold create
        for member in members:
            assert not (pooled.home / "sandboxes" / member).exists()
    finally:
        sbx.kill()
    _wait_for_pool(pooled)


def _late_members(serve: Serve) -> list[str]:
    log = _log(serve)
    return [m for m in _idle_members(serve) if f"late member {m} ready" in log]


def _wait(predicate: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_templates_built_rebuilt_and_removed_after_the_start(pooled: Serve) -> None:
    templates = pooled.home / "templates"
    try:
        build_busybox(templates, name="late")
        _wait(lambda: len(_late_members(pooled)) == 1, "a member of the new template")
        first = _late_members(pooled)[0]
        build_busybox(templates, name="late")  # rebuilt: the member is replaced
        _wait(lambda: _late_members(pooled) and _late_members(pooled) != [first],
              "a member of the rebuilt template")  # fmt: skip
        assert not (pooled.home / "sandboxes" / first).exists()
    finally:
        shutil.rmtree(templates / "late", ignore_errors=True)
    _wait(lambda: not _late_members(pooled), "the removed template's member to go")
    assert len(_wait_for_pool(pooled)) >= POOL  # busybox's pool is untouched
