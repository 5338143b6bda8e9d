"""The network seam of the node: settings, results and the ``SandboxNetworks`` Protocol.

Everything above this module speaks sandbox ids and addresses; everything below it
(``linux.py``) speaks iproute2 and nftables. The node's domain code depends on the
Protocol only and gets an implementation handed in by its composition root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Protocol

from hutch.shared.egress import EgressPolicy
from hutch.shared.errors import InvalidArgumentError

#: Linux caps interface names at 15 bytes (IFNAMSIZ - 1).
IFNAME_MAX = 15

#: The hash part of a host veth name must stay long enough to make collisions negligible
#: (32 bits: about one in 10^4 for a thousand sandboxes on one node).
_MIN_VETH_HASH_CHARS = 8

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: Networks a sandbox with internet access still must not reach by default: link-local
#: (cloud metadata services at 169.254.169.254), the private ranges of RFC 1918 (the
#: host's LAN and its neighbours) and carrier-grade NAT space (RFC 6598).
DEFAULT_DENIED_EGRESS: tuple[str, ...] = (
    "169.254.0.0/16",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
)


@dataclass(frozen=True, kw_only=True)
class NetworkSettings:
    """How the node lays out sandbox networking on its host.

    Every name here is global on the host, so two hutch nodes (or a node and the test
    suite) on one host must use different values for all of them.
    """

    #: The host bridge every sandbox's veth is attached to.
    bridge: str = "hutch0"
    #: Sandbox addresses come from here; the host takes the first address (the gateway).
    subnet: IPv4Network = field(default_factory=lambda: IPv4Network("10.11.0.0/16"))
    #: Sandbox network namespaces are ``/run/netns/<netns_prefix><sandbox_id>``.
    netns_prefix: str = "hutch-"
    #: Host-side veths are ``<veth_prefix><hash of sandbox id>``, 15 characters in all.
    veth_prefix: str = "hutch"
    #: The name of our nftables tables (``inet <table>`` and ``bridge <table>``).
    table: str = "hutch"
    #: The interface name of the sandbox's end of the veth pair, inside its netns.
    sandbox_ifname: str = "eth0"
    #: Destinations that stay unreachable even for sandboxes allowed internet access.
    denied_egress: tuple[IPv4Network, ...] = field(
        default_factory=lambda: tuple(IPv4Network(n) for n in DEFAULT_DENIED_EGRESS)
    )
    #: Set ``net.ipv4.ip_forward=1`` host-wide (production: the uplink is not known).
    #: When false only the bridge gets forwarding, and the operator (or a test) enables it
    #: on the uplink itself.
    manage_ip_forward: bool = True
    #: The egress filter's port on the gateway address: sandboxes with domain rules have
    #: their TCP to ports 80 and 443 redirected there (``egress/``, ADR 0022).
    egress_filter_port: int = 3129
    #: At most this many concurrent connections (conntrack entries) a sandbox may open
    #: (``ct count``); a new one beyond it is refused. 0: no cap.
    max_connections: int = 1024
    #: The resolvers a sandbox whose ``allowOut`` names domains may always reach (UDP and
    #: TCP 53), unless its policy lists its own ``dns_servers``: the sandboxes'
    #: ``resolv.conf`` servers.
    dns_servers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        subnet = IPv4Network(self.subnet)
        object.__setattr__(self, "subnet", subnet)
        object.__setattr__(self, "denied_egress", tuple(IPv4Network(n) for n in self.denied_egress))
        if subnet.prefixlen > 29:
            raise InvalidArgumentError(f"subnet {subnet} is too small for sandboxes")
        for what, name in (("bridge", self.bridge), ("sandbox_ifname", self.sandbox_ifname)):
            if not _NAME_RE.match(name) or len(name) > IFNAME_MAX:
                raise InvalidArgumentError(f"{what} {name!r} is not a valid interface name")
        if not _NAME_RE.match(self.veth_prefix):
            raise InvalidArgumentError(f"veth_prefix {self.veth_prefix!r} is not valid")
        if IFNAME_MAX - len(self.veth_prefix) < _MIN_VETH_HASH_CHARS:
            raise InvalidArgumentError(
                f"veth_prefix {self.veth_prefix!r} is too long: at most "
                f"{IFNAME_MAX - _MIN_VETH_HASH_CHARS} characters"
            )
        for what, name in (("netns_prefix", self.netns_prefix), ("table", self.table)):
            if not _NAME_RE.match(name):
                raise InvalidArgumentError(f"{what} {name!r} is not valid")

    @property
    def gateway(self) -> IPv4Address:
        """The host's address on the bridge: the subnet's first address."""
        return self.subnet.network_address + 1


@dataclass(frozen=True, kw_only=True)
class SandboxNetwork:
    """A sandbox's network, as set up: what the runtime and the proxy need to know."""

    sandbox_id: str
    #: Bind-mounted namespace file; hand it to the OCI runtime as the network namespace.
    netns_path: str
    netns_name: str
    address: IPv4Address
    gateway: IPv4Address
    #: Always 32: the sandbox reaches everything, the host included, through the gateway.
    prefixlen: int
    host_veth: str
    sandbox_ifname: str
    mac: str
    allow_internet: bool


@dataclass(frozen=True, kw_only=True)
class AttachedNetwork:
    """What the live system holds for one sandbox id, found by :meth:`list_attached`.

    Any part may be missing after a crash half-way through a setup or teardown.
    """

    sandbox_id: str
    netns_name: str | None
    host_veth: str | None
    address: IPv4Address | None


class SandboxNetworks(Protocol):
    """Per-sandbox networks on one host: the strict cut-off the node's domain uses."""

    async def ensure_bridge(self) -> None:
        """Create (or repair) the bridge, its address, forwarding and our firewall tables."""
        ...

    async def setup(
        self,
        sandbox_id: str,
        *,
        allow_internet: bool,
        address: IPv4Address | None = None,
        policy: EgressPolicy | None = None,
    ) -> SandboxNetwork:
        """Give ``sandbox_id`` a netns with a private address on the bridge.

        ``policy`` (default: all, or nothing without ``allow_internet``) is in force
        before the port is up.
        """
        ...

    async def apply_policy(self, address: IPv4Address, policy: EgressPolicy) -> None:
        """Replace the egress policy of the sandbox at ``address`` (atomically)."""
        ...

    async def teardown(self, sandbox_id: str, *, address: IPv4Address | None = None) -> None:
        """Release everything ``sandbox_id`` holds; succeeds if nothing is left."""
        ...

    async def list_attached(self) -> list[AttachedNetwork]:
        """Every sandbox network that exists on the host, known to this node or not."""
        ...
