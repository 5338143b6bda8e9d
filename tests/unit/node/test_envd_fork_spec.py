"""The node's side of the envd zygote without a runtime: the spec a forked sandbox gets, what
envd is given, the zygote's launcher, the death watch's bookkeeping."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from hutch.node.sandbox import lifecycle
from hutch.node.sandbox.envd_fork import (
    BUSYBOX_IN_SANDBOX,
    PYTHON_WAITER_ARGV,
    WAITER_ARGV,
    EnvdWatches,
    envd_alive_in,
    launcher_argv,
    oci_env,
    profile_key,
    static_elf,
)
from hutch.node.sandbox.models import ManagerConfig
from hutch.node.templates.artifact import TemplateArtifact
from tests.conftest import machine_lacks


def _spec(tmp_path: Path, *, forked: bool, busybox: Path | None = None):  # type: ignore[no-untyped-def]
    config = ManagerConfig(
        sandboxes_dir=tmp_path, envd_bundle_dir=tmp_path / "envd", tini_path=tmp_path / "tini",
        busybox_path=busybox,
    )  # fmt: skip
    template = TemplateArtifact(name="busybox", rootfs=tmp_path / "rootfs")
    return lifecycle.sandbox_spec(
        sandbox_id="sb1", rootfs=tmp_path / "rootfs", template=template, cpu_count=1,
        memory_mb=256, netns_path=tmp_path / "netns", config=config, envd_forked=forked,
    )  # fmt: skip


def test_forked_spec_runs_the_waiter_under_tini_and_mounts_the_bundle(tmp_path: Path) -> None:
    execd, forked = _spec(tmp_path, forked=False), _spec(tmp_path, forked=True)
    assert forked.args == [lifecycle.TINI_IN_SANDBOX, "--", *PYTHON_WAITER_ARGV]
    assert execd.args[2:4] == ["/.hutch/envd/bin/python3", "-I"]
    options = lifecycle.envd_options(TemplateArtifact(name="busybox", rootfs=tmp_path))
    assert execd.args[-len(options) :] == options and "--user" in options
    assert forked.bind_mounts == execd.bind_mounts  # the bundle at /.hutch/envd in both
    # With a static busybox on the host: it waits, bound read-only beside tini.
    boxed = _spec(tmp_path, forked=True, busybox=Path("/bin/busybox"))
    assert boxed.args == [lifecycle.TINI_IN_SANDBOX, "--", *WAITER_ARGV]
    extra = [m for m in boxed.bind_mounts if m not in execd.bind_mounts]
    assert [(str(m.source), m.destination, m.read_only) for m in extra] == [
        ("/bin/busybox", BUSYBOX_IN_SANDBOX, True)
    ]
    assert _spec(tmp_path, forked=False, busybox=Path("/bin/busybox")).args == execd.args


def test_static_elf_tells_static_from_dynamic(tmp_path: Path) -> None:
    if not Path("/usr/bin/tini-static").is_file():
        machine_lacks("/usr/bin/tini-static (apt-get install tini)")
    assert static_elf(Path("/usr/bin/tini-static"))
    assert not static_elf(Path(sys.executable).resolve())  # a dynamically linked python
    (tmp_path / "text").write_text("#!/bin/sh\n")
    assert not static_elf(tmp_path / "text") and not static_elf(tmp_path / "missing")


def test_waiter_waits_until_signalled() -> None:
    code = PYTHON_WAITER_ARGV[-1]
    proc = subprocess.Popen([sys.executable, "-S", "-c", code])
    try:
        assert proc.poll() is None
    finally:
        proc.terminate()
    assert proc.wait(timeout=10) == -15


def test_envd_gets_the_spec_environment_and_profiles_are_keyed_by_seccomp() -> None:
    oci = {"process": {"env": ["PATH=/bin:/usr/bin", "A=b=c"]}, "linux": {"seccomp": {"x": 1}}}
    assert oci_env(oci) == {"PATH": "/bin:/usr/bin", "A": "b=c"}
    assert profile_key(oci) == profile_key({"linux": {"seccomp": {"x": 1}}})
    assert profile_key(oci) != profile_key({"linux": {"seccomp": {"x": 2}}})


def test_launcher_unshares_the_mount_namespace_and_names_the_bundle(tmp_path: Path) -> None:
    argv = launcher_argv(tmp_path / "bundle")
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert argv[-2] == str(tmp_path / "bundle") and argv[-1].endswith("node/zygote.py")
    assert "pivot_root . .old" in argv[7]


def test_watches_call_back_once_a_process_exits_and_not_after_unwatch() -> None:
    async def run() -> list[str]:
        exited: list[str] = []

        async def on_exit(host_id: str) -> None:
            exited.append(host_id)

        watches = EnvdWatches(on_exit)
        a = await asyncio.create_subprocess_exec("sleep", "60")
        b = await asyncio.create_subprocess_exec("sleep", "60")
        assert watches.watch("a", a.pid) and watches.watch("b", b.pid)
        watches.unwatch("b")
        a.kill()
        b.kill()
        await a.wait()
        await b.wait()
        for _ in range(200):
            if exited:
                break
            await asyncio.sleep(0.01)
        assert watches.alive("a")  # no longer watched
        await watches.aclose()
        return exited

    assert asyncio.run(run()) == ["a"]


def test_envd_alive_in_wants_pid_1s_child_in_its_pid_namespace() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        assert envd_alive_in(proc.pid, os.getpid())
        assert not envd_alive_in(proc.pid, 1)  # not init's child
    finally:
        proc.kill()
        proc.wait()
    assert not envd_alive_in(proc.pid, os.getpid())
