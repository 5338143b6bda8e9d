"""``python -m hutch.node.templates build busybox|base|code-interpreter-v1|mcp-gateway --home DIR``.

Idempotent, so ``install.sh`` can call this on every run: ``busybox`` and ``base`` are kept
once published, ``code-interpreter-v1`` and ``mcp-gateway`` while their definition, server
source and ``base`` are unchanged (their fingerprint); ``--force`` rebuilds. A build's log
goes to stderr.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from hutch.node.templates.artifact import TemplateNotFoundError, read_artifact
from hutch.node.templates.busybox import build_busybox
from hutch.node.templates.debian import build_base
from hutch.node.templates.interpreter import NAME as INTERPRETER
from hutch.node.templates.interpreter import build_interpreter
from hutch.node.templates.mcpgateway import NAME as MCP_GATEWAY
from hutch.node.templates.mcpgateway import build_mcp_gateway

_BUILDERS = {"busybox": build_busybox, "base": build_base}
_STEP_BUILT = {INTERPRETER: build_interpreter, MCP_GATEWAY: build_mcp_gateway}


def main(argv: Sequence[str] | None = None) -> int:
    """Build the named templates; print each one's ``template.json``."""
    parser = argparse.ArgumentParser(prog="python -m hutch.node.templates")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build default templates")
    build.add_argument("names", nargs="+", choices=sorted([*_BUILDERS, *_STEP_BUILT]))
    build.add_argument("--home", type=Path, default=Path("/var/lib/hutch"))
    build.add_argument("--force", action="store_true", help="rebuild even if published")
    args = parser.parse_args(argv)
    templates_dir = args.home / "templates"
    for name in args.names:
        if name in _STEP_BUILT:
            log = functools.partial(_log_stderr, name)
            artifact = _STEP_BUILT[name](templates_dir, force=args.force, log=log)
            print(json.dumps(artifact.to_json()))
            continue
        try:
            if args.force:
                raise TemplateNotFoundError(name)
            artifact = read_artifact(templates_dir / name)
        except TemplateNotFoundError:
            artifact = _BUILDERS[name](templates_dir)
        print(json.dumps(artifact.to_json()))
    return 0


def _log_stderr(name: str, level: str, message: str, step: str | None) -> None:
    """A build's log on stderr, one line per entry (a RUN step's script: its first line)."""
    line = message.splitlines()[0][:200] if message else ""
    prefix = f"{name} [{step or '-'}]" + ("" if level == "info" else f" {level}:")
    print(f"{prefix} {line}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
