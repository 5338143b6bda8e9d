"""Terminals through the official synchronous SDK: a real PTY with job control and resize.

They run as the test account: its login files are the distribution's defaults, so the host's
own root dotfiles (e.g. a pyenv rehash lock) cannot stall the interactive shell.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from e2b import CommandExitException, PtySize

from tests.conftest import EnvdProcess
from tests.integration.envd.process.conftest import assert_healthy, eventually, pid_alive


class Terminal:
    """Reads a PTY handle's output until expected text shows up."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self._events: Iterator = iter(handle)
        self.seen = b""

    def read_until(self, pattern: bytes) -> re.Match[bytes]:
        """Read until ``pattern`` (a regex) matches the output so far; fail at the end."""
        while True:
            match = re.search(pattern, self.seen)
            if match:
                self.seen = self.seen[match.end() :]
                return match
            try:
                _, _, chunk = next(self._events)
            except StopIteration:
                pytest.fail(f"terminal ended before {pattern!r}; got {self.seen!r}")
            if chunk:
                self.seen += chunk


def test_pty_runs_an_interactive_shell(sandbox, test_user) -> None:
    handle = sandbox.pty.create(PtySize(rows=24, cols=80), user=test_user.pw_name)
    term = Terminal(handle)
    sandbox.pty.send_stdin(handle.pid, b"echo $((6*7))\n")
    term.read_until(rb"[\r\n]42\r\n")
    sandbox.pty.send_stdin(handle.pid, b"tty; stty size\n")
    term.read_until(rb"/dev/pts/\d+\r\n24 80\r\n")
    sandbox.pty.send_stdin(handle.pid, b"exit 0\n")
    assert handle.wait().exit_code == 0


def test_pty_resize_is_seen_by_the_terminal(sandbox, test_user) -> None:
    handle = sandbox.pty.create(PtySize(rows=24, cols=80), user=test_user.pw_name)
    term = Terminal(handle)
    sandbox.pty.resize(handle.pid, PtySize(rows=30, cols=100))
    sandbox.pty.send_stdin(handle.pid, b"stty size\n")
    term.read_until(rb"[\r\n]30 100\r\n")
    assert sandbox.pty.kill(handle.pid)


def test_pty_job_control_and_kill_reaches_background_jobs(sandbox, test_user) -> None:
    handle = sandbox.pty.create(PtySize(rows=24, cols=80), user=test_user.pw_name)
    term = Terminal(handle)
    sandbox.pty.send_stdin(handle.pid, b"sleep 100 &\necho JOB=$!\njobs\n")
    job = int(term.read_until(rb"JOB=(\d+)").group(1))
    term.read_until(rb"\[1\]\+\s+Running\s+sleep 100 &")
    assert b"no job control" not in term.seen
    assert pid_alive(job)
    assert sandbox.pty.kill(handle.pid)
    with pytest.raises(CommandExitException) as info:
        handle.wait()
    assert info.value.exit_code == -1
    # The job was in its own process group but in the terminal's session: killed too.
    assert eventually(lambda: not pid_alive(job))
    assert sandbox.pty.kill(handle.pid) is False


def test_pty_stream_input(sandbox, test_user) -> None:
    handle = sandbox.pty.create(PtySize(rows=24, cols=80), user=test_user.pw_name)
    term = Terminal(handle)
    sandbox.pty.stream_input(handle.pid, [b"echo $((", b"6*", b"7))\n"])
    term.read_until(rb"[\r\n]42\r\n")
    assert sandbox.pty.kill(handle.pid)


def test_pty_connect_reattaches(sandbox, test_user) -> None:
    handle = sandbox.pty.create(PtySize(rows=24, cols=80), user=test_user.pw_name, timeout=0)
    handle.disconnect()
    again = sandbox.pty.connect(handle.pid)
    term = Terminal(again)
    sandbox.pty.send_stdin(handle.pid, b"echo $((6*7))\n")
    term.read_until(rb"[\r\n]42\r\n")
    assert sandbox.pty.kill(handle.pid)


def test_pty_as_test_user(sandbox, test_user) -> None:
    handle = sandbox.pty.create(PtySize(rows=24, cols=80), user=test_user.pw_name)
    term = Terminal(handle)
    sandbox.pty.send_stdin(handle.pid, b"echo U=$(id -u)\n")
    assert int(term.read_until(rb"U=(\d+)").group(1)) == test_user.pw_uid
    assert sandbox.pty.kill(handle.pid)


def test_stdin_only_calls_refuse_a_pty(sandbox, test_user, sdk_env: EnvdProcess) -> None:
    handle = sandbox.pty.create(PtySize(rows=24, cols=80), user=test_user.pw_name)
    with pytest.raises(Exception, match="PTY"):
        sandbox.commands.close_stdin(handle.pid)
    with pytest.raises(Exception, match="PTY"):
        sandbox.commands.send_stdin(handle.pid, "x")
    assert sandbox.pty.kill(handle.pid)
    assert_healthy(sdk_env)
