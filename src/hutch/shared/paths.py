"""Paths and envd facts that more than one role must agree on.

Defined here once, so that the injector, the runtime mount and the entrypoint wrapper can
never disagree about where envd lives inside a sandbox (a mismatch once left sandboxes
without a running envd).
"""

from typing import Final

#: Where envd's self-contained bundle sits inside every sandbox, whether it was injected
#: into the template at build time or bind-mounted read-only by the runtime.
ENVD_BUNDLE_DIR_IN_SANDBOX: Final = "/.hutch/envd"

#: The wrapper that starts envd beside an imported image's own command and then ``exec``s
#: that command (``node/templates/entrypoint.py``, mounted read-only by the node).
ENTRYPOINT_WRAPPER_IN_SANDBOX: Final = "/.hutch/entrypoint.py"

#: The port envd listens on inside every sandbox (fixed by the E2B SDKs).
ENVD_PORT: Final = 49983

#: The E2B envd version whose wire behaviour hutch's envd implements, reported to SDKs as
#: ``envdVersion``. They gate features on it (e2b-compat.md §1.6): a PEP 440 version >= 0.6.13.
#: Bumped on every envd behaviour change (0.6.14: issue 18's watch, remove, auth, shell).
ENVD_VERSION: Final = "0.6.14"

#: ``<home>/cli.key``: the key the ``hutch`` CLI uses by default (0600, made on first use);
#: reading it is the proof of host access the API asks for host paths (``envdPath``).
CLI_KEY_FILE = "cli.key"
