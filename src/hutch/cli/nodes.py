"""``hutch node list | drain | undrain``: the cluster's nodes through the api (``/nodes``).

Admin calls (ADR 0015) of a running api: ``--api-key`` / ``E2B_API_KEY`` or the home's CLI
key (an admin key). ``drain`` stops new placements on the node (its sandboxes keep
running); ``undrain`` makes it ready again (E2B's ``POST /nodes/{nodeID}``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from hutch.cli.api_client import API_KEY_OPTION, API_PORT_OPTION, HOME_OPTION, ApiClient


def _line(n: dict[str, Any]) -> str:
    m = n["metrics"]
    return (
        f"{n['id']}  {n['status']}  sandboxes={n['sandboxCount']}  "
        f"cpu={m['allocatedCPU']}/{m['cpuCount']}  "
        f"mem={m['allocatedMemoryBytes'] >> 20}/{m['memoryTotalBytes'] >> 20}MiB  "
        f"{n['address']}  lease={n['leaseExpiresAt']}"
        + (f"  lost: {n['lostReason']}" if n.get("lostReason") else "")
    )


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines (E2B's Node).")
@HOME_OPTION
@API_PORT_OPTION
@API_KEY_OPTION
def list_nodes(as_json: bool, home: Path | None, api_port: int | None, api_key: str | None) -> None:
    """Every node: status, sandboxes, allocated/total CPU and memory, address, lease."""
    for n in ApiClient(home, api_port, api_key).call("GET", "/nodes"):
        click.echo(json.dumps(n) if as_json else _line(n))


def _set_status(node_id: str, status: str, home: Path | None, api_port: int | None,
                api_key: str | None) -> None:  # fmt: skip
    ApiClient(home, api_port, api_key).call(
        "POST", f"/nodes/{quote(node_id, safe='')}", body={"status": status}
    )


@click.command("drain")
@click.argument("node_id")
@HOME_OPTION
@API_PORT_OPTION
@API_KEY_OPTION
def drain(node_id: str, home: Path | None, api_port: int | None, api_key: str | None) -> None:
    """Place no new sandboxes on NODE_ID; those it runs keep running."""
    _set_status(node_id, "draining", home, api_port, api_key)


@click.command("undrain")
@click.argument("node_id")
@HOME_OPTION
@API_PORT_OPTION
@API_KEY_OPTION
def undrain(node_id: str, home: Path | None, api_port: int | None, api_key: str | None) -> None:
    """Make a draining NODE_ID ready for new sandboxes again."""
    _set_status(node_id, "ready", home, api_port, api_key)
