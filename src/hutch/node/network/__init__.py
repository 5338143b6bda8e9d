"""Per-sandbox networking on a node: a netns per sandbox on a private bridge, with NAT.

``base`` holds the seam (settings, results, the ``SandboxNetworks`` Protocol), ``ipam``
the pure address allocator, ``rules`` the nft/ip text, and ``linux`` the adapter that
runs it. See ``docs/network.md``.
"""

from hutch.node.network.base import (
    AttachedNetwork,
    NetworkSettings,
    SandboxNetwork,
    SandboxNetworks,
)
from hutch.node.network.ipam import AddressPool, allocate

__all__ = [
    "AddressPool",
    "AttachedNetwork",
    "NetworkSettings",
    "SandboxNetwork",
    "SandboxNetworks",
    "allocate",
]
