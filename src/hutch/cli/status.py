"""``hutch status``: is the instance up, how full is it, what can it start.

``GET /health`` (no key), hutch's ``GET /hutch/status`` (the node's capacity, running and
paused sandboxes of every team, warm pool fill) and ``GET /templates`` (the team's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from hutch.cli.api_client import API_KEY_OPTION, API_PORT_OPTION, HOME_OPTION, ApiClient, fail


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@HOME_OPTION
@API_PORT_OPTION
@API_KEY_OPTION
def status(as_json: bool, home: Path | None, api_port: int | None, api_key: str | None) -> None:
    """Health, capacity, running and paused sandboxes, warm pool fill and templates."""
    api = ApiClient(home, api_port, api_key)
    health = api.request("GET", "/health")
    if health.is_error:
        fail(health.status_code, "the API is not healthy")
    node = api.call("GET", "/hutch/status")
    templates = api.call("GET", "/templates")
    report: dict[str, Any] = {
        "health": "ok",
        "api": api.url,
        **node,
        "templates": [
            {
                "templateID": t["templateID"],
                "aliases": t.get("aliases") or [],
                "buildStatus": t.get("buildStatus"),
                "cpuCount": t.get("cpuCount"),
                "memoryMB": t.get("memoryMB"),
            }
            for t in templates
        ],
    }
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    cap, sbx = report["capacity"], report["sandboxes"]
    used = sbx["running"] + sbx["paused"]
    click.echo(f"health     ok ({api.url}, node {report['nodeID']}, runtime {report['runtime']})")
    click.echo(
        f"capacity   {used}/{cap['maxSandboxes']} sandboxes; "
        f"{cap['allocatedCPU']:g}/{cap['cpuCount']} vCPU, "
        f"{cap['allocatedMemoryMB']}/{cap['memoryMB']} MiB allocated"
    )
    click.echo(f"sandboxes  {sbx['running']} running, {sbx['paused']} paused")
    pool = ", ".join(f"{p['templateID']} {p['ready']}/{p['target']}" for p in report["pool"])
    click.echo(f"pool       {pool or 'off'}")
    names = [(t["aliases"] or [t["templateID"]])[0] for t in report["templates"]]
    click.echo(f"templates  {' '.join(names) if names else 'none (every create answers 404)'}")
