"""``spawn.shell_argv``: ``/bin/bash`` runs as ``/bin/sh`` where an image has no bash."""

from __future__ import annotations

import pytest

from hutch.envd.process.spawn import shell_argv


def _only(*present: str):
    return lambda path: path in present


@pytest.mark.parametrize(
    "args",
    [
        ["-l", "-c", "echo hi; exit 3"],  # commands.run
        ["-i", "-l"],  # pty.create
        ["-lc", "echo $0 $1", "name", "one"],
        ["--login", "-c", "true"],
        [],
    ],
)
def test_sdk_shapes_fall_back_to_sh_without_bash(args: list[str]) -> None:
    argv = shell_argv("/bin/bash", args, executable=_only("/bin/sh"))
    assert argv[0] == "/bin/sh"
    assert argv[1:] == ["-l" if a == "--login" else a for a in args]


def test_bash_is_used_where_it_exists() -> None:
    argv = ["/bin/bash", "-l", "-c", "x"]
    assert shell_argv(argv[0], argv[1:], executable=_only("/bin/bash", "/bin/sh")) == argv


@pytest.mark.parametrize(
    "args",
    [
        ["script.sh"],  # bash syntax in a file: sh would misread it
        ["-O", "extglob", "-c", "x"],
        ["--rcfile", "/x", "-i"],
        ["-l", "-c"],  # -c without its command: bash's own error
        ["-lx", "-c", "x"],
    ],
)
def test_bash_only_arguments_do_not_fall_back(args: list[str]) -> None:
    assert shell_argv("/bin/bash", args, executable=_only("/bin/sh"))[0] == "/bin/bash"


def test_no_shell_at_all_keeps_the_request() -> None:
    assert shell_argv("/bin/bash", ["-l", "-c", "x"], executable=_only()) == [
        "/bin/bash",
        "-l",
        "-c",
        "x",
    ]
    assert shell_argv("/usr/bin/env", ["x"], executable=_only()) == ["/usr/bin/env", "x"]
