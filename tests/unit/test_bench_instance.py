"""``bench/_instance.py``: two benchmarks on different slots share no host-global name."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_PRINT = (
    "import dataclasses, json, _instance; "
    "print(json.dumps(dataclasses.asdict(_instance.BENCH_NAMES)))"
)


def _names(**env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_SLOT")}
    out = subprocess.run(
        [sys.executable, "-c", _PRINT], cwd=REPO / "bench", env={**clean, **env},
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    names: dict[str, str] = json.loads(out.stdout)
    return names


def test_bench_instance_names_differ_per_slot_and_process() -> None:
    a, b = _names(HUTCH_BENCH_SLOT="3"), _names(HUTCH_BENCH_SLOT="4")
    assert a["bridge"] == "hbn3" and b["bridge"] == "hbn4"
    for key in ("bridge", "netns_prefix", "veth_prefix", "nft_table", "cgroup_parent"):
        assert not a[key].startswith(b[key]) and not b[key].startswith(a[key]), key
    assert not ipaddress.ip_network(a["subnet"]).overlaps(ipaddress.ip_network(b["subnet"]))
    # The same slot in two processes: the cgroup parent still differs (pid).
    assert _names(HUTCH_BENCH_SLOT="3")["cgroup_parent"] != a["cgroup_parent"]
    # Without HUTCH_BENCH_SLOT, a helper's HUTCH_TEST_SLOT picks the slot.
    assert _names(HUTCH_TEST_SLOT="7")["bridge"] == "hbn7"


def test_bench_instance_refuses_a_slot_that_is_not_a_digit() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PRINT], cwd=REPO / "bench",
        env={**os.environ, "HUTCH_BENCH_SLOT": "12"}, capture_output=True, text=True,
        check=False, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0 and "HUTCH_BENCH_SLOT must be a digit" in out.stderr
