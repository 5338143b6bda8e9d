"""``hutch sandbox ...``: operate on the sandboxes of a running ``hutch serve`` over its API.

Through :mod:`hutch.cli.api_client`: the instance of ``--home`` / ``HUTCH_HOME`` and
``--api-port`` / ``HUTCH_API_PORT``, with ``--api-key`` / ``E2B_API_KEY`` or the home's
CLI key.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from hutch.cli.api_client import API_KEY_OPTION, API_PORT_OPTION, HOME_OPTION, ApiClient


def parse_assignments(values: tuple[str, ...]) -> dict[str, str]:
    """``("k=v", ...)`` as a dict; ``=`` inside the value is kept."""
    result: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: want KEY=VALUE", param_hint="--set")
        if not value:
            raise click.BadParameter(
                f"{item!r}: an empty value removes the key; use --unset {key}",
                param_hint="--set",
            )
        result[key] = value
    return result


def register(cli: click.Group) -> None:
    """Add the ``sandbox`` group to ``cli``."""

    @cli.group("sandbox")
    def sandbox() -> None:
        """Sandboxes of the running hutch serve."""

    @sandbox.command("metadata")
    @click.argument("sandbox_id")
    @click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Set a key.")
    @click.option("--unset", "unsets", multiple=True, metavar="KEY", help="Remove a key.")
    @HOME_OPTION
    @API_PORT_OPTION
    @API_KEY_OPTION
    def metadata(
        sandbox_id: str, sets: tuple[str, ...], unsets: tuple[str, ...], home: Path | None,
        api_port: int | None, api_key: str | None,
    ) -> None:  # fmt: skip
        """Show, or change with --set/--unset, a sandbox's metadata (prints it as JSON).

        Keys not named are untouched; --set and --unset of one key is an error.
        """
        api = ApiClient(home, api_port, api_key)
        patch: dict[str, str | None] = dict(parse_assignments(sets))
        both = sorted(set(patch) & set(unsets))
        if both:
            raise click.UsageError(f"--set and --unset of the same key: {', '.join(both)}")
        patch.update(dict.fromkeys(unsets))
        if patch:
            result = api.call("PATCH", f"/sandboxes/{sandbox_id}/metadata", patch)
        else:
            result = api.call("GET", f"/sandboxes/{sandbox_id}")["metadata"]
        click.echo(json.dumps(result, sort_keys=True, ensure_ascii=False))
