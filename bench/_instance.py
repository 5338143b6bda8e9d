"""A private ``hutch serve`` for the benchmarks: own home, free ports, own host names.

Everything global it creates is named after its slot S (``HUTCH_BENCH_SLOT``, else
``HUTCH_TEST_SLOT``, else 0; a digit): bridge ``hbnS`` on 10.220.(4S).0/22, netns ``hbnS-*``,
veths ``hbvS*``, nft table ``hbnS``, cgroup parent ``hbnS-<pid>``, apart from the tests'
``hse2e*``/``hsm*``/``hn*`` and the host's own ``hutch*``. Two benchmarks on different slots
run side by side; a second one on a slot in use is refused before it touches anything (its
cleanup would tear down the first one's sandboxes). ``destroy_everything`` removes all of it
again, also after a failed run.

The benchmarks that build their own host names (each its own subnet and prefixes, none a
prefix of another's, so one's cleanup never matches another's names):

=====================  ================  ======  =====  ======
bench                  subnet            bridge  netns  veths
=====================  ================  ======  =====  ======
this module (slot S)   10.220.(4S).0/22  hbnS    hbnS-  hbvS
interpreter.py         10.216.8.0/24     hbi0    hbi-   hbiv
egress.py              10.216.9.0/24     hbe0    hbe-   hbev
nodewire.py            10.216.10.0/24    hbw0    hbw-   hbwv
disk.py                10.216.11.0/24    hbd0    hbd-   hbdv
mcp_gateway.py         10.216.12.0/24    hbm0    hbm-   hbmv
cluster.py             10.250.N.0/24     hbc*    hbc*   hbc*
=====================  ================  ======  =====  ======

A new one takes the next free 10.216.N.0/24 and a three-letter prefix not yet listed.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.e2e.serveproc import HostNames, Serve, nodehelpers  # noqa: E402

__all__ = ["Serve", "bench_names", "new_instance"]


def bench_slot(env: dict[str, str] | os._Environ[str] = os.environ) -> int:
    """The slot from ``HUTCH_BENCH_SLOT`` (else ``HUTCH_TEST_SLOT``, else 0): one digit."""
    raw = env.get("HUTCH_BENCH_SLOT") or env.get("HUTCH_TEST_SLOT") or "0"
    if not (raw.isdigit() and 0 <= int(raw) <= 9):
        raise SystemExit(f"HUTCH_BENCH_SLOT must be a digit 0-9, not {raw!r}")
    return int(raw)


def bench_names(slot: int) -> HostNames:
    """Every host-global name of the benchmark instance on ``slot`` (0-9)."""
    return HostNames(
        bridge=f"hbn{slot}",
        # Each slot gets its own /22 (room for the fit test's 500 sandboxes), none of the tests'.
        subnet=f"10.220.{4 * slot}.0/22",
        netns_prefix=f"hbn{slot}-",
        veth_prefix=f"hbv{slot}",
        nft_table=f"hbn{slot}",
        cgroup_parent=f"hbn{slot}-{os.getpid()}",
        extra_env={
            "HUTCH_NODE_ENVD_READY_TIMEOUT_S": "120",
            "HUTCH_NODE_MAX_SANDBOXES": "1000",
            "HUTCH_MAX_SANDBOXES_PER_NODE": "1000",
        },
    )


SLOT = bench_slot()
BENCH_NAMES = bench_names(SLOT)
SUBNET = BENCH_NAMES.subnet
CGROUP_PARENT = BENCH_NAMES.cgroup_parent


def slot_in_use(names: HostNames) -> bool:
    """True while the slot's bridge exists (another benchmark, or a killed one's leftover)."""
    return Path("/sys/class/net", names.bridge).exists()


def new_instance(
    home: Path,
    extra_env: dict[str, str] | None = None,
    *,
    envd_bundle: Path | None = None,
    names: HostNames = BENCH_NAMES,
) -> Serve:
    """The e2e tests' ``Serve`` on the benchmarks' own names (``names``: another slot's,
    :func:`bench_names`); envd's bundle is this checkout's unless ``envd_bundle`` names
    another (a before/after comparison). ``extra_env`` may set ``PYTHONPATH`` to run
    another tree's ``hutch serve``.

    Refused when the slot's bridge exists: another benchmark runs on it (or a killed one
    left it: ``ip link del`` it, or pick another ``HUTCH_BENCH_SLOT``)."""
    if slot_in_use(names):
        raise SystemExit(
            f"bridge {names.bridge} exists: another benchmark uses its slot; "
            "set HUTCH_BENCH_SLOT to a free digit (or remove a killed run's bridge)"
        )
    return Serve(
        home=home,
        envd_bundle=envd_bundle or nodehelpers.cached_envd_bundle(),
        extra_env=dict(extra_env or {}),
        names=names,
    )


def cgroup_usage_bytes(sandbox_host_id: str, cgroup_parent: str = CGROUP_PARENT) -> int | None:
    """Memory cgroup usage of one sandbox (v1 ``memory.usage_in_bytes``, v2 ``memory.current``)."""
    saved = nodehelpers.CGROUP_PARENT
    nodehelpers.CGROUP_PARENT = cgroup_parent
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
