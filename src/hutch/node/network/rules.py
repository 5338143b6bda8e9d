"""The nftables and iproute2 text hutch feeds to ``nft -f`` and ``ip -batch`` (pure).

Kept apart from the adapter so that what we ask the kernel for can be read, and unit
tested, without root. Every script is written to be applied atomically and repeatedly.

The firewall lives in two tables of our own and never touches anyone else's:

``inet <table>``
    * ``prerouting``: a sandbox's packets to another sandbox are refused.
    * ``dstnat``: TCP to 80/443 of a sandbox with domain rules goes to the egress filter.
    * ``forward``: nothing passes between two sandboxes (``iifname B oifname B``, which
      also catches bridged frames when ``br_netfilter`` is loaded); never to
      ``denied_egress``; a new connection from a sandbox jumps to its own egress chain
      (map ``policies``, filled by :func:`policy_script`; a source without one is
      refused: fail closed); nothing from outside opens a connection into a sandbox.
    * ``prerouting`` also caps each sandbox's concurrent connections (``ct count``).
    * ``input``: a sandbox can answer the host (the proxy's connections) and reach the
      egress filter through the dstnat, but never open a connection to a service on
      the host, on any of its addresses.
    * ``postrouting``: masquerade the subnet out of every interface but the bridge.

``bridge <table>``
    * ``prerouting``: a sandbox port may only send frames from its own MAC and IPv4
      address (also in ARP), and only IPv4 and ARP, so no sandbox can borrow another's
      address to get around its policy or to steal the proxy's traffic.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from hutch.node.network.base import NetworkSettings
from hutch.node.network.names import mac_for
from hutch.shared.egress import EgressPolicy

# Refuse rather than drop what a sandbox may not do: its programs fail at once (pip with
# no internet access says so instead of hanging), and it learns nothing it could not
# learn from a drop. Only traffic *into* sandboxes from outside is dropped silently.
_REJECT = "reject with icmpx admin-prohibited"


def firewall_script(settings: NetworkSettings) -> str:
    """The nft script that creates or repairs our tables, keeping their set elements.

    ``add`` is a no-op for what exists and every chain is flushed before its rules are
    added, so running it again on a live node changes nothing and drops no sandbox.
    """
    t = settings.table
    br = f'"{settings.bridge}"'
    ports = f'"{settings.veth_prefix}*"'
    gw = settings.gateway
    lines = [
        f"add table inet {t}",
        # Per sandbox address: a jump to its egress chain (``policy_script``); a source
        # without one is refused (egress is fail-closed).
        f"add map inet {t} policies {{ type ipv4_addr : verdict; }}",
        # Per sandbox address with domain rules: a jump to its redirect chain (nat).
        f"add map inet {t} redirects {{ type ipv4_addr : verdict; }}",
        f"add set inet {t} conns {{ type ipv4_addr; size 65535; flags dynamic; }}",
        f"add set inet {t} denied_egress {{ type ipv4_addr; flags interval; auto-merge; }}",
        f"flush set inet {t} denied_egress",
    ]
    if settings.denied_egress:
        nets = ", ".join(str(n) for n in settings.denied_egress)
        lines.append(f"add element inet {t} denied_egress {{ {nets} }}")
    lines += [
        # TCP to 80/443 of a sandbox with domain rules goes to the egress filter.
        f"add chain inet {t} dstnat {{ type nat hook prerouting priority dstnat; policy accept; }}",
        f"flush chain inet {t} dstnat",
        f"add rule inet {t} dstnat iifname {br} ip saddr vmap @redirects",
        # Sandbox to sandbox is refused before routing: in `forward` the kernel would
        # already have sent an ICMP redirect ("go direct") and then swallowed our reject.
        f"add chain inet {t} prerouting"
        " { type filter hook prerouting priority filter; policy accept; }",
        f"flush chain inet {t} prerouting",
        f"add rule inet {t} prerouting iifname {br} ip daddr {settings.subnet}"
        f" ip daddr != {settings.gateway} {_REJECT}",
    ]
    if settings.max_connections > 0:
        # The cap on a sandbox's concurrent connections (its conntrack entries), so one
        # sandbox cannot exhaust the node's conntrack table or ports. After dstnat, so
        # connections to the egress filter count too.
        # TCP gets a reset: ICMP errors are rate-limited by the kernel, so a flood's
        # refused SYNs would otherwise hang on retransmits instead of failing at once.
        over = f"add @conns {{ ip saddr ct count over {settings.max_connections} }}"
        lines += [
            f"add rule inet {t} prerouting iifname {br} meta l4proto tcp ct state new"
            f" {over} reject with tcp reset",
            f"add rule inet {t} prerouting iifname {br} meta l4proto != tcp ct state new"
            f" {over} {_REJECT}",
        ]
    lines += [
        f"add chain inet {t} forward"
        " { type filter hook forward priority filter; policy accept; }",
        f"flush chain inet {t} forward",
        f"add rule inet {t} forward iifname {br} oifname {br} drop",
        f"add rule inet {t} forward iifname {br} meta nfproto != ipv4 {_REJECT}",
        # Whatever a policy says: never the metadata range, the LAN, other sandboxes.
        f"add rule inet {t} forward iifname {br} ip daddr @denied_egress {_REJECT}",
        # A policy decides new connections; open ones keep going after an update.
        f"add rule inet {t} forward iifname {br} ct state established,related accept",
        f"add rule inet {t} forward iifname {br} ip saddr vmap @policies",
        f"add rule inet {t} forward iifname {br} {_REJECT}",
        f"add rule inet {t} forward oifname {br} ct state established,related accept",
        f"add rule inet {t} forward oifname {br} drop",
        f"add chain inet {t} input {{ type filter hook input priority filter; policy accept; }}",
        f"flush chain inet {t} input",
        f"add rule inet {t} input iifname {br} ct state established,related accept",
        # Only connections our dstnat sent to the filter; a sandbox dialing the port
        # itself is refused like any other host service.
        f"add rule inet {t} input iifname {br} ip daddr {gw}"
        f" tcp dport {settings.egress_filter_port} ct status dnat accept",
        f"add rule inet {t} input iifname {br} {_REJECT}",
        f"add chain inet {t} postrouting"
        " { type nat hook postrouting priority srcnat; policy accept; }",
        f"flush chain inet {t} postrouting",
        f"add rule inet {t} postrouting oifname != {br} ip saddr {settings.subnet} masquerade",
        f"add table bridge {t}",
        f"add set bridge {t} ports {{ type ifname . ether_addr; }}",
        f"add set bridge {t} addrs {{ type ifname . ipv4_addr; }}",
        f"add chain bridge {t} prerouting"
        " { type filter hook prerouting priority filter; policy accept; }",
        f"flush chain bridge {t} prerouting",
        # `meta ibrname` would be exact, but kernels without nft_meta_bridge refuse it; the
        # veth prefix is ours alone, and a bridge is never a port of itself.
        f"add rule bridge {t} prerouting iifname != {ports} accept",
        f"add rule bridge {t} prerouting iifname . ether saddr != @ports drop",
        # Dropped, not refused: bridge-family reject is missing from some kernels (this
        # one), and only a sandbox forging its source address ever meets these rules.
        f"add rule bridge {t} prerouting ether type ip iifname . ip saddr != @addrs drop",
        f"add rule bridge {t} prerouting ether type arp iifname . arp saddr ip != @addrs drop",
        f"add rule bridge {t} prerouting ether type arp iifname . arp saddr ether != @ports drop",
        f"add rule bridge {t} prerouting ether type != {{ ip, arp }} drop",
    ]
    return "\n".join(lines) + "\n"


def remove_firewall_script(settings: NetworkSettings) -> str:
    """The nft script that deletes our tables (``add`` first, so it works if absent)."""
    t = settings.table
    return (
        f"add table inet {t}\ndelete table inet {t}\n"
        f"add table bridge {t}\ndelete table bridge {t}\n"
    )


def _ensure_absent(family_table_set: str, element: str) -> list[str]:
    # nft 1.0.6 (Debian 12) has no `destroy`; adding first makes the delete always valid.
    return [
        f"add element {family_table_set} {{ {element} }}",
        f"delete element {family_table_set} {{ {element} }}",
    ]


def _chains(address: IPv4Address) -> tuple[str, str]:
    # Named by the address, not the sandbox: a stale map element for a reused address
    # then always points at the chain the new sandbox's setup refills.
    tag = str(address).replace(".", "_")
    return f"egress_{tag}", f"redirect_{tag}"


def _set(items: list[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def policy_script(settings: NetworkSettings, *, address: IPv4Address, policy: EgressPolicy) -> str:
    """The nft script that puts ``policy`` in force for the sandbox at ``address``.

    One atomic transaction: its chains are created if missing, flushed and refilled,
    and its map elements (re)pointed at them. The egress chain, jumped to for every new
    connection from ``address`` that passed the absolute refusals (``denied_egress``):
    ``allowOut`` networks accept; with domains, the resolvers accept (UDP/TCP 53);
    ``denyOut`` networks reject; anything else accepts (no ``0.0.0.0/0`` denied). With
    domains, the redirect chain sends TCP to 80/443 (not to an allowed network) to the
    egress filter, which decides by Host/SNI.
    """
    t = settings.table
    egress, redirect = _chains(address)
    allow = [str(n) for n in policy.allow_networks]
    deny = [str(n) for n in policy.deny_networks if n.prefixlen > 0]
    lines = [
        f"add chain inet {t} {egress}",
        f"flush chain inet {t} {egress}",
        f"add chain inet {t} {redirect}",
        f"flush chain inet {t} {redirect}",
    ]
    if allow:
        lines.append(f"add rule inet {t} {egress} ip daddr {_set(allow)} accept")
    if policy.domains:
        servers = policy.dns_servers if policy.dns_servers is not None else settings.dns_servers
        if servers:
            dns = _set(list(servers))
            lines.append(f"add rule inet {t} {egress} ip daddr {dns} meta l4proto {{ tcp, udp }}"
                         " th dport 53 accept")  # fmt: skip
    if deny:
        lines.append(f"add rule inet {t} {egress} ip daddr {_set(deny)} {_REJECT}")
    lines.append(f"add rule inet {t} {egress} {_REJECT if policy.blocks_all else 'accept'}")
    lines.append(f"add element inet {t} policies {{ {address} : jump {egress} }}")
    lines += _ensure_absent(f"inet {t} redirects", f"{address} : jump {redirect}")
    if policy.domains:
        if allow:
            lines.append(f"add rule inet {t} {redirect} ip daddr {_set(allow)} return")
        lines.append(
            f"add rule inet {t} {redirect} tcp dport {{ 80, 443 }}"
            f" dnat ip to {settings.gateway}:{settings.egress_filter_port}"
        )
        lines.append(f"add element inet {t} redirects {{ {address} : jump {redirect} }}")
    return "\n".join(lines) + "\n"


def attach_elements_script(
    settings: NetworkSettings,
    *,
    host_veth: str,
    address: IPv4Address,
    mac: str,
    policy: EgressPolicy,
) -> str:
    """Set elements that admit one sandbox's port, and its egress policy."""
    t = settings.table
    lines = [
        f'add element bridge {t} ports {{ "{host_veth}" . {mac} }}',
        f'add element bridge {t} addrs {{ "{host_veth}" . {address} }}',
    ]
    return "\n".join(lines) + "\n" + policy_script(settings, address=address, policy=policy)


def detach_elements_script(
    settings: NetworkSettings, *, host_veth: str, address: IPv4Address, mac: str
) -> str:
    """Remove one sandbox's set elements and chains; valid whether or not they exist."""
    t = settings.table
    egress, redirect = _chains(address)
    lines = [
        *_ensure_absent(f"inet {t} policies", f"{address} : jump {egress}"),
        *_ensure_absent(f"inet {t} redirects", f"{address} : jump {redirect}"),
        *_ensure_absent(f"bridge {t} ports", f'"{host_veth}" . {mac}'),
        *_ensure_absent(f"bridge {t} addrs", f'"{host_veth}" . {address}'),
    ]
    for chain in (egress, redirect):
        lines += [
            f"add chain inet {t} {chain}",
            f"flush chain inet {t} {chain}",
            f"delete chain inet {t} {chain}",
        ]
    return "\n".join(lines) + "\n"


def host_link_batch(
    settings: NetworkSettings, *, netns: str, host_veth: str, mac: str, alias: str
) -> list[str]:
    """``ip -batch`` lines, run in the host netns, that create the netns and the veth pair."""
    return [
        f"netns add {netns}",
        f"link add {host_veth} type veth peer name {settings.sandbox_ifname}"
        f" address {mac} netns {netns}",
        f'link set dev {host_veth} alias "{alias}"',
        f"link set dev {host_veth} master {settings.bridge}",
        # L2 isolation: the bridge forwards a port's frames only to non-isolated ports,
        # i.e. the host, never to another sandbox.
        f"link set dev {host_veth} type bridge_slave isolated on",
        f"link set dev {host_veth} up",
    ]


def sandbox_link_batch(settings: NetworkSettings, *, address: IPv4Address) -> list[str]:
    """``ip -batch`` lines, run inside the sandbox's netns, that configure its side.

    The address is a /32 with only the gateway on-link: the sandbox sends everything,
    other sandboxes included, to the host, whose firewall refuses what is not allowed
    (an on-link /16 would have it ARP for its neighbours into the void and hang). The
    gateway's MAC is a permanent entry, so no ARP is needed at all and the anti-spoofing
    rules can be strict.
    """
    ifname = settings.sandbox_ifname
    gw = settings.gateway
    return [
        "link set dev lo up",
        # No IPv6 link-local address: sandboxes are IPv4 only and the bridge drops IPv6.
        f"link set dev {ifname} addrgenmode none",
        f"addr add {address}/32 dev {ifname}",
        f"link set dev {ifname} up",
        f"neigh replace {gw} lladdr {bridge_mac(settings)} dev {ifname} nud permanent",
        f"route add {gw} dev {ifname} scope link src {address}",
        f"route add default via {gw} dev {ifname} src {address}",
    ]


def bridge_mac(settings: NetworkSettings) -> str:
    """The bridge's fixed MAC: 02:68 and the gateway address, like a sandbox's."""
    return mac_for(settings.gateway)


def bridge_batch(settings: NetworkSettings, *, exists: bool) -> list[str]:
    """``ip -batch`` lines that create (if needed) and configure the bridge.

    The bridge gets a fixed MAC: by default a bridge takes its lowest port's MAC, which
    would change as sandboxes come and go and break their permanent gateway entries.
    """
    mac = bridge_mac(settings)
    lines = (
        [f"link set dev {settings.bridge} address {mac}"]
        if exists
        else [f"link add {settings.bridge} address {mac} type bridge"]
    )
    return [
        *lines,
        f"addr replace {settings.gateway}/{settings.subnet.prefixlen} dev {settings.bridge}",
        f"link set dev {settings.bridge} up",
    ]
