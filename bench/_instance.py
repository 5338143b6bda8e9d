"""A private ``hutch serve`` for the benchmarks: own home, free ports, own host names.

Everything global it creates is named ``hbn*`` (bridge ``hbn0`` on 10.216.0.0/22, netns
``hbn-*``, veths ``hbv*``, nft table ``hbn``, cgroup parent ``hbn-<pid>``), apart from the
tests' ``hse2e*``/``hsm*``/``hn*`` and the host's own ``hutch*``. ``destroy_everything``
removes all of it again, also after a failed run.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.e2e.serveproc import HostNames, Serve, nodehelpers  # noqa: E402

__all__ = ["Serve", "new_instance"]

SUBNET = "10.216.0.0/22"  # room for the fit test's 500 sandboxes
CGROUP_PARENT = f"hbn-{os.getpid()}"
BENCH_NAMES = HostNames(
    bridge="hbn0",
    subnet=SUBNET,
    netns_prefix="hbn-",
    veth_prefix="hbv",
    nft_table="hbn",
    cgroup_parent=CGROUP_PARENT,
    extra_env={
        "HUTCH_NODE_ENVD_READY_TIMEOUT_S": "120",
        "HUTCH_NODE_MAX_SANDBOXES": "1000",
        "HUTCH_MAX_SANDBOXES_PER_NODE": "1000",
    },
)


def new_instance(
    home: Path, extra_env: dict[str, str] | None = None, *, envd_bundle: Path | None = None
) -> Serve:
    """The e2e tests' ``Serve`` on the benchmarks' own names; envd's bundle is this
    checkout's unless ``envd_bundle`` names another (a before/after comparison)."""
    return Serve(
        home=home,
        envd_bundle=envd_bundle or nodehelpers.cached_envd_bundle(),
        extra_env=dict(extra_env or {}),
        names=BENCH_NAMES,
    )


def cgroup_usage_bytes(sandbox_host_id: str) -> int | None:
    """Memory cgroup usage of one sandbox (v1 ``memory.usage_in_bytes``, v2 ``memory.current``)."""
    saved = nodehelpers.CGROUP_PARENT
    nodehelpers.CGROUP_PARENT = CGROUP_PARENT
    try:
        parents = nodehelpers.cgroup_parents()
    finally:
        nodehelpers.CGROUP_PARENT = saved
    for parent in parents:
        for name in ("memory.usage_in_bytes", "memory.current"):
            path = parent / sandbox_host_id / name
            if path.is_file():
                return int(path.read_text())
    return None


def remove_home(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)
