"""envd: the daemon that runs inside every sandbox (files, processes, watch).

Dependencies are kept to the standard library, uvicorn, starlette, python-multipart,
connectrpc, protobuf-py and inotify_simple: envd ships into every image and its import time
is every sandbox's start time.
"""

from hutch.shared.paths import ENVD_VERSION

__all__ = ["ENVD_VERSION"]
