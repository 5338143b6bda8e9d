"""A sandbox's egress policy (E2B's ``network.allowOut``/``denyOut``): parsing and matching.

Pure and shared: the api validates what a client sends with :func:`parse_policy` (a 400
naming the entry), the node parses what arrives on its wire with the same function
(never trusting the api blindly) and its egress filter matches hostnames with
:func:`domain_allowed`. See docs/network.md for the model and its limits.

Rules (E2B's, ``packages/api/internal/handlers/sandbox_create.go``):

* ``denyOut`` holds IPv4/IPv6 addresses and CIDRs only; ``allowOut`` also domains
  (``example.com``, ``*.example.com``: any subdomain, not the apex; ``*``: every name).
* An allow entry always wins over a deny entry.
* Domains in ``allowOut`` need ``0.0.0.0/0`` in ``denyOut``.
* ``allow_internet_access: false`` is ``denyOut: ["0.0.0.0/0"]``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from hutch.shared.errors import InvalidArgumentError

ALL_TRAFFIC = "0.0.0.0/0"
#: At most this many entries in each of ``allowOut`` and ``denyOut``.
MAX_ENTRIES = 200
#: E2B's limit on ``dnsServers``.
MAX_DNS_SERVERS = 10
#: The message E2B's API answers when domains come without ``0.0.0.0/0`` in ``denyOut``.
DOMAINS_NEED_BLOCK_ALL = (
    "When specifying allowed domains in allow out, you must include 'ALL_TRAFFIC' in "
    "deny out to block all other traffic."
)

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressPolicy:
    """What a sandbox may reach. The default (empty lists) allows everything.

    ``networks_*`` are the IPv4 entries, collapsed; ``domains`` the lower-cased domain
    entries of ``allowOut``; ``allow_out``/``deny_out`` the entries as given (shown by
    ``get_info()``). ``dns_servers`` (``dnsServers``): the resolvers a sandbox with
    domain rules may reach; ``None`` means the node's own.
    """

    allow_out: tuple[str, ...] = ()
    deny_out: tuple[str, ...] = ()
    dns_servers: tuple[str, ...] | None = None
    allow_networks: tuple[IPv4Network, ...] = ()
    deny_networks: tuple[IPv4Network, ...] = ()
    domains: tuple[str, ...] = ()

    @property
    def blocks_all(self) -> bool:
        """Whether ``0.0.0.0/0`` is denied (no internet but what ``allowOut`` lets out)."""
        return any(n.prefixlen == 0 for n in self.deny_networks)

    @property
    def is_default(self) -> bool:
        """Allows everything: no entries at all."""
        return not self.allow_out and not self.deny_out

    def to_json(self) -> dict[str, object]:
        """The entries as given (what the store and the node wire keep)."""
        out: dict[str, object] = {
            "allow_out": list(self.allow_out),
            "deny_out": list(self.deny_out),
        }
        if self.dns_servers is not None:
            out["dns_servers"] = list(self.dns_servers)
        return out


DEFAULT_POLICY = EgressPolicy()


def _network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


def check_domain(entry: str, *, field: str) -> str:
    """``entry`` as a lower-cased domain pattern, or a 400 naming it."""
    name = entry.strip().lower().rstrip(".")
    if name == "*":
        return name
    bare = name[2:] if name.startswith("*.") else name
    labels = bare.split(".")
    if (
        not bare
        or len(bare) > 253
        or not all(_LABEL.match(label) for label in labels)
        or bare.replace(".", "").isdigit()
    ):
        raise InvalidArgumentError(f"{field}: invalid domain or address {entry!r}")
    return name


def parse_policy(
    allow_out: Iterable[str] | None,
    deny_out: Iterable[str] | None,
    *,
    dns_servers: Iterable[str] | None = None,
    allow_internet: bool | None = None,
) -> EgressPolicy:
    """Validate and normalise a policy; :class:`InvalidArgumentError` names a bad entry.

    ``allow_internet`` False adds ``0.0.0.0/0`` to ``deny_out`` (once).
    """
    allow = [str(e) for e in allow_out or ()]
    deny = [str(e) for e in deny_out or ()]
    if allow_internet is False and ALL_TRAFFIC not in deny:
        deny.append(ALL_TRAFFIC)
    for field, entries in (("allowOut", allow), ("denyOut", deny)):
        if len(entries) > MAX_ENTRIES:
            raise InvalidArgumentError(
                f"{field}: too many entries ({len(entries)}, at most {MAX_ENTRIES})"
            )
    deny_nets: list[IPv4Network] = []
    for entry in deny:
        net = _network(entry)
        if net is None:
            if _looks_like_domain(entry):
                raise InvalidArgumentError(
                    f"invalid denied CIDR {entry}: denyOut takes IP addresses and CIDRs, "
                    "not domains"
                )
            raise InvalidArgumentError(f"invalid denied CIDR {entry}")
        _check_specified(entry, net, what="denied CIDR")
        if isinstance(net, IPv4Network):
            deny_nets.append(net)
        # IPv6 entries are accepted and have nothing to deny: sandboxes have no IPv6.
    allow_nets: list[IPv4Network] = []
    domains: list[str] = []
    for entry in allow:
        net = _network(entry)
        if net is None:
            domains.append(check_domain(entry, field="allowOut"))
            continue
        _check_specified(entry, net, what="allowed address")
        if not isinstance(net, IPv4Network):
            raise InvalidArgumentError(f"invalid allowed address {entry}: sandboxes have IPv4 only")
        allow_nets.append(net)
    if domains and ALL_TRAFFIC not in deny:
        raise InvalidArgumentError(DOMAINS_NEED_BLOCK_ALL)
    servers: tuple[str, ...] | None = None
    if dns_servers is not None:
        listed = [str(s) for s in dns_servers]
        if len(listed) > MAX_DNS_SERVERS:
            raise InvalidArgumentError(
                f"dnsServers: too many entries ({len(listed)}, at most {MAX_DNS_SERVERS})"
            )
        for server in listed:
            try:
                IPv4Address(server)
            except ValueError:
                raise InvalidArgumentError(
                    f"dnsServers: {server!r} is not an IPv4 address"
                ) from None
        servers = tuple(listed)
    return EgressPolicy(
        allow_out=tuple(allow),
        deny_out=tuple(deny),
        dns_servers=servers,
        allow_networks=tuple(ipaddress.collapse_addresses(allow_nets)),
        deny_networks=tuple(ipaddress.collapse_addresses(deny_nets)),
        domains=tuple(dict.fromkeys(domains)),
    )


def policy_from_json(data: object) -> EgressPolicy:
    """Inverse of :meth:`EgressPolicy.to_json` (``None``/missing: the default)."""
    if not isinstance(data, dict):
        return DEFAULT_POLICY
    servers = data.get("dns_servers")
    return parse_policy(
        data.get("allow_out") or (),
        data.get("deny_out") or (),
        dns_servers=servers if isinstance(servers, list) else None,
    )


def _check_specified(entry: str, net: ipaddress._BaseNetwork, *, what: str) -> None:
    # 0.0.0.0 (or ::) as an address means nothing, and nft refuses it (infra's rule);
    # 0.0.0.0/0 is all traffic.
    if net.network_address.is_unspecified and net.prefixlen != 0:
        raise InvalidArgumentError(f"invalid {what} {entry}")
    if "/" not in entry and net.network_address.is_unspecified:
        raise InvalidArgumentError(f"invalid {what} {entry}")


def _looks_like_domain(entry: str) -> bool:
    try:
        check_domain(entry, field="denyOut")
    except InvalidArgumentError:
        return False
    return True


def domain_allowed(hostname: str, patterns: Sequence[str]) -> bool:
    """Whether ``hostname`` matches one of ``patterns`` (exact, ``*.suffix``, or ``*``).

    ``*.example.com`` matches every name under ``example.com`` at any depth, never
    ``example.com`` itself (E2B's ``MatchDomainPattern``). Case and one trailing dot
    are ignored; an empty or malformed hostname matches nothing.
    """
    name = hostname.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or name.startswith(".") or ".." in name or len(name) > 253:
        return False
    if not all(_LABEL.match(label) for label in name.split(".")):
        return False
    for pattern in patterns:
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False
