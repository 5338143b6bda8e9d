"""End events in the shape of Go's ProcessState, and the spawn-time checks."""

from __future__ import annotations

import pytest

from hutch.envd.process.models import ProcessEnd, ProcessSpec, PtySize
from hutch.envd.process.spawn import DEFAULT_PATH, build_env, validate_spec
from hutch.envd.users import User
from hutch.shared.errors import InvalidArgumentError


def test_end_from_exit_statuses() -> None:
    assert ProcessEnd.from_wait_status(0) == ProcessEnd(
        exit_code=0, exited=True, status="exit status 0", error=None
    )
    assert ProcessEnd.from_wait_status(3 << 8) == ProcessEnd(
        exit_code=3, exited=True, status="exit status 3", error="exit status 3"
    )


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (9, "signal: killed"),
        (15, "signal: terminated"),
        (1, "signal: hangup"),
        (11 | 0x80, "signal: segmentation fault (core dumped)"),
    ],
)
def test_end_from_signals(status: int, text: str) -> None:
    end = ProcessEnd.from_wait_status(status)
    assert (end.exit_code, end.exited, end.status, end.error) == (-1, False, text, text)


USER = User(name="u", uid=1000, gid=1000, home="/home/u", shell="/bin/sh", groups=(1000,))


def test_env_layers_request_over_init_over_login() -> None:
    env = build_env(
        user=USER, init_env={"A": "init", "B": "init", "HOME": "/x"}, request_env={"B": "req"}
    )
    assert env == {
        "PATH": DEFAULT_PATH,
        "HOME": "/x",
        "USER": "u",
        "LOGNAME": "u",
        "SHELL": "/bin/sh",
        "A": "init",
        "B": "req",
    }


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (ProcessSpec(cmd=""), "cmd is required"),
        (ProcessSpec(cmd="a\x00b"), "NUL"),
        (ProcessSpec(cmd="x", args=("\x00",)), "NUL"),
        (ProcessSpec(cmd="x", envs={"": "v"}), "invalid variable name"),
        (ProcessSpec(cmd="x", envs={"A=B": "v"}), "'A=B'"),
        (ProcessSpec(cmd="x", envs={"A": "\x00"}), "NUL"),
        (ProcessSpec(cmd="x", pty=PtySize(cols=70000, rows=1)), "16 bits"),
    ],
)
def test_validate_spec_rejects(spec: ProcessSpec, needle: str) -> None:
    with pytest.raises(InvalidArgumentError, match=needle):
        validate_spec(spec)
