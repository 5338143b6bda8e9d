"""The entrypoint wrapper of imported images: envd beside the image's own command.

Runs inside the sandbox under tini, as root, with envd's bundled interpreter (the image may
have no Python), as ``python3 -I -B /.hutch/entrypoint.py SPEC_JSON``. Standard library only:
this file is bind-mounted into sandboxes and never imports hutch.

1. A detached helper (double fork, so tini adopts it) waits until the template's ready
   command exits 0, if there is one, then ``exec``s envd: envd answering ``/health`` is
   the node's signal that the sandbox is ready.
2. The template's start command, if any, is started in the background as the image's user.
3. The image's ``Entrypoint`` + ``Cmd`` is ``exec``ed with the image's environment, working
   directory and user, so it is the sandbox's main process. An image without a command
   keeps this process waiting instead, and envd alone serves the sandbox.

SPEC_JSON: ``{"envd": [...], "argv": [...], "uid": N, "gid": N, "user_name": str|null,
"workdir": str, "start_cmd": str|null, "ready_cmd": str|null}``.
"""

import contextlib
import json
import os
import signal
import sys
import time

_SHELL = "/bin/sh"


def _drop_privileges(spec):
    uid, gid, name = spec["uid"], spec["gid"], spec.get("user_name")
    if uid == 0 and gid == 0 and (name in (None, "root")):
        if name == "root":
            os.initgroups("root", 0)
        return
    if name:
        os.initgroups(name, gid)
    else:
        os.setgroups([gid])
    os.setgid(gid)
    os.setuid(uid)


def _enter_workdir(spec):
    workdir = spec.get("workdir") or "/"
    with contextlib.suppress(OSError):
        os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)


def _detached(run):
    """Run ``run()`` in a grandchild that tini adopts; return once it is started."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            run()
        except BaseException as exc:  # report anything, never return
            print(f"hutch entrypoint: {exc}", file=sys.stderr, flush=True)
        os._exit(127)
    os.waitpid(pid, 0)


def _envd(spec):
    ready = spec.get("ready_cmd")
    while ready:
        pid = os.fork()
        if pid == 0:
            try:
                _enter_workdir(spec)
                _drop_privileges(spec)
                os.execv(_SHELL, [_SHELL, "-c", ready])
            finally:
                os._exit(127)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) == 0:
            break
        time.sleep(0.1)
    os.chdir("/")
    envd = spec["envd"]
    os.execv(envd[0], envd)


def _start_cmd(spec):
    _enter_workdir(spec)
    _drop_privileges(spec)
    os.execv(_SHELL, [_SHELL, "-c", spec["start_cmd"]])


def main():
    spec = json.loads(sys.argv[1])
    _detached(lambda: _envd(spec))
    if spec.get("start_cmd"):
        _detached(lambda: _start_cmd(spec))
    argv = spec.get("argv") or []
    if not argv:
        while True:
            signal.pause()
    _enter_workdir(spec)
    _drop_privileges(spec)
    try:
        os.execvpe(argv[0], argv, os.environ)
    except OSError as exc:
        print(f"hutch entrypoint: cannot run {argv!r}: {exc}", file=sys.stderr, flush=True)
        sys.exit(127)


if __name__ == "__main__":
    main()
