"""The zygote's pure parts: /proc parsing, cgroup directories, and its socket's failures."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hutch.node import zygote


def test_zygote_parse_status_strips_values() -> None:
    status = zygote.parse_status("Name:\tenvd\nCapEff:\t00000000a80425fb\nGroups:\t\n")
    assert status == {"Name": "envd", "CapEff": "00000000a80425fb", "Groups": ""}


def test_zygote_cgroup_dirs_v1_hierarchies_and_named(tmp_path: Path) -> None:
    (tmp_path / "unified").mkdir()
    text = (
        "12:cpu,cpuacct:/hutch/sb1\n4:memory:/hutch/sb1\n1:name=systemd:/hutch/sb1\n0::/hutch/sb1\n"
    )
    assert zygote.cgroup_dirs(text, root=tmp_path) == [
        tmp_path / "cpu/hutch/sb1",
        tmp_path / "memory/hutch/sb1",
        tmp_path / "systemd/hutch/sb1",
        tmp_path / "unified/hutch/sb1",
    ]


def test_zygote_cgroup_dirs_v2_only_is_the_root(tmp_path: Path) -> None:
    assert zygote.cgroup_dirs("0::/hutch/sb1\n", root=tmp_path) == [tmp_path / "hutch/sb1"]


def test_zygote_argv_runs_this_module_as_the_zygote() -> None:
    argv = zygote.zygote_argv(["/b/python3", "-I", "-B"])
    assert argv[:4] == ["/b/python3", "-I", "-B", "-c"]
    assert argv[4] == Path(zygote.__file__).read_text()
    assert argv[5:] == ["hutch-envd-zygote"]  # __main__ serves only when asked to


def test_zygote_wait_ready_refuses_a_zygote_that_exited() -> None:
    mine, theirs = zygote.start_socket()
    theirs.close()
    with pytest.raises(zygote.ZygoteError, match="exited during its start"), mine:
        zygote.wait_ready(mine, timeout_s=5)


def test_zygote_wait_ready_takes_ready() -> None:
    mine, theirs = zygote.start_socket()
    with mine, theirs:
        theirs.send(b"ready")
        zygote.wait_ready(mine, timeout_s=5)
        assert mine.type == socket.SOCK_SEQPACKET
