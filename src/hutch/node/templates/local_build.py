"""A step build on this host outside ``hutch serve`` (install.sh's templates).

The build's steps run in a real build sandbox, as ``hutch serve``'s SDK builds do, on a
private node of its own: its own home for sandboxes and runtime state
(``<home>/.build-node``, so a ``hutch serve`` on the same home never sees the build
sandbox, nor the reverse), its own host names (bridge ``hib0`` on 10.218.0.0/24, netns
``hib-*``, veths ``hib*``, nft table ``hib``, cgroup ``/hutch-build``), no warm pool. The
sandbox reaches package registries through NAT: forwarding is turned on for the uplink
for the build only (``network/uplink.py``). Leftovers of a crashed build are destroyed
before the next one starts; the bridge and firewall are removed afterwards.

Those names and the uplink's forwarding are the host's, whatever the home: one local build
runs on a host at a time. Each holds ``BUILD_LOCK`` (``flock``, released by the kernel if
the build dies) from before its node starts to after its bridge is gone; a second waits for
it (and says so in its log) instead of destroying the first's sandbox as a crashed
leftover and removing the bridge under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import Final

from hutch.node.app import build_node
from hutch.node.network.uplink import uplink_forwarding
from hutch.node.settings import NodeSettings
from hutch.node.templates.artifact import TemplateArtifact
from hutch.node.templates.build import BuildLog, BuildSpec, build_template

BUILD_NODE_DIR: Final = ".build-node"
#: Held for a whole local build (see the module docstring); host-wide like the build node's
#: names, so not under the home.
BUILD_LOCK: Final = Path("/run/lock/hutch-build-node.lock")


def build_node_settings(home: Path) -> NodeSettings:
    """The private build node's settings for the install home ``home``."""
    return NodeSettings(
        home=home / BUILD_NODE_DIR,
        bridge="hib0",
        subnet=IPv4Network("10.218.0.0/24"),
        netns_prefix="hib-",
        veth_prefix="hib",
        nft_table="hib",
        cgroup_parent="/hutch-build",
        manage_ip_forward=False,
        envd_bundle_dir=home / "envd",
        pool_size="",
        shared_templates_dir=None,
        envd_ready_timeout_s=60.0,
    )


@contextlib.asynccontextmanager
async def one_build_at_a_time(lock: Path, log: BuildLog) -> AsyncIterator[None]:
    """Hold ``lock`` exclusively for the block, waiting (in a thread) while another holds it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("info", f"waiting for another local template build on this host ({lock})", None)
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # the lock goes with the last descriptor


async def build_locally(
    spec: BuildSpec, *, home: Path, log: BuildLog, lock: Path = BUILD_LOCK
) -> TemplateArtifact:
    """Run ``spec`` in a build sandbox of a private node; publish into ``home/templates``."""
    async with one_build_at_a_time(lock, log):
        node = build_node(build_node_settings(home), build_bundle=False)
        try:
            await node.manager.start()
            await node.manager.reconcile([])  # a crashed build's sandbox, if any
            with uplink_forwarding():
                return await build_template(
                    spec, sandboxes=node.manager, templates_dir=home / "templates", log=log
                )
        finally:
            try:
                await node.manager.reconcile([])
            finally:
                await node.networks.remove_bridge()
                await node.aclose()
