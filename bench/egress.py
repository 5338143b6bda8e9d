"""The egress filter's cost: connection setup and throughput through it vs. direct.

Run as root from the repository:

    .venv/bin/python bench/egress.py [--n 200] [--mib 256]

Starts the tests' fake internet (``tests/e2e/fakenet``, netns ``hsnet<SLOT>``) and a
private ``hutch serve`` on its own host names (``hbe*``: bridge ``hbe0`` on 10.216.9.0/24)
whose node resolves through the fake resolver, and two ``base`` sandboxes: one with the
default policy (its TCP to port 80 goes straight out through NAT) and one with
``allowOut: ["allowed.test"]``, ``denyOut: ["0.0.0.0/0"]`` (its TCP to port 80 is
redirected to the filter, which reads the Host, resolves the name and dials it). In each,
a Python loop measures ``--n`` times the time from ``connect()`` to the first byte of the
answer to ``GET /`` (connection setup plus one round trip: what the filter adds is its
accept, read of the headers, resolve and dial), then the throughput of one ``GET
/bytes/<--mib MiB>``. The two sandboxes take turns, so drift hits both alike. Prints a
table; removes everything it made, also when a step fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from _table import print_table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from e2b import Sandbox  # noqa: E402

from tests.e2e.fakenet.net import DNS, WEB_A, fake_internet  # noqa: E402
from tests.e2e.serveproc import HostNames, Serve, nodehelpers, seed_templates  # noqa: E402

NAMES = HostNames(
    bridge="hbe0", subnet="10.216.9.0/24", netns_prefix="hbe-", veth_prefix="hbev",
    nft_table="hbe", cgroup_parent=f"hbe-{os.getpid()}",
    extra_env={
        "HUTCH_NODE_POOL_SIZE": "", "HUTCH_NODE_SHARED_TEMPLATES_DIR": "",
        "HUTCH_NODE_DNS_SERVERS": json.dumps([DNS]), "HUTCH_NODE_EGRESS_RESOLVER": DNS,
    },
)  # fmt: skip

_PROBE = r"""
import json, socket, sys, time
host, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
setup = []
for _ in range(n):
    t0 = time.perf_counter()
    s = socket.create_connection((host, 80), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
    assert s.recv(1)
    setup.append(time.perf_counter() - t0)
    s.close()
s = socket.create_connection((host, 80), timeout=30)
s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: allowed.test\r\n\r\n" % size)
got, t0 = 0, time.perf_counter()
while chunk := s.recv(1 << 20):
    got += len(chunk)
elapsed = time.perf_counter() - t0
print(json.dumps({"setup": setup, "bytes": got, "seconds": elapsed}))
"""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="connections per path per round")
    parser.add_argument("--mib", type=int, default=256, help="MiB downloaded per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-egress-") as tmp:
        work = Path(tmp)
        with fake_internet(work):
            home = work / "home"
            home.mkdir()
            seed_templates(home)
            serve = Serve(home=home, envd_bundle=nodehelpers.cached_envd_bundle(), names=NAMES)
            key = serve.hutch("keys", "create").strip()
            opts = {"api_key": key, "api_url": serve.api_url, "sandbox_url": serve.sandbox_url}
            with serve.running():
                direct = Sandbox.create("base", timeout=600, **opts)
                filtered = Sandbox.create(
                    "base", timeout=600, network={"allow_out": ["allowed.test"],
                                                  "deny_out": ["0.0.0.0/0"]}, **opts,
                )  # fmt: skip
                try:
                    results: dict[str, dict[str, list[float]]] = {
                        "direct (NAT)": {"setup": [], "mibps": []},
                        "through the filter": {"setup": [], "mibps": []},
                    }
                    for sbx in (direct, filtered):
                        sbx.files.write("/tmp/probe.py", _PROBE)
                    size = args.mib * 1024 * 1024
                    for _ in range(args.rounds):
                        for name, sbx in (
                            ("direct (NAT)", direct),
                            ("through the filter", filtered),
                        ):
                            out = sbx.commands.run(
                                f"python3 /tmp/probe.py {WEB_A} {args.n} {size}", timeout=600
                            ).stdout
                            data = json.loads(out)
                            assert data["bytes"] > size, data["bytes"]
                            results[name]["setup"] += data["setup"]
                            results[name]["mibps"].append(data["bytes"] / 2**20 / data["seconds"])
                finally:
                    direct.kill()
                    filtered.kill()
    rows = []
    for name, r in results.items():
        setup = r["setup"]
        ms = [f"{_pct(setup, q) * 1000:.2f}" for q in (0.5, 0.9, 0.99)]
        mibps = f"{max(r['mibps']):.0f} / {min(r['mibps']):.0f}"
        rows.append([name, str(len(setup)), *ms, mibps])
    print_table(
        f"Egress: connect to first byte of GET / (ms) and throughput of {args.mib} MiB",
        rows, ["path", "connections", "p50", "p90", "p99", "MiB/s best / worst"],
    )  # fmt: skip


if __name__ == "__main__":
    main()
