"""The envd zygote (ADR 0032): one pre-imported envd per node that forks envd into sandboxes.

This module has one job, making a forked process into one of a container's own, and two
halves that meet on a ``SOCK_SEQPACKET`` socket pair:

* **The node's half** (:class:`ZygoteClient`, :func:`read_attributes`,
  :func:`seccomp_filters`): from a container's PID 1 it opens the descriptors the child
  enters (the six namespaces of :data:`NAMESPACES`, ``cgroup.procs`` of every hierarchy
  PID 1 is in, the log) and reads what the child must copy (credentials, rlimits,
  capabilities, umask, ``oom_score_adj``, the seccomp filters), and sends them with
  ``SCM_RIGHTS``. Each request carries its own socket; the child answers on it with "ok"
  and the kernel stamps the answer with the child's pid as the node sees it
  (``SO_PASSCRED``), so the node learns envd's host pid without guessing.
* **The zygote's half** (:func:`serve`, run by ``python -c`` of this file's own source in
  the envd bundle's interpreter, so it imports nothing of hutch but ``hutch.envd``): it
  imports envd, freezes the heap, and per request forks C1, which joins the cgroups, enters
  the namespaces (the mount namespace last, which also sets root and cwd), forks C2 in the
  pid namespace, which forks C3 (envd, adopted by PID 1) and exits; C3 joins the session
  keyring, copies ``oom_score_adj`` and the nice value, installs the filters, sets
  rlimits, groups, gids, uids, umask, the bounding set, ambient and ``capset`` (the filter
  first: without no-new-privileges installing one needs CAP_SYS_ADMIN, which Docker's set
  drops), then ``setsid``, log on 1 and 2, the sandbox's ``/dev/null`` on 0, the request's
  environment, and ``hutch.envd.main.main``. Every descriptor but the request's is closed
  in C1 first.

:func:`differences` compares a process's attributes with PID 1's (bench, tests, and the
node's check before a forked envd is used). Stdlib only; x86_64 and aarch64 syscalls.
Used by ``bench/envd_zygote.py`` and its tests, and by the node
(``hutch.node.sandbox.envd_fork``, ADR 0032 addendum step 2), which starts it in a private
mount namespace (:func:`drop_old_root` finishes that namespace from inside).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import platform
import resource
import signal
import socket
import struct
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

#: Entered in this order; ``mnt`` last (it also moves root and cwd into the container).
NAMESPACES: Final = ("ipc", "uts", "net", "cgroup", "pid", "mnt")
#: /proc/PID/status fields a forked envd must share with PID 1.
STATUS_FIELDS: Final = (
    "Uid", "Gid", "Groups", "Umask", "NoNewPrivs", "Seccomp", "Seccomp_filters",
    "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
)  # fmt: skip
_CAPS: Final = ("CapInh", "CapPrm", "CapEff", "CapBnd")
#: (seccomp, capset, keyctl) by machine.
_SYSCALLS: Final = {"x86_64": (317, 126, 250), "aarch64": (277, 91, 219)}
_PTRACE_SEIZE, _PTRACE_INTERRUPT, _PTRACE_DETACH = 0x4206, 0x4207, 17
_PTRACE_SECCOMP_GET_FILTER: Final = 0x420C
_PR_CAPBSET_DROP, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
_CAPABILITY_VERSION_3: Final = 0x20080522
_KEYCTL_JOIN_SESSION_KEYRING: Final = 1
_MAX_MESSAGE: Final = 1 << 20
_MAX_FDS: Final = 64
_UCRED: Final = struct.Struct("3i")
#: What a request may need beyond ``hutch.envd.main`` (the Connect stack, PTY, watchers,
#: the server's protocol and loop): imported once in the zygote, shared by every child.
_PREIMPORTS: Final = (
    "hutch.envd.rpc.services", "hutch.envd.process.manager", "hutch.envd.filesystem.watcher",
    "uvicorn.lifespan.on", "uvicorn.protocols.http.httptools_impl", "uvicorn.loops.asyncio",
    # anyio's asyncio backend: envd's lifespan startup is its first to_thread call, which
    # imported it in every forked envd (17 ms on an idle host, more in a loaded sandbox).
    "anyio._backends._asyncio", "anyio.streams.memory", "anyio.streams.stapled",
)  # fmt: skip


class ZygoteError(Exception):
    """The zygote is gone or refused a request, or its child failed before envd ran."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


# ---- what the node reads of a container's PID 1 -------------------------------------------


def parse_status(text: str) -> dict[str, str]:
    """``/proc/PID/status`` as a dict of stripped values."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def cgroup_dirs(proc_cgroup: str, *, root: Path = Path("/sys/fs/cgroup")) -> list[Path]:
    """The directories of every hierarchy a ``/proc/PID/cgroup`` text names, under ``root``.

    cgroup v1 hierarchies are mounted at ``root/<first controller>`` (named ones at
    ``root/<name>``); the v2 one (``0::``) at ``root/unified`` beside v1, else at ``root``.
    """
    out = []
    for line in proc_cgroup.splitlines():
        if not line:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers:
            base = root / controllers.split(",")[0].removeprefix("name=")
        else:
            base = root / "unified" if (root / "unified").is_dir() else root
        out.append(base / path.lstrip("/"))
    return out


def seccomp_filters(pid: int) -> list[str]:
    """The seccomp filters of ``pid`` (hex BPF), oldest first, read with ptrace.

    The tracee is seized and interrupted for the read, then detached: a stop of a few
    microseconds. Needs CAP_SYS_ADMIN and a kernel with CONFIG_CHECKPOINT_RESTORE.
    """
    libc = _libc()
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    _check(libc.ptrace(_PTRACE_SEIZE, pid, None, None), "PTRACE_SEIZE")
    filters: list[str] = []
    try:
        _check(libc.ptrace(_PTRACE_INTERRUPT, pid, None, None), "PTRACE_INTERRUPT")
        os.waitpid(pid, 0x40000000)  # __WALL: the tracee's stop
        while (n := libc.ptrace(_PTRACE_SECCOMP_GET_FILTER, pid, len(filters), None)) > 0:
            buf = (ctypes.c_uint64 * n)()
            libc.ptrace(_PTRACE_SECCOMP_GET_FILTER, pid, len(filters), buf)
            filters.append(bytes(buf).hex())
    finally:
        libc.ptrace(_PTRACE_DETACH, pid, None, None)
    return filters[::-1]  # the kernel lists the newest first


def nice_of(pid: int) -> int:
    """``pid``'s nice value (``/proc/PID/stat`` field 19; the comm before it may hold spaces)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[16])


def read_attributes(pid: int) -> dict[str, Any]:
    """What the child copies from ``pid`` (JSON-ready): ids, rlimits, caps, umask, oom, nice
    (a warm-pool member's PID 1 runs at the refill's nice 10, ADR 0038: so does its envd)."""
    st = parse_status(Path(f"/proc/{pid}/status").read_text())
    rlimits = {
        name: list(resource.prlimit(pid, getattr(resource, name)))
        for name in dir(resource)
        if name.startswith("RLIMIT_")
    }
    return {
        "uid": [int(v) for v in st["Uid"].split()[:3]],
        "gid": [int(v) for v in st["Gid"].split()[:3]],
        "groups": [int(g) for g in st["Groups"].split()],
        "umask": int(st["Umask"], 8),
        "rlimits": rlimits,
        "caps": {k: int(st[k], 16) for k in _CAPS},
        "oom_score_adj": int(Path(f"/proc/{pid}/oom_score_adj").read_text()),
        "nice": nice_of(pid),
    }


def differences(pid: int, init: int) -> list[str]:
    """What of ``pid`` differs from the container's PID 1 ``init``; [] when it is its own.

    Status fields (:data:`STATUS_FIELDS`), the seven namespaces, limits, cgroups,
    ``oom_score_adj``, the nice value and the parent (``init`` itself).
    """
    a = parse_status(Path(f"/proc/{pid}/status").read_text())
    b = parse_status(Path(f"/proc/{init}/status").read_text())
    out = [k for k in STATUS_FIELDS if a.get(k) != b.get(k)]
    for n in (*NAMESPACES, "user"):
        if os.readlink(f"/proc/{pid}/ns/{n}") != os.readlink(f"/proc/{init}/ns/{n}"):
            out.append(f"ns/{n}")
    for name in ("limits", "cgroup", "oom_score_adj"):
        if Path(f"/proc/{pid}/{name}").read_text() != Path(f"/proc/{init}/{name}").read_text():
            out.append(name)
    if nice_of(pid) != nice_of(init):
        out.append("nice")
    if a.get("PPid") != str(init):
        out.append(f"PPid {a.get('PPid')}")
    return out


# ---- the node's side of the socket ---------------------------------------------------------


def zygote_argv(python: Sequence[str]) -> list[str]:
    """How to start the zygote with the bundle's interpreter (``python``, flags included);
    the socket end is its fd 0."""
    return [*python, "-c", Path(__file__).read_text(), "hutch-envd-zygote"]


class ZygoteClient:
    """The node's end of a zygote's socket. Thread-safe: one datagram per request."""

    def __init__(self, sock: socket.socket, *, timeout_s: float = 30.0) -> None:
        self._sock = sock
        self._timeout_s = timeout_s

    def fork_envd(
        self,
        init_pid: int,
        *,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_fd: int,
        filters: Sequence[str],
        keyring: str | None = None,
        listen: tuple[str, int] | None = None,
    ) -> int:
        """Fork envd into the container of ``init_pid``; its pid on the host.

        ``filters`` are PID 1's seccomp filters (:func:`seccomp_filters`, the same for
        every container of one profile); ``keyring`` the session keyring to join
        (runc's ``_ses.<id>``); ``listen`` the address envd serves on, bound and listening
        in the sandbox before envd runs when its envd takes ``--listen-fd``. Blocks until
        the child says it is about to run envd.
        Raises :class:`ZygoteError` if the zygote is gone or the child failed a step.
        """
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        opened: list[int] = []
        try:
            mine.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            for n in NAMESPACES:
                opened.append(os.open(f"/proc/{init_pid}/ns/{n}", os.O_RDONLY | os.O_CLOEXEC))
            cgroup_text = Path(f"/proc/{init_pid}/cgroup").read_text()
            for d in cgroup_dirs(cgroup_text):
                opened.append(os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
            request = {
                "argv": list(argv), "env": dict(env), "attrs": read_attributes(init_pid),
                "filters": list(filters), "keyring": keyring,
                "listen": list(listen) if listen is not None else None,
                "cgroups": len(opened) - len(NAMESPACES),
            }  # fmt: skip
            data = json.dumps(request).encode()
            try:
                socket.send_fds(self._sock, [data], [theirs.fileno(), log_fd, *opened])
            except OSError as exc:
                raise ZygoteError(f"the zygote does not take requests: {exc}") from exc
        finally:
            for fd in opened:
                os.close(fd)
            theirs.close()
        with mine:
            mine.settimeout(self._timeout_s)
            try:
                answer, ancdata, _, _ = mine.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
            except OSError as exc:
                raise ZygoteError(f"no answer from the zygote's child: {exc}") from exc
        pid = next(
            (_UCRED.unpack(d[: _UCRED.size])[0] for lvl, typ, d in ancdata
             if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS),
            0,
        )  # fmt: skip
        if answer != b"ok" or pid <= 0:
            reason = answer.decode(errors="replace") or "its child exited without an answer"
            raise ZygoteError(f"envd was not forked into pid {init_pid}'s container: {reason}")
        return pid


# ---- the zygote's side (runs in the bundle's interpreter) ----------------------------------


def _close_all_but(keep: Sequence[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):  # the listing's own, closed already
                os.close(fd)


def _enter(request: dict[str, Any], fds: list[int], libc: ctypes.CDLL) -> None:
    """C1: join the cgroups and the namespaces, fork C2, which forks C3 (returns in C3)."""
    ns_fds = fds[2 : 2 + len(NAMESPACES)]
    for fd in fds[2 + len(NAMESPACES) :][: request["cgroups"]]:
        os.write(fd, str(os.getpid()).encode())  # from here the sandbox's limits apply
        os.close(fd)
    for name, fd in zip(NAMESPACES, ns_fds, strict=True):
        _check(libc.setns(fd, 0), f"setns {name}")
        os.close(fd)
    child = os.fork()  # C2: the first of us in the container's pid namespace
    if child:
        os.waitpid(child, 0)
        os._exit(0)
    if os.fork():
        os._exit(0)  # C3 is orphaned inside the pid namespace: its PID 1 adopts it


def _become(request: dict[str, Any], libc: ctypes.CDLL) -> None:
    """C3: take PID 1's attributes, in the order runc takes them."""
    seccomp_nr, capset_nr, keyctl_nr = _SYSCALLS[platform.machine()]
    attrs = request["attrs"]
    if request.get("keyring"):  # before the filter: Docker's profile denies keyctl
        name = ctypes.c_char_p(request["keyring"].encode())
        if libc.syscall(keyctl_nr, _KEYCTL_JOIN_SESSION_KEYRING, name) < 0:
            _check(-1, "keyctl JOIN_SESSION_KEYRING")
    Path("/proc/self/oom_score_adj").write_text(str(attrs["oom_score_adj"]))
    if "nice" in attrs:  # while CAP_SYS_NICE is still ours (a lower value needs it)
        os.setpriority(os.PRIO_PROCESS, 0, attrs["nice"])

    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    for blob in request["filters"]:
        code = bytes.fromhex(blob)
        buf = ctypes.create_string_buffer(code, len(code))
        prog = _Prog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
        _check(libc.syscall(seccomp_nr, 1, 0, ctypes.byref(prog)), "seccomp")
    for name, limits in attrs["rlimits"].items():
        resource.setrlimit(getattr(resource, name), tuple(limits))
    os.setgroups(attrs["groups"])
    os.setresgid(*attrs["gid"])
    os.setresuid(*attrs["uid"])
    os.umask(attrs["umask"])
    caps = attrs["caps"]
    for cap in range(64):  # EINVAL past the kernel's last capability
        ok = caps["CapBnd"] >> cap & 1 or libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) == 0
        if not ok and ctypes.get_errno() != 22:
            _check(-1, "PR_CAPBSET_DROP")
    _check(libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "ambient clear")
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    eff, prm, inh = caps["CapEff"], caps["CapPrm"], caps["CapInh"]
    words = [eff, prm, inh, eff >> 32, prm >> 32, inh >> 32]
    data = (ctypes.c_uint32 * 6)(*(w & 0xFFFFFFFF for w in words))
    _check(libc.syscall(capset_nr, header, data), "capset")


def _child(request: dict[str, Any], fds: list[int], run: Any) -> None:
    """C1 to C3 and envd; never returns."""
    answer = socket.socket(fileno=fds[0])
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # envd waits for its processes
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        _close_all_but(fds)
        libc = _libc()
        _enter(request, fds, libc)
        _become(request, libc)
        os.setsid()
        os.chdir("/")
        null = os.open("/dev/null", os.O_RDWR)  # the container's: its mount namespace
        os.dup2(null, 0)
        os.dup2(fds[1], 1)
        os.dup2(fds[1], 2)
        for fd in (null, fds[1]):
            if fd > 2:
                os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        argv = list(request["argv"])
        if request.get("listen") and _LISTEN_FD_OPTION:
            argv += [_LISTEN_FD_OPTION, str(_listening(*request["listen"]))]
        answer.send(b"ok")  # SO_PASSCRED on the node's end: the kernel adds our pid
        answer.close()
    except BaseException as exc:
        try:
            answer.send(f"{type(exc).__name__}: {exc}".encode()[:4000])
        finally:
            os._exit(1)
    code = 1
    try:
        code = run(argv)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


#: envd's ``--listen-fd`` when the bundle's envd takes one (``preimport`` finds out).
_LISTEN_FD_OPTION: str | None = None
#: uvicorn's default backlog.
_BACKLOG: Final = 2048


def _listening(host: str, port: int) -> int:
    """C3, in the sandbox's namespaces and as its PID 1's user: a socket listening on
    ``host:port``, envd's from here on (its descriptor)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    sock.bind((host, port))
    sock.listen(_BACKLOG)
    return sock.detach()


def preimport() -> Any:
    """Import everything a request to envd could need, freeze the heap; envd's ``main``.

    By name: this runs in the bundle's interpreter, never in the node (which imports no
    envd module, tests/unit/test_import_boundaries.py).
    """
    import gc

    global _LISTEN_FD_OPTION
    envd_main = importlib.import_module("hutch.envd.main")
    _LISTEN_FD_OPTION = getattr(envd_main, "LISTEN_FD_OPTION", None)
    envd_main._uvicorn()  # uvicorn's Config and Server without its command line (ADR 0032)
    for name in _PREIMPORTS:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()  # the children's refcount writes stay off the frozen objects' GC headers
    return envd_main.main


def serve(sock_fd: int = 0) -> None:
    """The zygote's loop: :func:`preimport`, then fork per request until EOF."""
    run = preimport()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    sock = socket.socket(fileno=sock_fd)
    sock.send(b"ready")
    while True:
        if len(os.listdir("/proc/self/task")) != 1:  # setns(mnt) refuses threads
            raise SystemExit("the zygote must be single-threaded")
        try:
            data, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, _MAX_FDS)
        except InterruptedError:
            continue
        if not data:
            return  # the node closed its end
        try:
            request = json.loads(data)
            if len(fds) < 2 + len(NAMESPACES):
                raise ValueError(f"{len(fds)} descriptors")
        except ValueError as exc:
            print(f"zygote: bad request: {exc}", file=sys.stderr, flush=True)
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            _child(request, fds, run)
        for fd in fds:
            os.close(fd)


def start_socket() -> tuple[socket.socket, socket.socket]:
    """``(node's end, zygote's end)``: pass the zygote's end as the zygote's fd 0."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def wait_ready(sock: socket.socket, *, timeout_s: float = 60.0) -> None:
    """Wait for the zygote's "ready" on the node's end."""
    sock.settimeout(timeout_s)
    try:
        message = sock.recv(16)
    except OSError as exc:
        raise ZygoteError(f"the zygote did not start: {exc}") from exc
    finally:
        sock.settimeout(None)
    if message != b"ready":
        raise ZygoteError("the zygote exited during its start")


_MNT_DETACH, _MS_RDONLY, _MS_REMOUNT = 2, 1, 32


def drop_old_root(old: str = "/.old") -> None:
    """In the node's zygote after ``pivot_root . .old``: detach the host's mounts (none of
    them stays pinned by this namespace), remove ``old`` and make the root read-only."""
    if not os.path.isdir(old):
        return
    libc = _libc()
    _check(libc.umount2(old.encode(), _MNT_DETACH), f"umount {old}")
    os.rmdir(old)
    _check(libc.mount(b"none", b"/", None, _MS_REMOUNT | _MS_RDONLY, None), "remount / ro")


if __name__ == "__main__" and sys.argv[1:] == ["hutch-envd-zygote"]:
    drop_old_root()
    serve()
