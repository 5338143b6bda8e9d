"""Forwarding on the host's uplink for one block: NAT for a node that leaves the global knob.

A node with ``manage_ip_forward=False`` gives its bridge forwarding and nothing else, so
replies to its sandboxes' NATed traffic, which arrive on the uplink, are dropped. A short
job that needs the internet (install.sh's template build) turns forwarding on for the
interfaces of the default routes only, and back off afterwards if it was off. Writing the
global ``ip_forward`` instead would reset every interface's flag when restored, the
bridges of other running nodes included.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

from hutch.shared.errors import from_os_error

_CONF = Path("/proc/sys/net/ipv4/conf")


def default_route_devices() -> list[str]:
    """The interfaces of the host's IPv4 default routes (``ip -j route show default``)."""
    result = subprocess.run(
        ["ip", "-j", "-4", "route", "show", "default"],
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if result.returncode != 0 or not result.stdout.strip():
        return []
    return sorted({str(r["dev"]) for r in json.loads(result.stdout) if r.get("dev")})


@contextlib.contextmanager
def uplink_forwarding(*, conf_dir: Path = _CONF) -> Iterator[list[str]]:
    """Enable forwarding on the default routes' interfaces for the block; yield them.

    Only flags this call turned on are turned off again.
    """
    changed: list[Path] = []
    devices = default_route_devices()
    try:
        for dev in devices:
            flag = conf_dir / dev / "forwarding"
            try:
                if flag.read_text().strip() == "0":
                    flag.write_text("1")
                    changed.append(flag)
            except OSError as exc:
                raise from_os_error(exc, str(flag)) from exc
        yield devices
    finally:
        for flag in changed:
            with contextlib.suppress(OSError):
                flag.write_text("0")
