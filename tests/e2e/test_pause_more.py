"""Pause, resume and snapshots of a sandbox taken from the warm pool (its host objects keep a
``pool-*`` id) and under gVisor (``runsc pause``; gVisor's own kernel and boot id)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from e2b import Sandbox

from .serveproc import Serve, restarted_on_runsc
from .test_pause import COUNTER, counter_of, counts_past

pytestmark = pytest.mark.root

BOOT_ID = "cat /proc/sys/kernel/random/boot_id"


@pytest.fixture
def pooled(serve: Serve) -> Iterator[Serve]:
    serve.stop()
    serve.extra_env = {"HUTCH_NODE_POOL_SIZE": "busybox=1"}
    serve.start()
    try:
        yield serve
    finally:
        serve.extra_env = {}
        if serve.proc is not None:
            serve.stop()
        serve.start()


@pytest.fixture
def on_runsc(serve: Serve) -> Iterator[Serve]:
    with restarted_on_runsc(serve):
        yield serve


def _host_id(serve: Serve, sandbox_id: str) -> str:
    for record in (serve.home / "sandboxes").glob("*/sandbox.json"):
        if json.loads(record.read_text())["sandbox_id"] == sandbox_id:
            return record.parent.name
    raise AssertionError(f"no record names {sandbox_id}")


def _ready_member(serve: Serve) -> bool:
    root = serve.home / "sandboxes"
    idle = [
        d.name
        for d in (root.iterdir() if root.is_dir() else ())
        if d.name.startswith("pool-") and not (d / "sandbox.json").exists()
    ]
    log = (serve.home / "serve.log").read_text(errors="replace")
    return any(f"member {m} ready" in log for m in idle)


def test_pooled_sandbox_pauses_resumes_and_reboots_as_itself(pooled: Serve) -> None:
    # serve.log spans restarts: wait for a member of this run (its directory is idle and
    # the node logged it ready), not for any earlier run's line.
    deadline = time.monotonic() + 120
    while not _ready_member(pooled):
        assert time.monotonic() < deadline, "the pool did not fill"
        time.sleep(0.1)
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
