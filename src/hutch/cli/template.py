"""``hutch template create-from-image | list | delete``: templates of a running ``hutch serve``.

Like every ``hutch`` subcommand that acts on an instance, these talk to the API of the one
named by ``--home`` / ``HUTCH_HOME`` and ``--api-port`` / ``HUTCH_API_PORT`` (with
``--api-key`` / ``E2B_API_KEY``, default the home's CLI key) through
:mod:`hutch.cli.api_client`: ``POST /templates/from-image`` (its progress streamed as JSON
lines), ``GET /templates``, ``DELETE /templates/{name}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from hutch.cli.api_client import (
    API_KEY_OPTION,
    API_PORT_OPTION,
    HOME_OPTION,
    ApiClient,
    StreamCutError,
    fail,
)


@click.group("template")
def template() -> None:
    """Templates: import OCI images, list, delete."""


@template.command("create-from-image")
@click.argument("source")
@click.option("--name", required=True, help="Template name (and alias): [a-z0-9._-], 1-63.")
@click.option("--enable-inject-envd", is_flag=True, help="Copy envd into the template.")
@click.option(
    "--envd-path", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
    help="The envd bundle to inject (default: this instance's).",
)  # fmt: skip
@click.option("--cpu", type=float, default=1.0, show_default=True, help="Default vCPUs.")
@click.option("--memory-mb", type=int, default=512, show_default=True, help="Default memory.")
@click.option(
    "--disk-size-mb", type=click.IntRange(min=1), default=None,
    help="Its sandboxes' disk, up to the node's limit (default: the node's default).",
)  # fmt: skip
@click.option("--start-cmd", default=None, help="Started in the background at sandbox start.")
@click.option("--ready-cmd", default=None, help="Must exit 0 before the sandbox is ready.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@HOME_OPTION
@API_PORT_OPTION
@API_KEY_OPTION
def create_from_image(
    source: str, name: str, enable_inject_envd: bool, envd_path: Path | None, cpu: float,
    memory_mb: int, disk_size_mb: int | None, start_cmd: str | None, ready_cmd: str | None,
    as_json: bool,
    home: Path | None, api_port: int | None, api_key: str | None,
) -> None:  # fmt: skip
    """Import SOURCE (docker-archive:PATH, oci-archive:PATH, oci:DIR[:TAG], docker://REF).

    Local paths in SOURCE are read by the instance, on this host. A progress display on
    stderr follows the layers as they unpack and the artifact as it seals.
    """
    if enable_inject_envd is False and envd_path is not None:
        raise click.UsageError("--envd-path needs --enable-inject-envd")
    body: dict[str, Any] = {
        "source": _absolute_source(source), "name": name, "enableInjectEnvd": enable_inject_envd,
        "cpuCount": cpu, "memoryMB": memory_mb, "startCmd": start_cmd, "readyCmd": ready_cmd,
    }  # fmt: skip
    if disk_size_mb is not None:
        body["diskSizeMB"] = disk_size_mb
    api = ApiClient(home, api_port, api_key)
    headers: dict[str, str] = {}
    if envd_path is not None:
        # A host path: the API takes it only from a caller that can read the home's key.
        body["envdPath"] = str(envd_path.resolve())
        headers["X-Hutch-Host-Key"] = api.host_key()
    result = _stream_import(api, body, headers, quiet=as_json)
    if as_json:
        click.echo(json.dumps(result))
    else:
        hit = " (artifact reused from the cache)" if result["cacheHit"] else ""
        click.echo(f"template {result['name']} ready{hit}: fingerprint {result['fingerprint']}")


def _absolute_source(source: str) -> str:
    """Relative local paths made absolute: the instance does not share our directory."""
    transport, sep, rest = source.partition(":")
    if sep and transport in ("docker-archive", "oci-archive", "oci") and rest:
        return f"{transport}:{Path(rest).absolute()}" if not rest.startswith("/") else source
    return source


#: How long the CLI keeps trying to follow an import whose API connection broke.
_REFOLLOW_S = 120.0


def _stream_import(
    api: ApiClient, body: dict[str, Any], headers: dict[str, str], *, quiet: bool
) -> dict[str, Any]:
    """POST the import and show its progress; if the API's connection breaks mid-import
    (that api stopped: the import is a job and goes on), follow the same import again
    with ``GET /templates/imports/{id}`` (``X-Hutch-Import-Id``) until it ends."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<12}"), BarColumn(), DownloadColumn(),
               TimeElapsedColumn())  # fmt: skip
    tasks: dict[str, Any] = {}
    seen: dict[str, str] = {}
    lines = api.stream_lines("POST", "/templates/from-image", body, headers, seen=seen)
    deadline: float | None = None
    with Progress(*columns, console=Console(stderr=True), disable=quiet) as bar:
        while True:
            try:
                for event in lines:
                    result = _on_event(bar, tasks, event)
                    if result is not None:
                        return result
                cut = "the stream ended without a result"
            except StreamCutError as exc:
                cut = str(exc)
            import_id = seen.get("x-hutch-import-id")
            if import_id is None:
                fail(502, "the API ended the import stream without a result")
            now = time.monotonic()
            deadline = deadline or now + _REFOLLOW_S
            if now > deadline:
                fail(502, f"lost the API while following import {import_id}: {cut}")
            bar.console.print(f"hutch: the API connection broke ({cut}); following import "
                              f"{import_id} again")  # fmt: skip
            time.sleep(1.0)
            lines = api.stream_lines("GET", f"/templates/imports/{import_id}", seen=seen)


def _on_event(bar: Any, tasks: dict[str, Any], event: dict[str, Any]) -> dict[str, Any] | None:
    """Show one import event; the result once there is one (an error exits)."""
    kind = event.get("type")
    if kind == "progress":
        stage, total = str(event["stage"]), max(int(event["total"]), 1)
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=int(event["done"]), total=total)
    elif kind == "error":
        bar.stop()
        fail(int(event["code"]), str(event["message"]))
    elif kind == "result":
        t = event["template"]
        return {
            "name": t["templateID"], "fingerprint": t["fingerprint"],
            "cacheHit": t["cacheHit"], "envdInjected": t["envdInjected"],
            "envdSHA256": t["envdSHA256"], "cpuCount": t.get("cpuCount"),
            "memoryMB": t.get("memoryMB"),
        }  # fmt: skip
    return None


@template.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@HOME_OPTION
@API_PORT_OPTION
@API_KEY_OPTION
def list_templates(
    as_json: bool, home: Path | None, api_port: int | None, api_key: str | None
) -> None:
    """The team's templates (``GET /templates``)."""
    rows = ApiClient(home, api_port, api_key).call("GET", "/templates")
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "id", "build", "cpu", "memory MB", "envd", "updated")
    for row in rows:
        aliases = row.get("aliases") or []
        table.add_row(
            aliases[0] if aliases else row["templateID"], row["templateID"],
            str(row.get("buildStatus", "")), str(row.get("cpuCount", "")),
            str(row.get("memoryMB", "")), str(row.get("envdVersion", "")),
            str(row.get("updatedAt", "")),
        )  # fmt: skip
    Console().print(table)


@template.command("delete")
@click.argument("name")
@HOME_OPTION
@API_PORT_OPTION
@API_KEY_OPTION
def delete(name: str, home: Path | None, api_port: int | None, api_key: str | None) -> None:
    """Delete template NAME, an id or alias (sandboxes already running from it keep running)."""
    ApiClient(home, api_port, api_key).call("DELETE", f"/templates/{name}")
    click.echo(f"template {name} deleted")
