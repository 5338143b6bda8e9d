"""``hutch`` subcommands other than ``envd`` (which is dispatched in ``hutch.__main__``)."""

from __future__ import annotations

import click

from hutch import __version__


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


def main(argv: list[str]) -> int:
    """Entry point used by ``hutch.__main__``."""
    cli.main(args=argv, prog_name="hutch", standalone_mode=True)
    return 0
