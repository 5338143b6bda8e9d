"""The zygote (``hutch.node.zygote``, ADR 0032) against envd exec'd by runc, in real runc
containers made by ``build_spec`` (hutch's capabilities, seccomp profile and masks).

A zygote-forked envd must be the container's own as much as an exec'd one: the same
credentials, capabilities with bounding set, seccomp mode and filter count, no-new-privileges,
cgroups, namespaces and parent (PID 1); no host descriptor but the log it was given; it
serves ``/health`` inside the sandbox, and it dies with the container.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nodehelpers import CGROUP_PARENT

from hutch.node import zygote
from hutch.node.bundle import BindMount, SandboxSpec, build_spec

_HEALTH = """
import socket, sys, time
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as s:
            s.sendall(b"GET /health HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
            if s.recv(64).startswith(b"HTTP/1.1 204"):
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.02)
sys.exit(1)
"""
_PORT = 49983
_TINI = Path("/usr/bin/tini-static")
#: The zygote's containers wait in tini (it reaps what it adopts), as ADR 0032 plans.
_WAITER = ["/.hutch/tini", "--", "/bin/sleep", "100000"]


class _Container:
    def __init__(self, work: Path, rootfs: Path, bundle: Path, cid: str, args: list[str]) -> None:
        self.cid, self.runc = cid, ["runc", "--root", str(work / "runc")]
        root = work / f"rootfs-{cid}"
        shutil.copytree(rootfs, root, symlinks=True)
        spec = SandboxSpec(
            sandbox_id=cid, rootfs=root, args=args,
            bind_mounts=(BindMount(bundle, str(bundle), read_only=True),
                         BindMount(_TINI, "/.hutch/tini", read_only=True)),
        )  # fmt: skip
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        config = build_spec(spec, cgroup_parent=CGROUP_PARENT, max_nofile=hard)
        oci = work / f"oci-{cid}"
        oci.mkdir()
        (oci / "config.json").write_text(json.dumps(config))
        self.log = work / f"{cid}.log"
        with open(self.log, "ab") as out:
            subprocess.run(
                [*self.runc, "run", "--detach", "--bundle", str(oci), cid],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=True,
            )  # fmt: skip
        state = subprocess.run([*self.runc, "state", cid], capture_output=True, check=True)
        self.pid = int(json.loads(state.stdout)["pid"])

    def healthy(self) -> bool:
        probe = ["nsenter", f"--net=/proc/{self.pid}/ns/net", "--", sys.executable, "-c",
                 _HEALTH, str(_PORT)]  # fmt: skip
        return subprocess.run(probe, timeout=90).returncode == 0

    def delete(self) -> None:
        subprocess.run([*self.runc, "delete", "--force", self.cid], capture_output=True)


@pytest.fixture
def work(tmp_path: Path, node_home: Path, envd_bundle_dir: Path) -> Iterator[Path]:
    yield tmp_path


@pytest.fixture
def node_zygote(envd_bundle_dir: Path, tmp_path: Path) -> Iterator[zygote.ZygoteClient]:
    mine, theirs = zygote.start_socket()
    python = [str(envd_bundle_dir / "lib" / "ld-linux-x86-64.so.2"),
              str(envd_bundle_dir / "bin" / "python3"), "-I", "-B"]  # fmt: skip
    with open(tmp_path / "zygote.err", "wb") as err:
        proc = subprocess.Popen(zygote.zygote_argv(python), stdin=theirs, stdout=err, stderr=err)
    theirs.close()
    try:
        zygote.wait_ready(mine)
        yield zygote.ZygoteClient(mine)
    finally:
        mine.close()  # EOF: the zygote returns
        proc.wait(timeout=30)


def _envd_args(bundle: Path) -> list[str]:  # the bundle is mounted at its host path
    return ["--host", "127.0.0.1", "--port", str(_PORT), "--log-level", "info"]


def _status(pid: int) -> dict[str, str]:
    return zygote.parse_status(Path(f"/proc/{pid}/status").read_text())


def test_zygote_forked_envd_matches_exec_envd(
    work: Path, node_home: Path, envd_bundle_dir: Path, node_zygote: zygote.ZygoteClient
) -> None:
    rootfs = node_home / "templates" / "busybox" / "rootfs"
    python = [str(envd_bundle_dir / "lib" / "ld-linux-x86-64.so.2"),
              str(envd_bundle_dir / "bin" / "python3"), "-I", "-B"]  # fmt: skip
    exec_c = _Container(work, rootfs, envd_bundle_dir, "hsmz-exec",
                        [*python, "-m", "hutch.envd", *_envd_args(envd_bundle_dir)])  # fmt: skip
    fork_c = _Container(work, rootfs, envd_bundle_dir, "hsmz-fork", _WAITER)
    envd = 0
    try:
        log_path = work / "envd.log"
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            envd = node_zygote.fork_envd(
                fork_c.pid, argv=_envd_args(envd_bundle_dir), env={"PATH": "/bin"},
                log_fd=log_fd, filters=zygote.seccomp_filters(fork_c.pid),
                keyring=f"_ses.{fork_c.cid}",  # runc's name for the container's
            )  # fmt: skip
        finally:
            os.close(log_fd)
        assert exec_c.healthy(), exec_c.log.read_text()
        assert fork_c.healthy(), log_path.read_text()

        # The forked envd is its container's own, as the exec'd one is PID 1 of its own.
        assert zygote.differences(envd, fork_c.pid) == []
        forked, execd = _status(envd), _status(exec_c.pid)
        for key in ("Uid", "Gid", "Groups", "CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb",
                    "Seccomp", "Seccomp_filters", "NoNewPrivs"):  # fmt: skip
            assert forked[key] == execd[key], key
        assert forked["Seccomp"] == "2"
        assert forked["PPid"] == str(fork_c.pid)
        cgroups = Path(f"/proc/{envd}/cgroup").read_text()
        assert cgroups.replace("hsmz-fork", "X") == Path(
            f"/proc/{exec_c.pid}/cgroup"
        ).read_text().replace("hsmz-exec", "X")
        assert Path(f"/proc/{envd}/root").resolve() == Path(f"/proc/{fork_c.pid}/root").resolve()

        # No host descriptor: only the log it was given, the sandbox's /dev/null, and
        # sockets, pipes and event fds of its own.
        for fd in os.listdir(f"/proc/{envd}/fd"):
            target = os.readlink(f"/proc/{envd}/fd/{fd}")
            if target.startswith(("socket:", "pipe:", "anon_inode:")):
                continue
            assert target in (str(log_path), "/dev/null"), (fd, target)
        assert (
            os.stat(f"/proc/{envd}/fd/0").st_dev
            == os.stat(f"/proc/{fork_c.pid}/root/dev/null").st_dev
        )  # the sandbox's own /dev/null, not the host's
        assert log_path.stat().st_size > 0  # envd's own lines, as in envd.log today
    finally:
        exec_c.delete()
        fork_c.delete()
    # envd dies with its container (the pid namespace's init is gone).
    deadline = time.monotonic() + 60
    while envd and Path(f"/proc/{envd}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not envd or not Path(f"/proc/{envd}").exists()


def test_zygote_child_failure_is_reported_and_leaves_nothing(
    work: Path, node_home: Path, envd_bundle_dir: Path, node_zygote: zygote.ZygoteClient
) -> None:
    rootfs = node_home / "templates" / "busybox" / "rootfs"
    c = _Container(work, rootfs, envd_bundle_dir, "hsmz-bad", _WAITER)
    try:
        before = Path(f"/proc/{c.pid}/task/{c.pid}/children").read_text()
        with pytest.raises(zygote.ZygoteError, match="seccomp"):
            node_zygote.fork_envd(
                c.pid, argv=_envd_args(envd_bundle_dir), env={}, log_fd=2,
                filters=["00"],  # not a BPF program: the child fails at the filter
            )  # fmt: skip
        children = Path(f"/proc/{c.pid}/task/{c.pid}/children")
        deadline = time.monotonic() + 60  # tini reaps the failed child it adopted
        while children.read_text() != before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert children.read_text() == before
    finally:
        c.delete()


def test_zygote_gone_is_a_zygote_error(node_home: Path) -> None:
    mine, theirs = zygote.start_socket()
    theirs.close()
    with mine:
        client = zygote.ZygoteClient(mine, timeout_s=5)
        with pytest.raises(zygote.ZygoteError):
            client.fork_envd(os.getpid(), argv=[], env={}, log_fd=2, filters=[])
