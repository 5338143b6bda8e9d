"""Names, the cached envd bundle and the leak counter shared by the node tests.

Everything global these tests create is named ``hsm*`` (bridge ``hsmtest0``, netns
``hsmtest-*``, veths ``hsv*``, nft table ``hsmtest``, cgroup parent ``hsmtest-<pid>``) on
10.214.17.0/24, so nothing here touches another engineer's objects or the host's own.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

import hutch
from hutch.node import disk, envd_bundle, rootfs
from hutch.node.runtime.base import Runtime
from hutch.node.settings import NodeSettings

CACHE = Path("/var/tmp/hutch-test-cache")
SUBNET = IPv4Network("10.214.17.0/24")
BRIDGE = "hsmtest0"
NETNS_PREFIX = "hsmtest-"
VETH_PREFIX = "hsv"
CGROUP_PARENT = f"hsmtest-{os.getpid()}"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def missing_system() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "node tests need root"
    for tool, package in (("runc", "runc"), ("ip", "iproute2"), ("nft", "nftables"),
                          ("patchelf", "patchelf")):  # fmt: skip
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    for path, package in ((Path("/usr/bin/tini-static"), "tini"),
                          (Path("/bin/busybox"), "busybox-static")):  # fmt: skip
        if not path.is_file():
            return f"{path} is missing (apt-get install {package})"
    return None


def _bundle_inputs_digest() -> str:
    """What the bundle is built from: hutch's envd subset, the builder, the Python."""
    digest = hashlib.sha256()
    digest.update(sys.version.encode())
    digest.update(repr(envd_bundle.ENVD_REQUIREMENTS).encode())
    pkg = Path(hutch.__file__).parent
    sources = [pkg / "__init__.py", pkg / "__main__.py"]
    for sub in ("envd", "shared", "node"):
        sources += (
            sorted((pkg / sub).rglob("*.py"))
            if sub != "node"
            else sorted(pkg.joinpath("node").glob("envd_bundle*.py"))
        )
    for path in sources:
        if path.is_file():
            digest.update(str(path.relative_to(pkg)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def cached_envd_bundle() -> Path:
    """envd's bundle for this checkout, built once and reused while its inputs are unchanged."""
    CACHE.mkdir(parents=True, exist_ok=True)
    target = CACHE / f"envd-bundle-{_bundle_inputs_digest()}"
    with open(CACHE / ".envd-bundle.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers wait for one build
        if not (target / "SHA256").is_file():
            tmp = CACHE / f".tmp-{target.name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            envd_bundle.build_envd_bundle(tmp)
            shutil.rmtree(target, ignore_errors=True)
            os.rename(tmp, target)
    return target


def node_settings(home: Path, bundle: Path, **overrides: object) -> NodeSettings:
    """Settings that collide with nothing else on the host."""
    values: dict[str, object] = {
        "home": home,
        "bridge": BRIDGE,
        "subnet": SUBNET,
        "netns_prefix": NETNS_PREFIX,
        "veth_prefix": VETH_PREFIX,
        "nft_table": "hsmtest",
        "manage_ip_forward": False,
        "cgroup_parent": CGROUP_PARENT,
        "envd_bundle_dir": bundle,
        "envd_ready_timeout_s": 60.0,
    }
    values.update(overrides)
    return NodeSettings(**values)  # type: ignore[arg-type]


def cgroup_parents() -> list[Path]:
    """``<CGROUP_PARENT>`` in every hierarchy, below this process's own cgroup (as runc does)."""
    out = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        name = controllers.split(",")[0].removeprefix("name=") if controllers else "unified"
        base = CGROUP_ROOT / name
        if base.is_dir():
            out.append(base / path.lstrip("/") / CGROUP_PARENT)
    return out


@dataclass(frozen=True)
class Leaks:
    """Everything of a node's sandboxes that exists on the host, counted."""

    mounts: int
    cgroups: int
    netns: int
    veths: int
    containers: int
    processes: int
    sandbox_dirs: int
    #: Loop devices backed by a sandbox's disk image (ADR 0023).
    loop_devices: int = 0

    def total(self) -> int:
        return sum(vars(self).values())


async def count_leaks(settings: NodeSettings, runtime: Runtime) -> Leaks:
    """Count what the node's sandboxes hold on the host (zero when all are gone)."""
    cgroups = [c for p in cgroup_parents() if p.is_dir() for c in p.iterdir() if c.is_dir()]
    netns_dir = Path("/run/netns")
    netns = (
        [n for n in netns_dir.iterdir() if n.name.startswith(NETNS_PREFIX)]
        if netns_dir.is_dir()
        else []
    )
    veths = [v for v in Path("/sys/class/net").iterdir() if v.name.startswith(VETH_PREFIX)]
    procs = 0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"/{CGROUP_PARENT}/" not in (proc / "cgroup").read_text():
                    continue
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # A sandbox's dead PID 1 is reparented to the host's init, which reaps it in
            # its own time (this test host's init does so lazily): it holds only a pid.
            if not (fields[0] == "Z" and fields[1] == "1"):
                procs += 1
    sandboxes = settings.sandboxes_dir
    dirs = [d for d in sandboxes.iterdir()] if sandboxes.is_dir() else []
    return Leaks(
        mounts=len(rootfs.find_mounts_under(settings.home / "sandboxes")),
        cgroups=len(cgroups),
        netns=len(netns),
        veths=len(veths),
        containers=len(await runtime.list()),
        processes=procs,
        sandbox_dirs=len(dirs),
        loop_devices=len(disk.loop_devices_under(settings.home / "sandboxes")),
    )
