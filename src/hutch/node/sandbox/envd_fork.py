"""envd forked into runc sandboxes from the node's zygote (ADR 0032 addendum, step 2).

Two pieces the sandbox host uses when ``HUTCH_NODE_ENVD_ZYGOTE`` is on and the runtime is
runc:

* :class:`EnvdZygote`: the node's one zygote (``hutch.node.zygote``), started from the
  bundle's interpreter in a **private mount namespace** whose root is a small read-only
  tmpfs holding only the bundle at ``/.hutch/envd`` (where every sandbox mounts it), the
  zygote's own source and a ``/proc``; the host's mounts are detached there
  (``zygote.drop_old_root``), so the zygote pins none of them. It is restarted when it
  exits (after ``restart_s``); while it is not ready, creates take the exec path (envd as
  tini's child, as before), decided when the sandbox's spec is written. A create whose
  zygote dies between its spec and its fork fails and is unwound like any failed boot.
* :class:`EnvdWatches`: a pidfd per forked envd. envd is no longer the container's main
  process, so its death would not stop the container by itself: on a forked envd's exit
  the host kills the container, which is what an exec'd envd's exit did (tini exited with
  it). The pid is kept in ``sandbox.json`` (``envd_pid``); reconcile re-arms the watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import select
import signal
import socket
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from hutch.node import zygote
from hutch.node.runtime.base import RuntimeFailedError
from hutch.shared.paths import ENVD_BUNDLE_DIR_IN_SANDBOX

log = logging.getLogger("hutch.node.sandbox")

#: PID 1's child in a sandbox whose envd is forked in: it waits until it is signalled
#: (tini forwards SIGTERM; the default action ends it, and tini, and the container).
#: The host's static busybox (install.sh's ``busybox-static``), bind-mounted read-only at
#: ``BUSYBOX_IN_SANDBOX``: 52 KiB anonymous of its own.
BUSYBOX_IN_SANDBOX: Final = "/.hutch/busybox"
WAITER_ARGV: Final = (BUSYBOX_IN_SANDBOX, "sleep", "infinity")
#: Without a static busybox on the host: the bundle's interpreter without ``site``
#: (3.4 MiB anonymous of its own, measured).
PYTHON_WAITER_ARGV: Final = (
    f"{ENVD_BUNDLE_DIR_IN_SANDBOX}/bin/python3", "-I", "-B", "-S", "-c",
    "import signal\nwhile True: signal.pause()",
)  # fmt: skip
#: How long ``differences`` may wait for C3's adoption by PID 1 (C2 exits right after
#: forking it, so this is normally already true at the first look).
_ADOPTION_S: Final = 2.0
#: A zygote that ran this long before it exited was healthy: restart it at once again.
_STABLE_S: Final = 30.0
_MAX_RESTART_S: Final = 30.0
#: Inside the zygote's namespace.
_SCRIPT_IN_ROOT: Final = "/hutch-envd-zygote.py"

#: Builds the zygote's private root and ``pivot_root``s into it; ``$1`` is the bundle's host
#: path, ``$2`` the zygote module's. ``/tmp`` is this mount namespace's own (a tmpfs over
#: the host's ``/tmp`` here only); ``zygote.drop_old_root`` then detaches ``/.old``.
_LAUNCH: Final = f"""set -e
exec 3<"$2" 4<"$1"
mount -t tmpfs -o mode=0755,size=4m,nosuid,nodev hutch-envd-zygote /tmp
mkdir -p /tmp{ENVD_BUNDLE_DIR_IN_SANDBOX} /tmp/proc /tmp/.old
mount --no-canonicalize --bind /proc/self/fd/4 /tmp{ENVD_BUNDLE_DIR_IN_SANDBOX}
mount -o remount,bind,ro,nosuid,nodev /tmp{ENVD_BUNDLE_DIR_IN_SANDBOX}
cat <&3 >/tmp{_SCRIPT_IN_ROOT}
exec 3<&- 4<&-
mount -t proc -o nosuid,nodev,noexec proc /tmp/proc
cd /tmp
pivot_root . .old
exec {ENVD_BUNDLE_DIR_IN_SANDBOX}/bin/python3 -I -B {_SCRIPT_IN_ROOT} hutch-envd-zygote
"""


def static_elf(path: Path) -> bool:
    """Whether ``path`` is an ELF executable with no interpreter (runs in any rootfs)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
                return False
            order = "<" if head[5] == 1 else ">"
            (phoff,) = struct.unpack_from(order + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    types = [struct.unpack_from(order + "I", table, i * phentsize)[0] for i in range(phnum)]
    return 3 not in types  # PT_INTERP


def launcher_argv(bundle_dir: Path) -> list[str]:
    """The command that starts the zygote in its private mount namespace."""
    return [
        "unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _LAUNCH,
        "hutch-envd-zygote", str(bundle_dir), zygote.__file__,
    ]  # fmt: skip


def profile_key(oci: Mapping[str, Any]) -> str:
    """Which seccomp profile a container of ``oci`` (its ``config.json``) runs under."""
    profile = json.dumps(oci.get("linux", {}).get("seccomp"), sort_keys=True)
    return hashlib.sha256(profile.encode()).hexdigest()


def oci_env(oci: Mapping[str, Any]) -> dict[str, str]:
    """The process environment ``build_spec`` wrote (envd gets exactly what runc gives)."""
    env = {}
    for item in oci.get("process", {}).get("env", []):
        key, _, value = str(item).partition("=")
        env[key] = value
    return env


class EnvdZygote:
    """The node's zygote process, supervised: started, restarted on exit, closed."""

    def __init__(self, *, bundle_dir: Path, log_path: Path, restart_s: float = 1.0) -> None:
        self._bundle_dir = bundle_dir
        self._log_path = log_path
        self._restart_s = restart_s
        self._client: zygote.ZygoteClient | None = None
        self._sock: socket.socket | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closing = False
        #: The bundle's ``SHA256`` when this zygote started (a rebuilt bundle restarts it).
        self._digest = ""
        self._filters: dict[str, list[str]] = {}
        self._filters_lock = asyncio.Lock()
        #: How many times the zygote was (re)started; for tests and logs.
        self.starts = 0

    @property
    def ready(self) -> bool:
        """Whether a zygote takes requests now (else a create takes the exec path)."""
        return self._client is not None

    def usable(self) -> bool:
        """Ready, and started from the bundle that is there now: a bundle rebuilt in place
        since (a new ``SHA256``) restarts the zygote, and creates exec envd meanwhile, so a
        forked envd never runs one version's code over another's files."""
        if self._client is None:
            return False
        if _digest(self._bundle_dir) == self._digest:
            return True
        log.warning("envd bundle %s changed: restarting the envd zygote", self._bundle_dir)
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        self._drop()
        return False

    @property
    def pid(self) -> int | None:
        """The zygote's host pid while it runs."""
        return self._proc.pid if self._proc is not None and self._client is not None else None

    async def start(self, *, wait_s: float = 30.0) -> None:
        """Start supervising; wait up to ``wait_s`` for the first zygote to be ready (a
        zygote that does not come up is logged, and creates take the exec path)."""
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name="envd-zygote")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), wait_s)
        if not self.ready:
            log.warning("envd zygote not ready after %.0fs: envd is exec'd meanwhile", wait_s)

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until a zygote is ready (tests: after a restart)."""
        await asyncio.wait_for(self._ready.wait(), timeout_s)

    async def aclose(self) -> None:
        """Stop the zygote (EOF on its socket; SIGKILL if it lingers). Forked envds live on
        in their containers (their parent is PID 1 there, not the zygote)."""
        self._closing = True
        self._drop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._reap()

    def _drop(self) -> None:
        self._client = None
        self._ready.clear()
        if self._sock is not None:
            self._sock.close()  # EOF: the zygote's loop returns
            self._sock = None

    async def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def _supervise(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while not self._closing:
            started = loop.time()
            try:
                await self._spawn()
            except (OSError, zygote.ZygoteError) as exc:
                why = f"did not start: {exc}"
                self._drop()
                await self._reap()
            else:
                assert self._proc is not None
                code = await self._proc.wait()
                if self._closing:
                    return
                self._drop()
                why = f"exited ({code})"
            # One that ran a while is restarted after restart_s; one that keeps failing is
            # retried ever more slowly (up to _MAX_RESTART_S). Creates exec envd meanwhile.
            failures = 0 if loop.time() - started > _STABLE_S else min(failures + 1, 8)
            delay = min(self._restart_s * 2 ** max(failures - 1, 0), _MAX_RESTART_S)
            log.warning("envd zygote %s: envd is exec'd until it is back (in %.0fs)", why, delay)
            await asyncio.sleep(delay)

    async def _spawn(self) -> None:
        mine, theirs = zygote.start_socket()
        self._digest = _digest(self._bundle_dir)
        try:
            self._log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(self._log_path, "ab") as out:
                self._proc = await asyncio.create_subprocess_exec(
                    *launcher_argv(self._bundle_dir), stdin=theirs.fileno(), stdout=out,
                    stderr=out, start_new_session=True,
                )  # fmt: skip
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self._sock = mine
        self.starts += 1
        await asyncio.to_thread(zygote.wait_ready, mine)
        self._client = zygote.ZygoteClient(mine)
        self._ready.set()
        log.info("envd zygote ready (pid %s)", self._proc.pid)

    async def filters(self, key: str, init_pid: int) -> list[str]:
        """The seccomp filters of profile ``key``, read once from a container's PID 1."""
        async with self._filters_lock:
            if key not in self._filters:
                self._filters[key] = await asyncio.to_thread(zygote.seccomp_filters, init_pid)
            return self._filters[key]

    async def fork(
        self,
        init_pid: int,
        *,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        profile: str,
        keyring: str,
        listen: tuple[str, int] | None = None,
    ) -> int:
        """Fork envd into the container of ``init_pid``, check it; its host pid.

        ``listen``: the address envd serves on, bound in the sandbox before envd runs.

        Raises :class:`RuntimeFailedError` when no zygote is ready, the child failed a step,
        or the forked envd is not its container's own (``zygote.differences``: it is
        killed then).
        """
        client = self._client
        if client is None:
            raise RuntimeFailedError("the envd zygote is restarting")
        t0 = time.perf_counter()
        filters = await self.filters(profile, init_pid)
        t1 = time.perf_counter()
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            pid = await asyncio.to_thread(
                client.fork_envd, init_pid, argv=argv, env=env, log_fd=log_fd,
                filters=filters, keyring=keyring, listen=listen,
            )  # fmt: skip
        except zygote.ZygoteError as exc:
            raise RuntimeFailedError(str(exc)) from exc
        finally:
            os.close(log_fd)
        t2 = time.perf_counter()
        await _check_own(pid, init_pid)
        log.debug(
            "envd forked into %s: filters %.1f ms, fork %.1f ms, check %.1f ms", init_pid,
            (t1 - t0) * 1000, (t2 - t1) * 1000, (time.perf_counter() - t2) * 1000,
        )  # fmt: skip
        return pid


def _digest(bundle_dir: Path) -> str:
    try:
        return (bundle_dir / "SHA256").read_text().strip()
    except OSError:
        return ""


async def _check_own(pid: int, init_pid: int) -> None:
    """Kill ``pid`` and raise unless it is the container's own (credentials, capabilities,
    seccomp, rlimits, namespaces, cgroups, parent: what ``zygote.differences`` compares)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise RuntimeFailedError(f"forked envd {pid} exited at once") from None
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _ADOPTION_S
        while True:
            try:
                diff = zygote.differences(pid, init_pid)
            except OSError as exc:
                diff = [f"unreadable: {exc}"]
            # Only the parent differing: C2 has not exited yet, so PID 1 has not adopted it.
            adopting = len(diff) == 1 and diff[0].startswith("PPid")
            if not adopting or loop.time() >= deadline:
                break
            await asyncio.sleep(0.005)
        if diff:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            raise RuntimeFailedError(f"forked envd is not its sandbox's own: {diff}")
    finally:
        os.close(pidfd)


class EnvdWatches:
    """A pidfd per forked envd; ``on_exit(host_id)`` runs (as a task) when one exits."""

    def __init__(self, on_exit: Callable[[str], Any]) -> None:
        self._on_exit = on_exit
        self._fds: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def watch(self, host_id: str, pid: int) -> bool:
        """Watch ``pid`` as ``host_id``'s envd; False if it is gone already."""
        self.unwatch(host_id)
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        self._fds[host_id] = fd
        asyncio.get_running_loop().add_reader(fd, self._exited, host_id, fd)
        return True

    def alive(self, host_id: str) -> bool:
        """Whether ``host_id``'s watched envd still runs (True when none is watched)."""
        fd = self._fds.get(host_id)
        return fd is None or not select.select([fd], [], [], 0)[0]

    def unwatch(self, host_id: str) -> None:
        """Stop watching (the container is being deleted: envd's exit is expected)."""
        fd = self._fds.pop(host_id, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def watched(self) -> set[str]:
        """The host ids watched now."""
        return set(self._fds)

    def _exited(self, host_id: str, fd: int) -> None:
        if self._fds.get(host_id) != fd:
            return
        self.unwatch(host_id)
        task = asyncio.ensure_future(self._on_exit(host_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop every watch (node stop: the envds keep running)."""
        for host_id in list(self._fds):
            self.unwatch(host_id)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def envd_alive_in(pid: int, init_pid: int) -> bool:
    """Whether ``pid`` is still a forked envd of the container of ``init_pid`` (after a
    node restart: the pid is PID 1's child and in its pid namespace, not a reused one)."""
    try:
        status = zygote.parse_status(Path(f"/proc/{pid}/status").read_text())
        same_ns = os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{init_pid}/ns/pid")
    except OSError:
        return False
    return same_ns and status.get("PPid") == str(init_pid)
