"""``hutch`` subcommands other than ``envd`` (which is dispatched in ``hutch.__main__``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hutch import __version__

if TYPE_CHECKING:
    from hutch.serve.settings import ServeSettings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hutch")
def cli() -> None:
    """hutch: self-hostable sandboxes for AI agents, wire-compatible with E2B."""


@cli.command(
    "envd",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def envd(ctx: click.Context) -> None:
    """Run the in-sandbox daemon (see ``hutch envd --help``)."""
    # Only reached through `hutch.cli.main` directly; `hutch envd` normally never imports click.
    from hutch.envd.main import main as envd_main

    raise SystemExit(envd_main(list(ctx.args)))


_HOME = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State directory (env HUTCH_HOME, default /var/lib/hutch).",
)


def _serve_settings(**values: object) -> ServeSettings:
    """Settings from the environment, with the options that were given on top."""
    from hutch.serve.settings import ServeSettings

    return ServeSettings(**{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]


@cli.command("serve")
@_HOME
@click.option("--api-port", type=int, default=None, help="API port (HUTCH_API_PORT, 3000).")
@click.option(
    "--proxy-port", type=int, default=None, help="Sandbox proxy port (HUTCH_PROXY_PORT, 49983)."
)
@click.option("--host", default=None, help="Address to listen on (HUTCH_HOST, 0.0.0.0).")
@click.option("--runtime", type=click.Choice(["runc", "runsc"]), default=None, help="OCI runtime.")
def serve(
    home: Path | None, api_port: int | None, proxy_port: int | None, host: str | None,
    runtime: str | None,
) -> None:  # fmt: skip
    """Run the API, the node and the sandbox proxy in this process."""
    from hutch.serve.main import run

    run(_serve_settings(home=home, api_port=api_port, proxy_port=proxy_port, host=host,
                        runtime=runtime))  # fmt: skip


@cli.group("node", invoke_without_command=True)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The node's state directory (env HUTCH_NODE_HOME, default /var/lib/hutch).",
)
@click.option("--listen", default=None, help="Serve the node API on HOST:PORT (needs a token).")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Serve the node API on this Unix socket (default <home>/run/node-api.sock).",
)
@click.option("--node-id", default=None, help="The node's id (HUTCH_NODE_NODE_ID, hostname).")
@click.option("--runtime", type=click.Choice(["runc", "runsc"]), default=None, help="OCI runtime.")
@click.option(
    "--proxy-listen",
    default=None,
    help="Also serve the node's proxy on HOST:PORT, for edges on other hosts (needs a token).",
)
@click.option(
    "--register", "register", default=None,
    help="Register with these apis, comma-separated URLs (HUTCH_NODE_CLUSTER_API_URLS).",
)  # fmt: skip
@click.option(
    "--advertise", default=None,
    help="How apis reach this node (HUTCH_NODE_ADVERTISE_ADDRESS; default from --listen).",
)  # fmt: skip
@click.pass_context
def node(
    ctx: click.Context, home: Path | None, listen: str | None, socket_path: Path | None,
    node_id: str | None, runtime: str | None, proxy_listen: str | None, register: str | None,
    advertise: str | None,
) -> None:  # fmt: skip
    """Run the node role alone: sandboxes, templates, sampler, warm pool, and the node API
    (docs/node-api.md). The token comes from HUTCH_NODE_API_TOKEN or <home>/node-api.token;
    with --register the node joins a cluster (ADR 0025). Subcommands manage the cluster's
    nodes through an api: list, drain, undrain."""
    if ctx.invoked_subcommand is not None:
        return
    from pydantic import ValidationError

    from hutch.node.runner import ExtraServers, parse_listen
    from hutch.node.runner import run as run_node
    from hutch.node.settings import NodeSettings

    if listen is not None and socket_path is not None:
        raise click.UsageError("--listen and --socket exclude each other")
    values = {
        "home": home.resolve() if home else None, "node_id": node_id, "runtime": runtime,
        "cluster_api_urls": register, "advertise_address": advertise,
    }  # fmt: skip
    try:
        settings = NodeSettings(**{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]
        token = settings.effective_api_token()
    except (ValidationError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    extra: ExtraServers | None = None
    if proxy_listen is not None:
        from hutch.cluster.node_proxy import node_proxy_config

        if not token:
            raise click.UsageError("--proxy-listen needs the cluster token (HUTCH_NODE_API_TOKEN)")
        proxy_host, proxy_port = parse_listen(proxy_listen, "--proxy-listen")
        # Edges find a registered node's proxy by this label (cluster/edge.RegistryHops).
        label = f"hutch.dev/proxy={proxy_host}:{proxy_port}"
        settings = settings.model_copy(
            update={"labels": ",".join(x for x in (settings.labels, label) if x)}
        )

        def extra(built: object) -> list[object]:
            return [node_proxy_config(built.manager, host=proxy_host, port=proxy_port,  # type: ignore[attr-defined]
                                      token=token)]  # fmt: skip

    run_node(settings, listen=listen, socket_path=socket_path, extra=extra)  # type: ignore[arg-type]


@cli.command("api")
@_HOME
@click.option("--host", default=None, help="Address to listen on (HUTCH_API_HOST, 0.0.0.0).")
@click.option("--port", type=int, default=None, help="API port (HUTCH_API_PORT, 3000).")
def api(home: Path | None, host: str | None, port: int | None) -> None:
    """Run the api role alone on PostgreSQL (HUTCH_DATABASE_URL), reaching the nodes of
    HUTCH_CLUSTER_NODES with the cluster token (docs/deploy.md)."""
    from pydantic import ValidationError

    from hutch.api.settings import ApiSettings
    from hutch.cluster.api import run as run_api
    from hutch.cluster.settings import ClusterSettings

    values = {"home": home.resolve() if home else None, "api_host": host, "api_port": port}
    try:
        settings = ApiSettings(**{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]
        cluster = ClusterSettings()
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from None
    run_api(settings, cluster)


@cli.command("proxy")
@click.option("--host", default=None, help="Address to listen on (HUTCH_PROXY_HOST, 0.0.0.0).")
@click.option("--port", type=int, default=None, help="Port (HUTCH_PROXY_PORT, 49983).")
def proxy(host: str | None, port: int | None) -> None:
    """Run the edge proxy alone: routes from the store (HUTCH_DATABASE_URL, kept current by
    NOTIFY) to each sandbox's node proxy; wakes through HUTCH_EDGE_API_URLS (docs/proxy.md)."""
    from pydantic import ValidationError

    from hutch.cluster.edge import run as run_edge
    from hutch.cluster.settings import ClusterSettings

    values = {"proxy_host": host, "proxy_port": port}
    try:
        settings = ClusterSettings(**{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from None
    run_edge(settings)


def _node_subcommands() -> None:
    from hutch.cli.nodes import drain, list_nodes, undrain

    for command in (list_nodes, drain, undrain):
        node.add_command(command)


_node_subcommands()


@cli.group("keys")
def keys() -> None:
    """API keys."""


@keys.command("create")
@_HOME
@click.option("--name", default="", help="A label shown with the key's mask.")
@click.option("--team", default=None, help="The team's name or id (default: the default team).")
@click.option("--admin", is_flag=True, help="Give the key the admin role (every team).")
@click.option("--json", "as_json", is_flag=True, help="Print id, team and mask as JSON too.")
def keys_create(home: Path | None, name: str, team: str | None, admin: bool, as_json: bool) -> None:
    """Print a new API key (stdout carries the key alone); works without a running serve."""
    import asyncio

    from hutch.cli.api_client import fail
    from hutch.serve.keys import create_key
    from hutch.shared.errors import NotFoundError

    try:
        created = asyncio.run(
            create_key(_serve_settings(home=home), name=name, team=team, admin=admin)
        )
    except NotFoundError as exc:
        fail(404, exc.public_message)
    if as_json:
        key = created.api_key
        click.echo(json.dumps({"key": created.secret, "id": key.id, "teamId": key.team_id,
                               "name": key.name, "mask": key.mask,
                               "admin": key.admin}))  # fmt: skip
    else:
        click.echo(created.secret)


def _register_subgroups() -> None:
    from hutch.cli import sandbox
    from hutch.cli.cluster import cluster
    from hutch.cli.status import status
    from hutch.cli.team import register_keys, team
    from hutch.cli.template import template
    from hutch.cli.volume import volume

    sandbox.register(cli)
    cli.add_command(status)
    cli.add_command(cluster)
    cli.add_command(team)
    register_keys(keys)
    cli.add_command(template)
    cli.add_command(volume)


_register_subgroups()


def main(argv: list[str]) -> int:
    """Entry point used by ``hutch.__main__``."""
    cli.main(args=argv, prog_name="hutch", standalone_mode=True)
    return 0
