"""Helpers shared by the network tests (constants, commands, probes, leak checks).

Everything global these tests create carries the ``hn`` prefix (bridge ``hntest0``, netns
``hntest-*`` and ``hnup*``, links ``hnv*``/``hnup*``/``hndum*``, nft tables ``hntest``) and
uses 10.213.91.0/24 and 198.18.231-233.0/24, so nothing here touches another engineer's
objects or the host's own interfaces, routes and rules. Traffic only ever goes to
addresses inside namespaces these tests create, or to the host itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from hutch.node.network import NetworkSettings

PROBE = str(Path(__file__).with_name("netprobe.py"))

SUBNET = IPv4Network("10.213.91.0/24")
UPSTREAM_NETNS = "hnup0"
UPSTREAM_HOST_LINK = "hnuph0"
UPSTREAM_HOST_ADDR = IPv4Address("198.18.231.1")
UPSTREAM_ADDR = IPv4Address("198.18.231.2")
#: A second upstream address, in a network the test settings deny.
UPSTREAM_DENIED_ADDR = IPv4Address("198.18.232.2")
DENIED_NET = IPv4Network("198.18.232.0/24")
#: A host-local address on a dummy link: a "host service on another interface".
DUMMY_LINK = "hndum0"
DUMMY_ADDR = IPv4Address("198.18.233.1")


def network_settings() -> NetworkSettings:
    """Settings that collide with nothing else on the host."""
    return NetworkSettings(
        bridge="hntest0",
        subnet=SUBNET,
        netns_prefix="hntest-",
        veth_prefix="hnv",
        table="hntest",
        denied_egress=(DENIED_NET,),
        # Leave the host-wide knob alone; the fake uplink gets forwarding of its own.
        manage_ip_forward=False,
    )


def missing_system() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, bridges, nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian: iproute2, nftables)"
    return None


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} exited {result.returncode}: {result.stderr.strip()}")
    return result


def in_netns(netns: str, *argv: str) -> list[str]:
    """argv prefixed to run inside ``netns``."""
    return ["ip", "netns", "exec", netns, *argv]


def purge_test_objects() -> None:
    """Remove every object of ours a crashed earlier run may have left (ours only)."""
    netns_dir = Path("/run/netns")
    for name in sorted(os.listdir(netns_dir)) if netns_dir.exists() else []:
        if name.startswith(("hntest-", "hnup")):
            sh("ip", "netns", "del", name, check=False)
    for link in sorted(os.listdir("/sys/class/net")):
        if link.startswith(("hnv", "hnup", "hndum", "hntest")):
            sh("ip", "link", "del", "dev", link, check=False)
    for family in ("inet", "bridge"):
        sh("nft", "delete", "table", family, "hntest", check=False)


def our_objects() -> dict[str, list[str]]:
    """Every global object of ours that exists now (empty lists: nothing leaked)."""
    netns_dir = Path("/run/netns")
    netns = sorted(os.listdir(netns_dir)) if netns_dir.exists() else []
    tables = sh("nft", "list", "tables").stdout.split("\n")
    return {
        "netns": [n for n in netns if n.startswith(("hntest-", "hnup"))],
        "links": [
            link
            for link in sorted(os.listdir("/sys/class/net"))
            if link.startswith(("hnv", "hnup", "hndum", "hntest"))
        ],
        "tables": [t for t in tables if t.endswith(" hntest")],
    }


class Processes:
    """Probe processes started by a test, each stopped by its own PID at the end."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[str]] = []

    def start(self, argv: list[str]) -> tuple[subprocess.Popen[str], int]:
        """Start ``argv``, wait for its ``ready PORT`` line, and return it and the port."""
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._procs.append(proc)
        assert proc.stdout is not None
        words = proc.stdout.readline().split()
        if len(words) != 2 or words[0] != "ready":
            proc.kill()
            assert proc.stderr is not None
            raise AssertionError(f"{argv} did not start: {words!r} {proc.stderr.read()}")
        return proc, int(words[1])

    def output(self, proc: subprocess.Popen[str]) -> str:
        """The next line ``proc`` prints (blocks until it does)."""
        assert proc.stdout is not None
        return proc.stdout.readline().strip()

    def stop_all(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._procs.clear()


def probe(netns: str | None, *args: str) -> str:
    """Run one probe command (in ``netns``, or on the host) and return its output line."""
    return sh(*probe_argv(netns, *args)).stdout.strip()


def probe_argv(netns: str | None, *args: str) -> list[str]:
    """argv of a probe command, in ``netns`` or on the host."""
    argv = [sys.executable, PROBE, *args]
    return in_netns(netns, *argv) if netns else argv


@dataclass(frozen=True)
class Upstream:
    """A fake internet host in its own netns, routed behind the host like an uplink."""

    netns: str
    address: IPv4Address
    denied_address: IPv4Address
    host_address: IPv4Address


def write_sysctl(path: str, value: str) -> None:
    """Write a /proc/sys value."""
    Path(path).write_text(value)
