"""A fake internet for the network e2e tests: a test host in its own network namespace.

``hsnet<SLOT>`` (``HUTCH_TEST_SLOT`` moves every name and address) holds 198.18.(100+SLOT)
.2 and .3 (web servers: HTTP 80/8080, TLS 443, a connection holder on 8081), .53 (DNS)
and a UDP recorder on .2:9999, behind the host link ``hsnh<SLOT>`` (.1). The zone maps
``allowed.test`` and ``*.wild.test`` (and ``wild.test``) to .2, ``denied.test`` to .3,
``meta.test`` to the metadata address and ``host.test`` to the host's own link address.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

SLOT = int(os.environ.get("HUTCH_TEST_SLOT", "0") or "0")
NETNS = f"hsnet{SLOT}"
HOST_LINK = f"hsnh{SLOT}"
PREFIX = f"198.18.{100 + SLOT}"
HOST_ADDR = f"{PREFIX}.1"
WEB_A = f"{PREFIX}.2"
WEB_B = f"{PREFIX}.3"
DNS = f"{PREFIX}.53"
ZONE = {
    "allowed.test": WEB_A,
    "denied.test": WEB_B,
    "wild.test": WEB_A,
    "*.wild.test": WEB_A,
    "meta.test": "169.254.169.254",
    "host.test": HOST_ADDR,
}


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


@dataclass
class FakeInternet:
    """A running fake internet: its addresses, and what its servers recorded."""

    proc: subprocess.Popen[str]

    def events(self) -> list[dict[str, object]]:
        data: list[dict[str, object]] = httpx.get(f"http://{WEB_A}:7000/log", timeout=10).json()
        return data


def _remove() -> None:
    sh("ip", "link", "del", "dev", HOST_LINK, check=False)
    sh("ip", "netns", "del", NETNS, check=False)


@contextlib.contextmanager
def fake_internet(workdir: Path) -> Iterator[FakeInternet]:
    """Create the namespace, its link and servers; remove everything afterwards."""
    _remove()  # a crashed run's leftovers
    key, cert = workdir / "fake.key", workdir / "fake.crt"
    names = ",".join(f"DNS:{n}" for n in [*ZONE, "*.test"])
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
       "/CN=fake internet", "-addext", f"subjectAltName={names}", "-keyout", str(key),
       "-out", str(cert))  # fmt: skip
    config = workdir / "fakenet.json"
    config.write_text(json.dumps(
        {"web": [WEB_A, WEB_B], "dns": DNS, "zone": ZONE, "cert": str(cert), "key": str(key)}
    ))  # fmt: skip
    proc: subprocess.Popen[str] | None = None
    try:
        sh("ip", "netns", "add", NETNS)
        sh("ip", "link", "add", HOST_LINK, "type", "veth", "peer", "name", "eth0", "netns", NETNS)
        sh("ip", "addr", "add", f"{HOST_ADDR}/24", "dev", HOST_LINK)
        sh("ip", "link", "set", "dev", HOST_LINK, "up")
        # Replies to the sandboxes' NATed connections arrive here and go on to the bridge.
        Path(f"/proc/sys/net/ipv4/conf/{HOST_LINK}/forwarding").write_text("1")
        sh("ip", "-n", NETNS, "link", "set", "dev", "lo", "up")
        for address in (WEB_A, WEB_B, DNS):
            sh("ip", "-n", NETNS, "addr", "add", f"{address}/24", "dev", "eth0")
        sh("ip", "-n", NETNS, "link", "set", "dev", "eth0", "up")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", NETNS, sys.executable,
             str(Path(__file__).with_name("server.py")), str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            if line.strip() == "ready":
                break
        if line.strip() != "ready":
            raise RuntimeError(f"the fake internet did not start: {line}")
        yield FakeInternet(proc=proc)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _remove()
