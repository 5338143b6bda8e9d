"""Paths that more than one role must agree on.

Defined here once, so that the injector, the runtime mount and the entrypoint wrapper can
never disagree about where envd lives inside a sandbox (a mismatch once left sandboxes
without a running envd).
"""

from typing import Final

#: Where envd's self-contained bundle sits inside every sandbox, whether it was injected
#: into the template at build time or bind-mounted read-only by the runtime.
ENVD_BUNDLE_DIR_IN_SANDBOX: Final = "/.hutch/envd"

#: The port envd listens on inside every sandbox (fixed by the E2B SDKs).
ENVD_PORT: Final = 49983
