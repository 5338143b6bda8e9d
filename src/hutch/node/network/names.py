"""Deterministic names for the per-sandbox objects on the host (pure functions).

Teardown must find everything from the sandbox id alone, even after a crash lost the
node's memory, so every name is derived from the id (or the address), never random.
"""

from __future__ import annotations

import hashlib
import re
from ipaddress import IPv4Address

from hutch.node.network.base import IFNAME_MAX, NetworkSettings
from hutch.shared.errors import InvalidArgumentError

# E2B's sandbox ids are lower-case alphanumerics; allow a little more, but nothing that
# could escape a path, an nft string or an ip(8) batch line.
_SANDBOX_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")

#: The MAC of a sandbox's interface is 02:68:<its IPv4 address>: locally administered,
#: unicast, and 0x68 ("h") marks it as hutch's.
_MAC_PREFIX = "02:68"


def check_sandbox_id(sandbox_id: str) -> str:
    """Return ``sandbox_id`` if it is safe to put into names, or raise."""
    if not _SANDBOX_ID_RE.match(sandbox_id):
        raise InvalidArgumentError(f"invalid sandbox id {sandbox_id!r}")
    return sandbox_id


def netns_name(settings: NetworkSettings, sandbox_id: str) -> str:
    """The name of the sandbox's network namespace (under ``/run/netns``)."""
    return settings.netns_prefix + check_sandbox_id(sandbox_id)


def sandbox_id_from_netns(settings: NetworkSettings, name: str) -> str | None:
    """The sandbox id a namespace name belongs to, or None if it is not one of ours."""
    if not name.startswith(settings.netns_prefix):
        return None
    rest = name[len(settings.netns_prefix) :]
    return rest if _SANDBOX_ID_RE.match(rest) else None


def veth_name(settings: NetworkSettings, sandbox_id: str) -> str:
    """The host end of the sandbox's veth pair.

    Interface names hold 15 bytes, too few for a sandbox id, so the name carries a hash
    of the id; the id itself is kept in the interface's alias (see ``linux.py``).
    """
    digest = hashlib.blake2b(check_sandbox_id(sandbox_id).encode(), digest_size=16).hexdigest()
    return settings.veth_prefix + digest[: IFNAME_MAX - len(settings.veth_prefix)]


def mac_for(address: IPv4Address) -> str:
    """The MAC the sandbox's interface gets: fixed by its address, so rules can pin it."""
    return _MAC_PREFIX + "".join(f":{b:02x}" for b in address.packed)


def veth_alias(sandbox_id: str, address: IPv4Address) -> str:
    """The alias stored on the host veth: how reconcile maps a veth back to its sandbox."""
    return f"hutch {sandbox_id} {address}"


def parse_veth_alias(alias: str) -> tuple[str, IPv4Address] | None:
    """Inverse of :func:`veth_alias`; None for an alias we did not write."""
    parts = alias.split()
    if len(parts) != 3 or parts[0] != "hutch" or not _SANDBOX_ID_RE.match(parts[1]):
        return None
    try:
        return parts[1], IPv4Address(parts[2])
    except ValueError:
        return None
