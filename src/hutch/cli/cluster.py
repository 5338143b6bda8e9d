"""``hutch cluster up|status|down``: a real local cluster of role processes
(``hutch.cluster.local``; docs/deploy.md "Try it on one machine")."""

from __future__ import annotations

import json
from pathlib import Path

import click

_HOME = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/hutch-cluster"),
    show_default=True,
    help="Where the cluster keeps its store, node homes, logs and cluster.json.",
)


@click.group("cluster")
def cluster() -> None:
    """A local cluster: PostgreSQL, apis, nodes and an edge proxy as separate processes."""


@cluster.command("up")
@_HOME
@click.option("--nodes", type=click.IntRange(1, 9), default=2, show_default=True)
@click.option("--apis", type=click.IntRange(1, 9), default=1, show_default=True)
@click.option("--names", default="hc", show_default=True,
              help="Prefix of each node's bridge, netns, veth, nft table and cgroup.")  # fmt: skip
@click.option("--subnet", default="10.230", show_default=True,
              help="Node N's sandboxes get <subnet>.N.0/24.")  # fmt: skip
@click.option("--pool", default="", help="Each node's warm pool (HUTCH_NODE_POOL_SIZE; none).")
@click.option("--api-setting", "api_settings", multiple=True, metavar="NAME=VALUE",
              help="An api setting for every api, e.g. cluster_lease_s=3 "
                   "(HUTCH_CLUSTER_LEASE_S); repeatable.")  # fmt: skip
@click.option("--node-setting", "node_settings", multiple=True, metavar="NAME=VALUE",
              help="A node setting for every node, e.g. artifact_s3_bucket=hutch "
                   "(HUTCH_NODE_ARTIFACT_S3_BUCKET); repeatable.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print every process as JSON.")
def up(home: Path, nodes: int, apis: int, names: str, subnet: str, pool: str,
       api_settings: tuple[str, ...], node_settings: tuple[str, ...],
       as_json: bool) -> None:  # fmt: skip
    """Start the cluster and print the E2B_* variables to export."""
    from hutch.api.settings import ApiSettings
    from hutch.cluster.local import ClusterError, Names, status
    from hutch.cluster.local import up as cluster_up
    from hutch.node.settings import NodeSettings

    tuned = _settings(api_settings, ApiSettings.model_fields, "--api-setting", "an api")
    tuned_nodes = _settings(node_settings, NodeSettings.model_fields, "--node-setting", "a node")
    try:
        cluster_up(home, nodes=nodes, apis=apis, names=Names(prefix=names, subnet=subnet),
                   pool=pool, api_settings=tuned, node_settings=tuned_nodes)  # fmt: skip
        info = status(home)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None
    _print(info, as_json)


def _settings(items: tuple[str, ...], fields: object, hint: str, whose: str) -> dict[str, str]:
    """``NAME=VALUE`` items as field → value, each naming one of ``fields``."""
    tuned: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name.lower() not in fields:  # type: ignore[operator]
            raise click.BadParameter(f"{item!r}: want NAME=VALUE naming {whose} setting",
                                     param_hint=hint)  # fmt: skip
        tuned[name.lower()] = value
    return tuned


def _print(info: dict[str, object], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for proc in info["processes"]:  # type: ignore[attr-defined]
        state = "running" if proc["running"] else "stopped"
        click.echo(
            f"# {proc['role']:<5} {proc['id']:<8} pid {proc['pid']:<7} {proc['url']} {state}"
        )
    for key, value in info["env"].items():  # type: ignore[attr-defined]
        click.echo(f"export {key}={value}")


@cluster.command("status")
@_HOME
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status_cmd(home: Path, as_json: bool) -> None:
    """Every process of the cluster, whether it runs, and the E2B_* variables."""
    from hutch.cluster.local import ClusterError, status

    try:
        _print(status(home), as_json)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None


@cluster.command("down")
@_HOME
def down(home: Path) -> None:
    """Kill the sandboxes, stop the processes up started, clean the hosts, delete the home."""
    from hutch.cluster.local import ClusterError
    from hutch.cluster.local import down as cluster_down

    try:
        stopped = cluster_down(home)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"stopped {len(stopped)} processes; {home} removed")
