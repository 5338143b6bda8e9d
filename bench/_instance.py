"""A private ``hutch serve`` for the benchmarks: own home, free ports, own host names.

Everything global it creates is named ``hbn*`` (bridge ``hbn0`` on 10.216.0.0/22, netns
``hbn-*``, veths ``hbv*``, nft table ``hbn``, cgroup parent ``hbn-<pid>``), apart from the
tests' ``hse2e*``/``hsm*``/``hn*`` and the host's own ``hutch*``. ``destroy_everything``
removes all of it again, also after a failed run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration" / "node"))
import nodehelpers  # noqa: E402  (the envd bundle cache shared with the node tests)

from hutch.node.app import build_node  # noqa: E402
from hutch.node.settings import NodeSettings  # noqa: E402

SUBNET = "10.216.0.0/22"  # room for the fit test's 500 sandboxes
CGROUP_PARENT = f"hbn-{os.getpid()}"
NODE_ENV = {
    "HUTCH_NODE_BRIDGE": "hbn0",
    "HUTCH_NODE_SUBNET": SUBNET,
    "HUTCH_NODE_NETNS_PREFIX": "hbn-",
    "HUTCH_NODE_VETH_PREFIX": "hbv",
    "HUTCH_NODE_NFT_TABLE": "hbn",
    "HUTCH_NODE_CGROUP_PARENT": CGROUP_PARENT,
    "HUTCH_NODE_MANAGE_IP_FORWARD": "false",
    "HUTCH_NODE_ENVD_READY_TIMEOUT_S": "120",
    "HUTCH_NODE_MAX_SANDBOXES": "1000",
    "HUTCH_MAX_SANDBOXES_PER_NODE": "1000",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def envd_bundle() -> Path:
    """envd's bundle for this checkout (built once into the node tests' cache)."""
    return nodehelpers.cached_envd_bundle()


@dataclass
class Instance:
    """One ``hutch serve`` subprocess on ``home``; ``extra_env`` e.g. sets the pool size."""

    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    proxy_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.bundle = envd_bundle()

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(NODE_ENV, HUTCH_NODE_ENVD_BUNDLE_DIR=str(self.bundle), **self.extra_env)
        env["HUTCH_API_PORT"] = str(self.api_port)  # names it for `hutch` subcommands
        return env

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def hutch(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "hutch", *args, "--home", str(self.home)],
            env=self.env, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip

    def start(self) -> None:
        log = open(self.home / "serve.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hutch", "serve", "--home", str(self.home), "--host",
             "127.0.0.1", "--api-port", str(self.api_port), "--proxy-port", str(self.proxy_port)],
            env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hutch serve exited: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"hutch serve not healthy after 300 s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log_tail(self) -> str:
        return (self.home / "serve.log").read_text(errors="replace")[-3000:]

    def node_settings(self) -> NodeSettings:
        return NodeSettings(
            home=self.home, bridge="hbn0", subnet=SUBNET,  # type: ignore[arg-type]
            netns_prefix="hbn-", veth_prefix="hbv", nft_table="hbn",
            cgroup_parent=CGROUP_PARENT, manage_ip_forward=False, envd_bundle_dir=self.bundle,
        )  # fmt: skip

    def destroy_everything(self) -> None:
        """With serve stopped: destroy every sandbox left, the bridge, firewall and cgroups."""

        async def run() -> None:
            node = build_node(self.node_settings(), build_bundle=False)
            try:
                await node.manager.start()
                await node.manager.reconcile([])
            finally:
                await node.networks.remove_bridge()
                await node.aclose()

        asyncio.run(run())
        saved = nodehelpers.CGROUP_PARENT
        nodehelpers.CGROUP_PARENT = CGROUP_PARENT
        try:
            for parent in nodehelpers.cgroup_parents():
                with contextlib.suppress(OSError):
                    parent.rmdir()
        finally:
            nodehelpers.CGROUP_PARENT = saved


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
