"""The ``hutch`` command.

``hutch envd`` is dispatched before anything else is imported: envd starts inside every
sandbox, so its start time must not pay for the control plane's CLI stack.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run the ``hutch`` command line."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["envd"]:
        from hutch.envd.main import main as envd_main

        return envd_main(args[1:])
    from hutch.cli.main import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
