"""``RuncRuntime``: the :class:`~hutch.node.runtime.base.Runtime` seam over the runc CLI.

Each instance owns one runc ``--root`` state directory, so hutch lists and touches only its
own containers, never another user's. runc's failures are translated here, once: an unknown
id becomes ``NotFoundError``, everything else ``RuntimeFailedError`` with runc's message.

Two traps from HOST-NOTES shape this module:

* ``runc create`` hands its own stdio to the container's process, which keeps them open for
  its whole life. A pipe we waited on would never reach EOF, so ``create`` gets a file (or
  ``/dev/null``) and runc's own diagnostics go to a ``--log`` file instead.
* ``delete --force`` on a live container is slow and racy; a KILL first makes it quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal as signals
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hutch.node import cpu_weight
from hutch.node.runtime.base import ExecResult, RuntimeFailedError, RuntimeState, RuntimeStatus
from hutch.node.runtime.freezer import freezer_of, set_frozen
from hutch.node.runtime.procmount import BOOT_ID_PATH, bind_over
from hutch.shared.errors import (
    AlreadyExistsError,
    ConflictError,
    DeadlineExceededError,
    NotFoundError,
)

#: hostname(1) of the host (Debian's ``hostname`` package is essential).
_HOSTNAME_BIN = "/bin/hostname"


class RuncRuntime:
    """Drive ``runc`` with a private state directory.

    ``root`` is runc's ``--root`` (created on first use, mode 0700). ``timeout`` bounds
    every runc invocation in seconds, so that a wedged runtime cannot hang the node.
    """

    #: Messages with which the runtime says that an id is unknown.
    not_found_markers: tuple[str, ...] = ("container does not exist", "container not found")
    #: Messages with which the runtime says that a container has no live process to signal.
    not_running_markers: tuple[str, ...] = ("container not running", "process already finished")
    #: Whether :meth:`pause`/:meth:`resume` may write the container's cgroup freezer
    #: themselves (runc reads its paused status from there; runsc keeps its own).
    _direct_freezer: bool = True
    #: Whether :meth:`create` asks for ``--pid-file`` and returns that pid (runsc's would
    #: name its sandbox process; it keeps asking ``state``, as before).
    _pid_file: bool = True

    def __init__(self, *, root: Path, binary: str = "runc", timeout: float | None = 60.0) -> None:
        self._root = Path(root)
        self._binary = binary
        self._timeout = timeout

    @property
    def root(self) -> Path:
        """The runtime's state directory."""
        return self._root

    def _global_args(self) -> list[str]:
        """The runtime binary and the flags every invocation takes (adapters extend this)."""
        # JSON logs let us pick runc's message out of stderr without parsing logrus text.
        return [self._binary, "--root", str(self._root), "--log-format", "json"]

    async def create(
        self, bundle_dir: Path, *, sandbox_id: str, output_path: Path | None = None
    ) -> int | None:
        """Create the container from ``bundle_dir/config.json``; see ``Runtime.create``.

        The init's pid comes from ``--pid-file`` (written by runc once the container is
        created): the boot needs it and a ``runc state`` is one more Go process (~10 ms)."""
        bundle_dir = Path(bundle_dir)
        if not (bundle_dir / "config.json").is_file():
            raise NotFoundError(f"no config.json in bundle {bundle_dir}")
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if await self._exists(sandbox_id):
            # Checked here because runsc, unlike runc, replaces a live container's state
            # on a duplicate create and orphans its processes.
            raise AlreadyExistsError(f"runtime already has a sandbox {sandbox_id!r}")
        log_fd, log_name = tempfile.mkstemp(prefix=".runc-create-", suffix=".log", dir=bundle_dir)
        os.close(log_fd)
        log_path = Path(log_name)
        pid_path = log_path.with_suffix(".pid")
        out_target = str(output_path) if output_path is not None else os.devnull
        try:
            with open(out_target, "ab") as out:
                args = [
                    *self._global_args(),
                    "--log",
                    str(log_path),
                    "create",
                    "--bundle",
                    str(bundle_dir),
                    *(["--pid-file", str(pid_path)] if self._pid_file else []),
                    sandbox_id,
                ]
                code, _, _ = await self._exec(args, stdout=out, stderr=out)
            if code != 0:
                self._raise(_last_error(log_path.read_text(errors="replace")), sandbox_id, "create")
            return _read_pid(pid_path)
        finally:
            log_path.unlink(missing_ok=True)
            pid_path.unlink(missing_ok=True)

    async def _exists(self, sandbox_id: str) -> bool:
        """Whether the runtime holds state for ``sandbox_id`` (runc: ``<root>/<id>``)."""
        return (self._root / sandbox_id / "state.json").exists()

    async def start(self, sandbox_id: str) -> None:
        """Run the user process of a created container."""
        await self._checked("start", sandbox_id, sandbox_id=sandbox_id)

    async def kill(self, sandbox_id: str, *, signal: int = signals.SIGKILL) -> None:
        """Signal the container's init process; a container with no process is a no-op."""
        try:
            await self._checked("kill", sandbox_id, str(int(signal)), sandbox_id=sandbox_id)
        except ConflictError:
            return
        except RuntimeFailedError:
            # runsc reports a stopped sandbox as an unreachable control server: ask again.
            if (await self.state(sandbox_id)).status is RuntimeStatus.STOPPED:
                return
            raise

    async def wait(self, sandbox_id: str) -> None:
        """Return once the container's init process has exited; no polling.

        A pidfd (Linux 5.3) becomes readable when its process exits, even for a process
        that is not our child (runc's init is reparented away from us).
        """
        current = await self.state(sandbox_id)
        if current.pid is None:
            return
        try:
            pidfd = os.pidfd_open(current.pid)
        except ProcessLookupError:
            return
        try:
            # The pid may have exited and been reused between state and pidfd_open: ask
            # runc again, now that the pidfd pins whichever process holds the number.
            again = await self.state(sandbox_id)
            if again.pid != current.pid:
                return
            loop = asyncio.get_running_loop()
            exited: asyncio.Future[None] = loop.create_future()

            def on_exit() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(pidfd, on_exit)
            try:
                await exited
            finally:
                loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)

    async def delete(self, sandbox_id: str, *, force: bool = False) -> None:
        """Remove the container, killing it first when ``force`` is set."""
        current = await self.state(sandbox_id)
        if force and current.status is not RuntimeStatus.STOPPED:
            # A KILL first: runc's own forced delete of a live container polls for ~100 ms.
            # Best effort: delete --force below kills whatever this one could not.
            with contextlib.suppress(RuntimeFailedError):
                await self.kill(sandbox_id)
        args = ["delete", "--force", sandbox_id] if force else ["delete", sandbox_id]
        await self._checked(*args, sandbox_id=sandbox_id)

    async def state(self, sandbox_id: str) -> RuntimeState:
        """Report the container's status; ``NotFoundError`` when it does not exist."""
        out = await self._checked("state", sandbox_id, sandbox_id=sandbox_id)
        return _parse_state(json.loads(out))

    async def list(self) -> list[str]:
        """The ids of every container under this runtime's ``--root``."""
        if not self._root.exists():
            return []
        out = await self._checked("list", "--format", "json")
        entries = json.loads(out) or []
        return sorted(str(e["id"]) for e in entries)

    async def pause(self, sandbox_id: str, *, pid: int | None = None) -> None:
        """Freeze the container's processes (cgroup freezer).

        With ``pid`` (its init, as the node recorded it) the cgroup is frozen directly,
        without starting runc (``freezer.py``); runc does it when that is not possible.
        """
        freezer = freezer_of(pid, sandbox_id) if self._direct_freezer else None
        if freezer is not None:
            if await set_frozen(freezer, True):
                return
            await set_frozen(freezer, False)  # did not settle: thaw, and let runc try
        await self._checked("pause", sandbox_id, sandbox_id=sandbox_id)

    async def resume(self, sandbox_id: str, *, pid: int | None = None) -> None:
        """Thaw a paused container (directly with ``pid``, as :meth:`pause`)."""
        freezer = freezer_of(pid, sandbox_id) if self._direct_freezer else None
        if freezer is not None and await set_frozen(freezer, False):
            return
        await self._checked("resume", sandbox_id, sandbox_id=sandbox_id)

    async def set_hostname(self, sandbox_id: str, hostname: str) -> None:
        """``nsenter`` into the container's UTS namespace alone and run the host's hostname(1).

        Only the UTS namespace is entered: the binary and its libraries are the host's, so
        nothing of the sandbox's rootfs runs with the node's privileges.
        """
        state = await self.state(sandbox_id)
        if state.pid is None or state.status is not RuntimeStatus.RUNNING:
            raise ConflictError(f"sandbox {sandbox_id!r} is not running")
        code, _, err = await self._exec(
            ["nsenter", f"--target={state.pid}", "--uts", "--", _HOSTNAME_BIN, hostname],
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        if code != 0:
            raise RuntimeFailedError(
                f"setting the hostname of {sandbox_id}: {err.decode(errors='replace')[:500]}"
            )

    async def bind_boot_id(self, sandbox_id: str, source: Path, *, pid: int | None = None) -> bool:
        """See ``Runtime.bind_boot_id`` (``procmount.py`` says how)."""
        if pid is None:
            pid = (await self.state(sandbox_id)).pid
        if pid is None:
            raise RuntimeFailedError(f"container {sandbox_id} has no process to mount into")
        await bind_over(pid, source, BOOT_ID_PATH)
        return True

    async def exec(
        self,
        sandbox_id: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: tuple[int, int] | None = None,
        timeout_s: float | None = None,
    ) -> ExecResult:
        """Run ``args`` inside the container and wait; see ``Runtime.exec``."""
        if not args:
            raise ConflictError("exec needs a command")
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        cmd = ["exec"]
        for key, value in (env or {}).items():
            cmd += ["--env", f"{key}={value}"]
        if cwd is not None:
            cmd += ["--cwd", cwd]
        if user is not None:
            cmd += ["--user", f"{user[0]}:{user[1]}"]
        cmd += [sandbox_id, *args]
        # runc's own failure must not be mistaken for the command's exit status 1: runc
        # logs it at level "error" to --log, the command never writes there.
        with tempfile.NamedTemporaryFile(prefix="hutch-runc-exec-", suffix=".log") as log:
            full = [*self._global_args(), "--log", log.name, *cmd]
            code, out, err = await self._exec(
                full,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                timeout_s=timeout_s,
            )
            failure = _last_error(Path(log.name).read_text(errors="replace"))
        if failure is not None:
            self._raise(failure, sandbox_id, "exec")
        return ExecResult(exit_code=code, stdout=out, stderr=err)

    async def _checked(self, *args: str, sandbox_id: str = "") -> bytes:
        """Run a short runtime command that never hands its stdio on; raise on failure."""
        code, out, err = await self._exec(
            [*self._global_args(), *args],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        if code != 0:
            self._raise(_last_error(err.decode(errors="replace")), sandbox_id, args[0])
        return out

    async def _exec(
        self, argv: Sequence[str], *, stdout: Any, stderr: Any, timeout_s: float | None = None
    ) -> tuple[int, bytes, bytes]:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=stderr
            )
        except OSError as exc:
            raise RuntimeFailedError(f"cannot run {argv[0]}: {exc}") from exc
        cpu_weight.lower_if_background(proc.pid)  # a pool refill's runc (ADR 0038)
        try:
            timeout = timeout_s if timeout_s is not None else self._timeout
            out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            # Only the runc process we started, by its pid; then reap it.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if isinstance(exc, TimeoutError):
                raise DeadlineExceededError(
                    f"{' '.join(argv)} did not finish in {timeout} s"
                ) from exc
            raise
        return proc.returncode or 0, out or b"", err or b""

    def _raise(self, message: str | None, sandbox_id: str, verb: str) -> None:
        name = Path(self._binary).name
        text = message or f"{name} {verb} failed without a message"
        lowered = text.lower()
        if any(m in lowered for m in self.not_found_markers):
            raise NotFoundError(
                f"runtime has no sandbox {sandbox_id!r}", public_message="sandbox not found"
            )
        if verb == "kill" and any(m in lowered for m in self.not_running_markers):
            raise ConflictError(f"sandbox {sandbox_id!r} is not running")
        raise RuntimeFailedError(f"{name} {verb} {sandbox_id}: {text}")


def _last_error(log_text: str) -> str | None:
    """The last error-level message in runc's JSON log (or the last plain line)."""
    message: str | None = None
    for line in log_text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            message = line
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal", "panic"):
            message = str(entry.get("msg", line))
    return message


def _read_pid(path: Path) -> int | None:
    """The pid in a ``--pid-file`` (None if there is none or it is not a pid)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _parse_state(raw: dict[str, Any]) -> RuntimeState:
    status = RuntimeStatus(raw["status"])
    pid = int(raw.get("pid") or 0)
    bundle = raw.get("bundle")
    return RuntimeState(
        sandbox_id=str(raw["id"]),
        status=status,
        # runc reports pid 0 for a stopped container: there is no process to speak of.
        pid=pid if pid > 0 and status is not RuntimeStatus.STOPPED else None,
        bundle=Path(bundle) if bundle else None,
    )
