"""``hutch sandbox ...``: operate on the sandboxes of a running ``hutch serve`` over its API.

The command talks to the API of the serve on this host (``--api-port`` / ``HUTCH_API_PORT``,
default 3000) with ``--api-key`` / ``E2B_API_KEY``; without a key it uses the home's CLI key
(``<home>/cli.key``, 0600, a key of the default team made on first use through the store,
like ``hutch keys create``), so on the host it works out of the box for the default team.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from hutch.serve.settings import ServeSettings

_CLI_KEY_FILE = "cli.key"


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


def _cli_key(settings: ServeSettings) -> str:
    """The home's CLI key, made on first use (readable by root alone)."""
    import asyncio
    import os

    from hutch.serve.keys import create_key

    path = settings.home / _CLI_KEY_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    created = asyncio.run(create_key(settings, name="hutch-cli"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(created.secret + "\n")
    return created.secret


def _api_url(settings: ServeSettings) -> str:
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}"


def request(
    settings: ServeSettings, api_key: str | None, method: str, path: str, body: Any = None
) -> Any:
    """One API call; exits with the server's message on an error status."""
    import httpx

    key = api_key or _cli_key(settings)
    try:
        response = httpx.request(
            method, _api_url(settings) + path, json=body, headers={"X-API-Key": key}, timeout=60
        )
    except httpx.HTTPError as exc:
        click.echo(f"hutch: cannot reach the API at {_api_url(settings)}: {exc}", err=True)
        sys.exit(2)
    if response.is_error:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        click.echo(f"hutch: {response.status_code}: {message}", err=True)
        sys.exit(1)
    return response.json() if response.content else None


def register(cli: click.Group, home_option: Any, settings_from: Any) -> None:
    """Add the ``sandbox`` group to ``cli`` (``cli/main.py`` owns the shared options)."""

    @cli.group("sandbox")
    def sandbox() -> None:
        """Sandboxes of the running hutch serve."""

    @sandbox.command("metadata")
    @click.argument("sandbox_id")
    @click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Set a key.")
    @click.option("--unset", "unsets", multiple=True, metavar="KEY", help="Remove a key.")
    @home_option
    @click.option("--api-port", type=int, default=None, help="API port (HUTCH_API_PORT, 3000).")
    @click.option(
        "--api-key", envvar="E2B_API_KEY", default=None,
        help="API key (E2B_API_KEY; default: the home's CLI key, default team).",
    )  # fmt: skip
    def metadata(
        sandbox_id: str, sets: tuple[str, ...], unsets: tuple[str, ...], home: Path | None,
        api_port: int | None, api_key: str | None,
    ) -> None:  # fmt: skip
        """Show, or change with --set/--unset, a sandbox's metadata (prints it as JSON).

        Keys not named are untouched; --set and --unset of one key is an error.
        """
        settings = settings_from(home=home, api_port=api_port)
        patch: dict[str, str | None] = dict(parse_assignments(sets))
        both = sorted(set(patch) & set(unsets))
        if both:
            raise click.UsageError(f"--set and --unset of the same key: {', '.join(both)}")
        patch.update(dict.fromkeys(unsets))
        if patch:
            result = request(settings, api_key, "PATCH", f"/sandboxes/{sandbox_id}/metadata", patch)
        else:
            result = request(settings, api_key, "GET", f"/sandboxes/{sandbox_id}")["metadata"]
        click.echo(json.dumps(result, sort_keys=True, ensure_ascii=False))
