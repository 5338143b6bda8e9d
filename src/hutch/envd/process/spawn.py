"""Starting a process as a user: credentials, login-ish environment, cwd, session, pipes or PTY.

The child gets its own session (``setsid``), so its pid is also its process-group and
session id: a signal to the group reaches the whole command (``bash -c 'a | b'``), and a
PTY can become its controlling terminal. Credentials are dropped in the child, after the
fork, by ``subprocess`` itself (``setgroups``, ``setregid``, ``setreuid``).

Images without bash: the SDKs start every command as ``/bin/bash -l -c CMD`` and every PTY
as ``/bin/bash -i -l``. Where ``/bin/bash`` is absent (busybox, alpine, distroless with a
shell) and the arguments are only flags a POSIX shell also has (``-l``, ``-i``, ``-c``),
the same argv runs under ``/bin/sh``: a login shell there too (``/etc/profile``,
``~/.profile``), the same exit codes, the same stdin. Anything else still fails as
E2B's envd does ("error starting process '/bin/bash': ...").
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from hutch.envd.process import pty as ptys
from hutch.envd.process.models import ProcessSpec
from hutch.envd.users import User
from hutch.shared.errors import (
    HutchError,
    InvalidArgumentError,
    PermissionDeniedError,
    from_os_error,
)

#: PATH when neither ``/init`` nor the request sets one (Debian's login default for root).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: What the SDKs always start, and the POSIX shell that stands in where it is missing.
BASH = "/bin/bash"
POSIX_SHELL = "/bin/sh"
#: Options of bash's the SDKs send that every POSIX shell (dash, busybox ash) has too.
_SHARED_FLAGS = frozenset("lic")


@dataclass(kw_only=True)
class Spawned:
    """A freshly started child and envd's ends of its stdio (non-blocking fds)."""

    popen: subprocess.Popen[bytes]
    pid: int
    stdin_fd: int | None
    stdout_fd: int | None
    stderr_fd: int | None
    pty_fd: int | None


def validate_spec(spec: ProcessSpec) -> None:
    """Reject what cannot be exec'd, with a message naming the offending field."""
    if not spec.cmd:
        raise InvalidArgumentError("process.cmd is required")
    if "\x00" in spec.cmd or any("\x00" in a for a in spec.args):
        raise InvalidArgumentError("process.cmd and process.args must not contain NUL bytes")
    for key, value in spec.envs.items():
        if not key or "=" in key or "\x00" in key:
            raise InvalidArgumentError(f"process.envs: invalid variable name {key!r}")
        if "\x00" in value:
            raise InvalidArgumentError(f"process.envs: value of {key!r} contains a NUL byte")
    if spec.pty is not None and not (0 <= spec.pty.cols <= 0xFFFF and 0 <= spec.pty.rows <= 0xFFFF):
        raise InvalidArgumentError("pty.size: cols and rows must fit in 16 bits")


def build_env(
    *, user: User, init_env: dict[str, str], request_env: dict[str, str]
) -> dict[str, str]:
    """The child's environment: login basics, then ``/init`` vars, then the request's (wins)."""
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": user.home,
        "USER": user.name,
        "LOGNAME": user.name,
        "SHELL": user.shell,
    }
    env.update(init_env)
    env.update(request_env)
    return env


def check_cwd(cwd: str, *, explicit: bool) -> str:
    """``cwd`` if it is an existing directory; else "/" for a default, or an error if asked for."""
    try:
        is_dir = stat.S_ISDIR(os.stat(cwd).st_mode)
    except OSError:
        is_dir = None
    if is_dir:
        return cwd
    if not explicit:
        # The default (workdir or home) is missing, e.g. an account whose home was never
        # created: start in / rather than refuse every command of that user.
        return "/"
    if is_dir is None:
        raise InvalidArgumentError(f"cwd '{cwd}' does not exist")
    raise InvalidArgumentError(f"cwd '{cwd}' is not a directory")


def _posix_flags_only(args: list[str]) -> bool:
    """Whether ``args`` are shell flags a POSIX shell shares with bash, then operands.

    ``-l -c CMD [NAME ARGS...]``, ``-i -l``, ``-lc CMD``: yes. ``--rcfile X``, ``-O opt``,
    a script path: no (they mean something else, or nothing, to ``sh``).
    """
    command_next = False
    for arg in args:
        if command_next:
            return True  # CMD and what follows are operands
        if arg == "--login":
            continue
        if len(arg) < 2 or arg[0] != "-" or arg.startswith("--"):
            return False  # a script operand or a long option: bash's own meaning
        if not set(arg[1:]) <= _SHARED_FLAGS:
            return False
        command_next = "c" in arg
    return not command_next  # a -c without its command string: let bash's error stand


def shell_argv(
    cmd: str, args: list[str], *, executable: Callable[[str], bool] | None = None
) -> list[str]:
    """The argv to exec for ``cmd args``: ``/bin/bash`` becomes ``/bin/sh`` where only
    that exists and the flags mean the same to both (see the module docstring)."""
    can_run = executable or (lambda path: os.access(path, os.X_OK))
    if cmd == BASH and not can_run(BASH) and can_run(POSIX_SHELL) and _posix_flags_only(args):
        return [POSIX_SHELL, *("-l" if a == "--login" else a for a in args)]
    return [cmd, *args]


def _credentials(user: User) -> dict[str, object]:
    """``Popen`` keyword arguments that make the child run as ``user``."""
    if os.geteuid() == 0:
        return {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups)}
    if user.uid == os.geteuid():
        return {}  # an unprivileged envd can still run commands as itself
    raise PermissionDeniedError(
        f"envd runs unprivileged and cannot start processes as user {user.name!r}"
    )


def spawn(spec: ProcessSpec, *, user: User, cwd: str, env: dict[str, str]) -> Spawned:
    """Start ``spec`` as ``user`` in ``cwd`` with exactly ``env``.

    Raises ``InvalidArgumentError`` when the command cannot be executed (not found, not
    executable), as E2B's envd does.
    """
    creds = _credentials(user)
    ours: list[int] = []  # envd's ends, closed on failure
    theirs: list[int] = []  # the child's ends, closed in envd once it has forked
    try:
        if spec.pty is not None:
            master, slave = ptys.open_pty(spec.pty)
            ours.append(master)
            theirs.append(slave)
            stdin: int = slave
            stdout: int = slave
            stderr: int = slave
            preexec = ptys.take_controlling_terminal
        else:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            ours += [out_r, err_r]
            theirs += [out_w, err_w]
            stdout, stderr = out_w, err_w
            if spec.stdin:
                in_r, in_w = os.pipe2(os.O_CLOEXEC)
                ours.append(in_w)
                theirs.append(in_r)
                stdin = in_r
            else:
                stdin = subprocess.DEVNULL
            preexec = None
        try:
            popen = subprocess.Popen(
                shell_argv(spec.cmd, list(spec.args)),
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=preexec,
                **creds,  # type: ignore[arg-type]
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise InvalidArgumentError(
                f"error starting process '{spec.cmd}': {exc.strerror or exc}"
            ) from exc
        except OSError as exc:
            if exc.errno in (errno.ENOEXEC, errno.E2BIG, errno.ELOOP, errno.ENAMETOOLONG):
                raise InvalidArgumentError(
                    f"error starting process '{spec.cmd}': {exc.strerror or exc}"
                ) from exc
            raise from_os_error(exc, f"starting '{spec.cmd}'") from exc
        except subprocess.SubprocessError as exc:  # preexec_fn failed in the child
            raise HutchError(f"error starting process '{spec.cmd}': {exc}") from exc
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    for fd in ours:
        os.set_blocking(fd, False)
    if spec.pty is not None:
        return Spawned(
            popen=popen,
            pid=popen.pid,
            stdin_fd=None,
            stdout_fd=None,
            stderr_fd=None,
            pty_fd=ours[0],
        )
    return Spawned(
        popen=popen,
        pid=popen.pid,
        stdin_fd=ours[2] if spec.stdin else None,
        stdout_fd=ours[0],
        stderr_fd=ours[1],
        pty_fd=None,
    )
