"""``mcp-gateway``: the gateway command of the ``mcp-gateway`` template (docs/mcp.md).

* ``mcp-gateway --config '<json>'``: start the gateway (what E2B's SDKs run);
* ``mcp-gateway pull NAME...``: install catalog servers (the SDK's
  ``Template.add_mcp_server``);
* ``mcp-gateway serve --status-fd N``: the daemon itself (started by ``--config``).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys

from hutch.mcpgateway.catalog import CATALOG, install_script
from hutch.mcpgateway.errors import GatewayError
from hutch.mcpgateway.settings import from_env


def _pull(names: list[str]) -> int:
    settings = from_env()
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        print(
            f"mcp-gateway pull: unknown MCP server {', '.join(unknown)} "
            f"(catalog: {', '.join(sorted(CATALOG))})",
            file=sys.stderr,
        )
        return 2
    # What the template has already (every catalog server in mcp-gateway) needs no network.
    missing = [
        CATALOG[n] for n in dict.fromkeys(names)
        if not CATALOG[n].executable(settings.servers_dir).exists()
    ]  # fmt: skip
    for name in names:
        if CATALOG[name] not in missing:
            print(f"mcp-gateway pull: {name} ({CATALOG[name].spec}) is installed")
    if not missing:
        return 0
    script = install_script(
        missing, servers_dir=settings.servers_dir, python=settings.server_python
    )
    return subprocess.run(["/bin/sh", "-c", script], check=False).returncode


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pull"]:
        if len(argv) < 2:
            print("usage: mcp-gateway pull NAME...", file=sys.stderr)
            return 2
        return _pull(argv[1:])
    if argv[:1] == ["serve"]:
        p = argparse.ArgumentParser(prog="mcp-gateway serve")
        p.add_argument("--status-fd", type=int, default=None)
        args = p.parse_args(argv[1:])
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        from hutch.mcpgateway import daemon

        return daemon.main(from_env(), status_fd=args.status_fd)
    p = argparse.ArgumentParser(
        prog="mcp-gateway", description="Start the MCP gateway (docs/mcp.md)."
    )
    p.add_argument("--config", required=True, help="the MCP servers, as JSON")
    args = p.parse_args(argv)
    from hutch.mcpgateway.launcher import launch

    try:
        servers = launch(from_env(), args.config)
    except GatewayError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"MCP gateway ready: {servers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
