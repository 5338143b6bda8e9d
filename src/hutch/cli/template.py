"""``hutch template create-from-image | list | delete``: templates of the instance at ``--home``.

They act on that instance's store and template directory directly (as ``hutch keys create``
does), through the same service and builder as ``POST /templates/from-image``, so a running
``hutch serve`` on that home sees the result at once.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from hutch.serve.settings import ServeSettings


def _settings(home: Path | None, api_port: int | None) -> ServeSettings:
    from hutch.serve.settings import ServeSettings

    values = {"home": home, "api_port": api_port}
    return ServeSettings(**{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]


_HOME = click.option(
    "--home", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="State directory of the instance (env HUTCH_HOME, default /var/lib/hutch).",
)  # fmt: skip
_API_PORT = click.option(
    "--api-port", type=int, default=None,
    help="API port of the instance (env HUTCH_API_PORT); names the same instance as --home.",
)  # fmt: skip


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
@click.option("--start-cmd", default=None, help="Started in the background at sandbox start.")
@click.option("--ready-cmd", default=None, help="Must exit 0 before the sandbox is ready.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_HOME
@_API_PORT
def create_from_image(
    source: str, name: str, enable_inject_envd: bool, envd_path: Path | None, cpu: float,
    memory_mb: int, start_cmd: str | None, ready_cmd: str | None, as_json: bool,
    home: Path | None, api_port: int | None,
) -> None:  # fmt: skip
    """Import SOURCE (docker-archive:PATH, oci-archive:PATH, oci:DIR[:TAG], docker://REF)."""
    from hutch.api.service.ports import ImageImport
    from hutch.shared.errors import HutchError

    if enable_inject_envd is False and envd_path is not None:
        raise click.UsageError("--envd-path needs --enable-inject-envd")
    request = ImageImport(
        source=source, name=name, inject_envd=enable_inject_envd,
        envd_path=str(envd_path.resolve()) if envd_path else None, cpu_count=cpu,
        memory_mb=memory_mb, start_cmd=start_cmd, ready_cmd=ready_cmd,
    )  # fmt: skip
    try:
        result = asyncio.run(_create(_settings(home, api_port), request, quiet=as_json))
    except HutchError as exc:
        raise click.ClickException(exc.message) from None
    if as_json:
        click.echo(json.dumps(result))
    else:
        hit = " (artifact reused from the cache)" if result["cacheHit"] else ""
        click.echo(f"template {result['name']} ready{hit}: fingerprint {result['fingerprint']}")


async def _create(settings: ServeSettings, request: Any, *, quiet: bool) -> dict[str, Any]:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    from hutch.serve.templates import cli_service

    store, service, team_id = await cli_service(settings)
    columns = (TextColumn("{task.description:<12}"), BarColumn(), DownloadColumn(),
               TimeElapsedColumn())  # fmt: skip
    lock = threading.Lock()
    tasks: dict[str, Any] = {}
    try:
        with Progress(*columns, transient=False, disable=quiet) as bar:

            def progress(stage: str, done: int, total: int) -> None:
                with lock:
                    if stage not in tasks:
                        tasks[stage] = bar.add_task(stage, total=max(total, 1))
                    bar.update(tasks[stage], completed=done, total=max(total, 1))

            row, imported = await service.create_from_image(
                request, team_id=team_id, progress=progress
            )
    finally:
        await store.close()
    return {
        "name": row.id, "fingerprint": imported.fingerprint, "cacheHit": imported.cache_hit,
        "envdInjected": imported.envd_injected, "envdSHA256": imported.envd_sha256,
        "cpuCount": row.cpu_count, "memoryMB": row.memory_mb,
    }  # fmt: skip


@template.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@_HOME
@_API_PORT
def list_templates(as_json: bool, home: Path | None, api_port: int | None) -> None:
    """The instance's templates (the default team's)."""
    rows = asyncio.run(_list(_settings(home, api_port)))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "kind", "envd", "cpu", "memory MB", "fingerprint", "source")
    for row in rows:
        table.add_row(
            row["name"], row["kind"], "injected" if row["envdInjected"] else "mounted",
            str(row["cpuCount"]), str(row["memoryMB"]), (row["fingerprint"] or "")[:12],
            row["source"] or "",
        )  # fmt: skip
    Console().print(table)


async def _list(settings: ServeSettings) -> list[dict[str, Any]]:
    from hutch.node.templates.artifact import DirTemplateStore
    from hutch.serve.templates import cli_service
    from hutch.shared.errors import HutchError

    store, service, team_id = await cli_service(settings)
    try:
        rows = await service.list_templates(team_id=team_id)
    finally:
        await store.close()
    disk = DirTemplateStore(settings.node_settings().templates_dir)
    out = []
    for row in rows:
        try:
            artifact = await disk.get(row.id)
        except HutchError:
            artifact = None
        build = dict(artifact.build) if artifact else {}
        out.append({
            "name": row.id, "kind": build.get("builder", "?"), "cpuCount": row.cpu_count,
            "memoryMB": row.memory_mb, "fingerprint": artifact.artifact if artifact else None,
            "envdInjected": bool(artifact and artifact.image and artifact.image.envd_injected),
            "source": build.get("source"), "buildStatus": row.build_state.value,
        })  # fmt: skip
    return out


@template.command("delete")
@click.argument("name")
@_HOME
@_API_PORT
def delete(name: str, home: Path | None, api_port: int | None) -> None:
    """Delete template NAME (sandboxes already running from it keep running)."""
    from hutch.shared.errors import HutchError

    try:
        asyncio.run(_delete(_settings(home, api_port), name))
    except HutchError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"template {name} deleted")


async def _delete(settings: ServeSettings, name: str) -> None:
    from hutch.serve.templates import cli_service

    store, service, team_id = await cli_service(settings)
    try:
        await service.delete_template(name, team_id=team_id)
    finally:
        await store.close()
