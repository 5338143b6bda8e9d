"""A step build on this host outside ``hutch serve`` (install.sh's templates).

The build's steps run in a real build sandbox, as ``hutch serve``'s SDK builds do, on a
private node of its own: its own home for sandboxes and runtime state
(``<home>/.build-node``, so a ``hutch serve`` on the same home never sees the build
sandbox, nor the reverse), its own host names (bridge ``hib0`` on 10.218.0.0/24, netns
``hib-*``, veths ``hib*``, nft table ``hib``, cgroup ``/hutch-build``), no warm pool. The
sandbox reaches package registries through NAT: forwarding is turned on for the uplink
for the build only (``network/uplink.py``). Leftovers of a crashed build are destroyed
before the next one starts; the bridge and firewall are removed afterwards.
"""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path
from typing import Final

from hutch.node.app import build_node
from hutch.node.network.uplink import uplink_forwarding
from hutch.node.settings import NodeSettings
from hutch.node.templates.artifact import TemplateArtifact
from hutch.node.templates.build import BuildLog, BuildSpec, build_template

BUILD_NODE_DIR: Final = ".build-node"


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


async def build_locally(spec: BuildSpec, *, home: Path, log: BuildLog) -> TemplateArtifact:
    """Run ``spec`` in a build sandbox of a private node; publish into ``home/templates``."""
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
