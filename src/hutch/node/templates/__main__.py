"""``python -m hutch.node.templates build busybox|base --home DIR [--force]``.

Idempotent: a template that is already published is kept unless ``--force`` is given, so
``install.sh`` can call this on every run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from hutch.node.templates.artifact import TemplateNotFoundError, read_artifact
from hutch.node.templates.busybox import build_busybox
from hutch.node.templates.debian import build_base

_BUILDERS = {"busybox": build_busybox, "base": build_base}


def main(argv: Sequence[str] | None = None) -> int:
    """Build the named templates; print each one's ``template.json``."""
    parser = argparse.ArgumentParser(prog="python -m hutch.node.templates")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build default templates")
    build.add_argument("names", nargs="+", choices=sorted(_BUILDERS))
    build.add_argument("--home", type=Path, default=Path("/var/lib/hutch"))
    build.add_argument("--force", action="store_true", help="rebuild even if published")
    args = parser.parse_args(argv)
    templates_dir = args.home / "templates"
    for name in args.names:
        try:
            if args.force:
                raise TemplateNotFoundError(name)
            artifact = read_artifact(templates_dir / name)
        except TemplateNotFoundError:
            artifact = _BUILDERS[name](templates_dir)
        print(json.dumps(artifact.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
