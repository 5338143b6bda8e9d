"""One-off benchmark for docs/runtime.md (as root).

    .venv/bin/python tests/integration/runtime/bench_runtime.py

Not collected by pytest (no test_ prefix) and never asserts on time. Builds a busybox
template in a temporary directory, then measures overlay mounts (mount(2) via ctypes vs
mount(8)) and the runc life cycle, and prints medians. Cleans up after itself.
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hutch.node import rootfs
from hutch.node.bundle import SandboxSpec, build_spec, write_bundle
from hutch.node.runtime.runc import RuncRuntime
from hutch.node.runtime.runsc import RunscRuntime

N = 20


def _template(root: Path) -> Path:
    tpl = root / "template"
    (tpl / "bin").mkdir(parents=True)
    (tpl / "sbin").mkdir()
    shutil.copy2("/bin/busybox", tpl / "bin/busybox")
    shutil.copy2("/usr/bin/tini-static", tpl / "sbin/tini")
    for applet in ("sh", "sleep", "true"):
        (tpl / "bin" / applet).symlink_to("busybox")
    return tpl


def _ms(samples: list[float]) -> str:
    median, low = statistics.median(samples) * 1000, min(samples) * 1000
    return f"median {median:.2f} ms (min {low:.2f}, n={len(samples)})"


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_mounts(root: Path, tpl: Path) -> None:
    sb = root / "mnt-bench"
    sb.mkdir()
    m_ctypes, u_ctypes, m_bin, u_bin = [], [], [], []
    opts = rootfs.overlay_options([tpl], upper=sb / "upper", work=sb / "work")
    target = str(rootfs.rootfs_dir(sb))
    mount_cmd = ["mount", "-t", "overlay", "overlay", "-o", opts, target]
    for _ in range(N):
        m_ctypes.append(_timed(lambda: rootfs.mount_rootfs(sb, lower=[tpl])))
        u_ctypes.append(_timed(lambda: rootfs.unmount_rootfs(sb)))
        m_bin.append(_timed(lambda: subprocess.run(mount_cmd, check=True)))
        u_bin.append(_timed(lambda: subprocess.run(["umount", target], check=True)))
    rootfs.remove_rootfs(sb)
    print("overlay mount  ctypes mount(2): ", _ms(m_ctypes))
    print("overlay umount ctypes umount2(2):", _ms(u_ctypes))
    print("overlay mount  mount(8):        ", _ms(m_bin))
    print("overlay umount umount(8):       ", _ms(u_bin))


async def bench_runtime(rt: RuncRuntime, root: Path, tpl: Path, n: int) -> None:
    steps: dict[str, list[float]] = {
        k: []
        for k in (
            "create",
            "start",
            "exec true",
            "pause",
            "resume",
            "kill+wait",
            "delete",
            "delete --force (running)",
        )
    }
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    name = type(rt).__name__
    for i in range(n):
        sid = f"hutchrt-bench-{name.lower()}-{i}"
        sb = root / sid
        sb.mkdir()
        mounted = rootfs.mount_rootfs(sb, lower=[tpl])
        spec = SandboxSpec(
            sandbox_id=sid, rootfs=mounted, args=["/sbin/tini", "--", "/bin/sleep", "100000"]
        )
        write_bundle(sb, build_spec(spec, cgroup_parent="hutchrt-bench", max_nofile=nofile))
        t = time.perf_counter
        t0 = t()
        await rt.create(sb, sandbox_id=sid)
        steps["create"].append(t() - t0)
        t0 = t()
        await rt.start(sid)
        steps["start"].append(t() - t0)
        t0 = t()
        await rt.exec(sid, ["true"])
        steps["exec true"].append(t() - t0)
        t0 = t()
        await rt.pause(sid)
        steps["pause"].append(t() - t0)
        t0 = t()
        await rt.resume(sid)
        steps["resume"].append(t() - t0)
        if i % 2:
            t0 = t()
            await rt.delete(sid, force=True)
            steps["delete --force (running)"].append(t() - t0)
        else:
            t0 = t()
            await rt.kill(sid)
            await rt.wait(sid)
            steps["kill+wait"].append(t() - t0)
            t0 = t()
            await rt.delete(sid)
            steps["delete"].append(t() - t0)
        rootfs.remove_rootfs(sb)
    for step, samples in steps.items():
        print(f"{name} {step:26}", _ms(samples))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hutchrt-bench-") as tmp:
        root = Path(tmp)
        tpl = _template(root)
        bench_mounts(root, tpl)
        asyncio.run(bench_runtime(RuncRuntime(root=root / "runc"), root, tpl, N))
        if shutil.which("runsc"):
            asyncio.run(bench_runtime(RunscRuntime(root=root / "runsc"), root, tpl, 6))
    for ctrl in Path("/sys/fs/cgroup").iterdir():
        for leftover in ctrl.glob("**/hutchrt-bench"):
            leftover.rmdir()


if __name__ == "__main__":
    main()
