"""``hutch team create | list | delete`` and ``hutch keys list | revoke``: teams and keys of a
running ``hutch serve``, through its admin API (``/admin/teams``, ADR 0015).

They call the API with ``--api-key`` / ``E2B_API_KEY`` or the home's CLI key (an admin key
of the default team), through :mod:`hutch.cli.api_client`; a member key gets the API's 403.
``hutch keys create`` (in ``main.py``) writes to the store directly instead, so that the
first admin key can be made before anything runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from hutch.cli.api_client import API_KEY_OPTION, API_PORT_OPTION, HOME_OPTION, ApiClient


def _path(team: str) -> str:
    return f"/admin/teams/{quote(team, safe='')}"


@click.group("team")
def team() -> None:
    """Teams: create, list, delete (needs an admin key)."""


@team.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the team as JSON.")
@HOME_OPTION
@API_PORT_OPTION
@API_KEY_OPTION
def create(
    name: str, as_json: bool, home: Path | None, api_port: int | None, api_key: str | None
) -> None:
    """Create a team; prints its id."""
    made = ApiClient(home, api_port, api_key).call("POST", "/admin/teams", body={"name": name})
    click.echo(json.dumps(made) if as_json else made["teamID"])


@team.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@HOME_OPTION
@API_PORT_OPTION
@API_KEY_OPTION
def list_(as_json: bool, home: Path | None, api_port: int | None, api_key: str | None) -> None:
    """Every team: id, name, live sandboxes, created (the default team marked)."""
    teams: list[dict[str, Any]] = ApiClient(home, api_port, api_key).call("GET", "/admin/teams")
    for t in teams:
        if as_json:
            click.echo(json.dumps(t))
        else:
            mark = " (default)" if t["isDefault"] else ""
            click.echo(
                f"{t['teamID']}  {t['name']}{mark}  sandboxes={t['liveSandboxes']}  "
                f"{t['createdAt']}"
            )


@team.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="Kill the team's running and paused sandboxes.")
@HOME_OPTION
@API_PORT_OPTION
@API_KEY_OPTION
def delete(
    name: str, force: bool, home: Path | None, api_port: int | None, api_key: str | None
) -> None:
    """Delete a team with its sandboxes, templates, volumes and keys (refused while it has
    live sandboxes unless --force)."""
    params = {"force": "true"} if force else None
    ApiClient(home, api_port, api_key).call("DELETE", _path(name), params=params)


@team.command("usage")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print quotas, use and series as JSON.")
@HOME_OPTION
@API_PORT_OPTION
@API_KEY_OPTION
def usage(
    name: str, as_json: bool, home: Path | None, api_port: int | None, api_key: str | None
) -> None:
    """A team's live use against its quotas, and its concurrent sandboxes over the last hour
    (``GET /admin/teams/NAME/quotas`` and ``GET /teams/ID/metrics``)."""
    client = ApiClient(home, api_port, api_key)
    quotas = client.call("GET", _path(name) + "/quotas")
    series = client.call("GET", f"/teams/{quotas['teamID']}/metrics")
    if as_json:
        click.echo(json.dumps({**quotas, "metrics": series}))
        return
    use, limits = quotas["usage"], quotas["quotas"]
    rows = (
        ("running sandboxes", use["runningSandboxes"], limits["maxRunningSandboxes"], ""),
        ("vCPUs", use["vcpus"], limits["maxVcpus"], ""),
        ("memory", use["memoryMB"], limits["maxMemoryMB"], " MiB"),
        ("volumes", use["volumeBytes"], limits["maxVolumeBytes"], " bytes"),
        ("paused sandboxes", use.get("pausedSandboxes", 0), limits.get("maxPausedSandboxes"), ""),
        ("builds running", use.get("runningBuilds", 0), limits.get("maxConcurrentBuilds"), ""),
    )
    click.echo(f"team {name} ({quotas['teamID']})")
    for label, used, limit, unit in rows:
        click.echo(f"  {label}: {used}{unit} of {limit or 'no limit'}{unit if limit else ''}")
    click.echo(
        f"  max timeout: {limits['maxTimeout'] or 'no limit'}{' s' if limits['maxTimeout'] else ''}"
    )
    if series:
        peak = max(p["concurrentSandboxes"] for p in series)
        started = sum(p["sandboxStartRate"] for p in series) * 5
        click.echo(
            f"  last hour: peak {peak} concurrent, ~{started:.0f} started ({len(series)} samples)"
        )
    else:
        click.echo("  last hour: no samples yet")


def register_keys(keys: click.Group) -> None:
    """Add ``list`` and ``revoke`` to the ``hutch keys`` group."""

    @keys.command("list")
    @click.option("--team", "team_ref", default="default", help="Team name or id (default).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
    @HOME_OPTION
    @API_PORT_OPTION
    @API_KEY_OPTION
    def keys_list(
        team_ref: str, as_json: bool, home: Path | None, api_port: int | None,
        api_key: str | None,
    ) -> None:  # fmt: skip
        """A team's keys: id, mask, role, name (never the key itself)."""
        listed = ApiClient(home, api_port, api_key).call("GET", _path(team_ref) + "/api-keys")
        for k in listed:
            if as_json:
                click.echo(json.dumps(k))
            else:
                mask = k["mask"]
                shown = f"{mask['prefix']}{mask['maskedValuePrefix']}…{mask['maskedValueSuffix']}"
                role = "admin" if k["admin"] else "member"
                click.echo(f"{k['id']}  {shown}  {role}  {k['name']}  {k['createdAt']}")

    @keys.command("revoke")
    @click.argument("key_id")
    @click.option("--team", "team_ref", default="default", help="Team name or id (default).")
    @HOME_OPTION
    @API_PORT_OPTION
    @API_KEY_OPTION
    def keys_revoke(
        key_id: str, team_ref: str, home: Path | None, api_port: int | None, api_key: str | None
    ) -> None:
        """Revoke a key by its id (``hutch keys list`` shows ids)."""
        path = _path(team_ref) + f"/api-keys/{quote(key_id, safe='')}"
        ApiClient(home, api_port, api_key).call("DELETE", path)
