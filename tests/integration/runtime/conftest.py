"""Fixtures for the runtime tests: a busybox template, sandboxes on overlayfs, real runc.

Everything global gets a unique ``hutchrt-test-*`` name and is torn down by a finalizer,
even when a test fails. Nothing here signals a process it did not start.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from hutch.node import rootfs
from hutch.node.bundle import SandboxSpec, build_spec, write_bundle
from hutch.node.runtime.base import Runtime
from hutch.node.runtime.runc import RuncRuntime
from hutch.node.runtime.runsc import RunscRuntime
from hutch.shared.errors import NotFoundError
from tests.conftest import machine_lacks, require_for_dir

BUSYBOX = Path("/bin/busybox")
TINI = Path("/usr/bin/tini-static")
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: A relative cgroup parent keeps test sandboxes below this process's own cgroups (so any
#: memory limit the test run lives under also covers them); unique per test session.
CGROUP_PARENT = f"hutchrt-test-{os.getpid()}"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "runtime tests need root"
    if shutil.which("runc") is None:
        return "runc is not installed (apt-get install runc)"
    if not BUSYBOX.is_file():
        return "busybox-static is not installed (apt-get install busybox-static)"
    if not TINI.is_file():
        return "tini is not installed (apt-get install tini)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    require_for_dir(items, Path(__file__).parent, _missing())


def cgroup_dirs(leaf: str) -> list[Path]:
    """Where runc puts ``<CGROUP_PARENT>/<leaf>`` in every v1 hierarchy (existing or not)."""
    out = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        # "0::" is the v2 hierarchy, mounted at .../unified in hybrid mode; runc creates
        # the sandbox's directory there too.
        name = controllers.split(",")[0].removeprefix("name=") if controllers else "unified"
        base = CGROUP_ROOT / name
        if not base.is_dir():
            continue
        out.append(base / path.lstrip("/") / CGROUP_PARENT / leaf)
    return out


@pytest.fixture
def cgroups() -> Callable[[str], dict[str, Path]]:
    """Map a sandbox id to its cgroup directory per controller (``memory``, ``pids``...)."""

    def paths(sandbox_id: str) -> dict[str, Path]:
        return {p.parts[len(CGROUP_ROOT.parts)]: p for p in cgroup_dirs(sandbox_id)}

    return paths


@pytest.fixture(scope="session")
def template_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention busybox tree with tini as /sbin/tini."""
    root = tmp_path_factory.mktemp("template")
    for d in ("bin", "sbin", "etc", "tmp", "proc", "sys", "dev", "root", "home/user"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    shutil.copy2(TINI, root / "sbin/tini")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"
    )
    (root / "etc/group").write_text("root:x:0:\nuser:x:1000:\n")
    return root


@pytest.fixture(scope="session", autouse=True)
def _cgroup_parent_cleanup() -> Iterator[None]:
    yield
    # runc removes each sandbox's leaf cgroup but leaves the parent it created.
    for leaf_parent in (p.parent for p in cgroup_dirs("any-leaf")):
        with contextlib.suppress(FileNotFoundError):
            leaf_parent.rmdir()


@pytest.fixture
def netns() -> Iterator[Path]:
    """A throwaway network namespace (the network module makes real ones)."""
    name = f"hutchrt-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # As the network module leaves it: loopback up (runsc copies only live links).
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield Path("/run/netns") / name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


@pytest.fixture
def runc_root(tmp_path: Path) -> Path:
    return tmp_path / "runc-state"


@pytest.fixture(params=["runc", "runsc"])
async def runtime(request: pytest.FixtureRequest, runc_root: Path) -> AsyncIterator[Runtime]:
    """Each test runs on every runtime; runc-only tests narrow it with indirect params."""
    rt: RuncRuntime
    if request.param == "runsc":
        if shutil.which("runsc") is None:
            machine_lacks("runsc (gVisor) is not installed (apt-get install runsc)")
        rt = RunscRuntime(root=runc_root)
    else:
        rt = RuncRuntime(root=runc_root)
    yield rt
    # Finalizer: whatever a test left in *this* runtime's private root goes.
    for sandbox_id in await rt.list():
        with contextlib.suppress(NotFoundError):
            await rt.delete(sandbox_id, force=True)


@dataclass
class Sandbox:
    """One test sandbox: its id, directory (= bundle) and output file."""

    sandbox_id: str
    sandbox_dir: Path
    output: Path

    @property
    def rootfs(self) -> Path:
        return rootfs.rootfs_dir(self.sandbox_dir)


@pytest.fixture
async def make_sandbox(
    tmp_path: Path, template_dir: Path, runtime: Runtime
) -> AsyncIterator[Callable[..., object]]:
    """Create and start sandboxes; every one is deleted and unmounted afterwards."""
    made: list[Sandbox] = []

    async def make(
        *,
        args: list[str] | None = None,
        start: bool = True,
        use_seccomp: bool = True,
        **fields: object,
    ) -> Sandbox:
        sandbox_id = f"hutchrt-test-{uuid.uuid4().hex[:12]}"
        sandbox_dir = tmp_path / sandbox_id
        sandbox_dir.mkdir()
        box = Sandbox(sandbox_id, sandbox_dir, sandbox_dir / "output.log")
        made.append(box)
        mounted = rootfs.mount_rootfs(sandbox_dir, lower=[template_dir])
        spec = SandboxSpec(
            sandbox_id=sandbox_id,
            rootfs=mounted,
            args=args or ["/sbin/tini", "--", "/bin/sleep", "100000"],
        )
        spec = replace(spec, **fields)  # type: ignore[arg-type]
        write_bundle(
            sandbox_dir,
            build_spec(
                spec,
                cgroup_parent=CGROUP_PARENT,
                use_seccomp=use_seccomp,
                max_nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[1],
            ),
        )
        await runtime.create(sandbox_dir, sandbox_id=sandbox_id, output_path=box.output)
        if start:
            await runtime.start(sandbox_id)
        return box

    yield make
    for box in made:
        with contextlib.suppress(NotFoundError):
            await runtime.delete(box.sandbox_id, force=True)
        rootfs.remove_rootfs(box.sandbox_dir)
