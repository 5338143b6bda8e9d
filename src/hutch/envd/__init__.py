"""envd: the daemon that runs inside every sandbox (files, processes, watch).

Dependencies are kept to the standard library, uvicorn, starlette, python-multipart,
connectrpc, protobuf-py and inotify_simple: envd ships into every image and its import time
is every sandbox's start time.
"""

#: The E2B envd version whose wire behaviour this daemon implements. The official SDKs gate
#: features on it (``e2b-compat.md`` §1.6), so it must stay a PEP 440 version >= 0.6.13.
ENVD_VERSION = "0.6.13"
