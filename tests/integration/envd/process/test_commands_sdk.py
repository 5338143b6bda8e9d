"""Commands through the official synchronous SDK against a real envd."""

from __future__ import annotations

import os
import pwd
import threading
import uuid
from pathlib import Path

import httpx
import pytest
from e2b import CommandExitException, TimeoutException

from tests.conftest import EnvdProcess
from tests.integration.envd.process.conftest import assert_healthy, eventually, pid_alive


def background_started(sandbox, tmp_path, cmd: str, **kwargs):
    """Run ``cmd`` in the background and wait until the login shell has reached it.

    Killing ``bash -l`` while it still runs the host's profile can leave that profile's
    lock files behind (pyenv's rehash lock), which then stalls every later login shell.
    """
    marker = tmp_path / f"started-{len(list(tmp_path.iterdir()))}"
    handle = sandbox.commands.run(f"touch {marker}; {cmd}", background=True, **kwargs)
    assert eventually(marker.exists)
    return handle


def test_run_returns_stdout_stderr_and_exit_code(sandbox) -> None:
    result = sandbox.commands.run("echo hi; echo oops >&2")
    assert result.stdout == "hi\n"
    assert result.stderr == "oops\n"
    assert result.exit_code == 0
    assert result.error is None


def test_run_nonzero_exit_raises_with_code(sandbox) -> None:
    with pytest.raises(CommandExitException) as info:
        sandbox.commands.run("echo partial; exit 7")
    assert info.value.exit_code == 7
    assert info.value.stdout == "partial\n"
    assert info.value.error == "exit status 7"


def test_run_callbacks_stream_incrementally(sandbox) -> None:
    # The command waits for a file the stdout callback creates: it only finishes if the
    # first line reached the client while the command was still running.
    flag = f"/tmp/hutch-flag-{os.getpid()}-{threading.get_ident()}"
    out: list[str] = []
    err: list[str] = []

    def on_stdout(chunk: str) -> None:
        out.append(chunk)
        open(flag, "w").close()

    cmd = f"echo first; while [ ! -e {flag} ]; do sleep 0.01; done; echo second; echo e >&2"
    try:
        result = sandbox.commands.run(cmd, on_stdout=on_stdout, on_stderr=err.append, timeout=30)
    finally:
        if os.path.exists(flag):
            os.unlink(flag)
    assert "".join(out) == "first\nsecond\n"
    assert "".join(err) == "e\n"
    assert result.stdout == "first\nsecond\n"


def test_background_command_and_wait(sandbox) -> None:
    handle = sandbox.commands.run("echo bg; exit 0", background=True)
    assert handle.pid > 0
    result = handle.wait()
    assert result.stdout == "bg\n"


def test_connect_after_disconnect_sees_later_output_and_end(sandbox, tmp_path) -> None:
    gate, said = tmp_path / "gate", tmp_path / "said"
    handle = sandbox.commands.run(
        f"echo early; touch {said}; while [ ! -e {gate} ]; do sleep 0.01; done; echo late; exit 3",
        background=True,
        timeout=0,
    )
    pid = handle.pid
    handle.disconnect()
    assert eventually(said.exists)  # "early" was printed with nobody attached
    # The process survived the disconnect.
    assert pid in [p.pid for p in sandbox.commands.list()]
    again = sandbox.commands.connect(pid)
    gate.touch()
    with pytest.raises(CommandExitException) as info:
        again.wait()
    assert info.value.exit_code == 3
    assert info.value.stdout == "late\n"  # nothing replayed from before the re-attach


def test_list_shows_running_commands(sandbox, tmp_path) -> None:
    handle = background_started(sandbox, tmp_path, "sleep 30", envs={"K": "v"}, cwd="/tmp")
    try:
        listed = {p.pid: p for p in sandbox.commands.list()}
        assert handle.pid in listed
        info = listed[handle.pid]
        assert info.cmd == "/bin/bash"
        assert info.args[:2] == ["-l", "-c"] and info.args[2].endswith("; sleep 30")
        assert info.envs == {"K": "v"}
        assert info.cwd == "/tmp"
    finally:
        assert sandbox.commands.kill(handle.pid)
    assert eventually(lambda: handle.pid not in [p.pid for p in sandbox.commands.list()])


def test_send_stdin_then_close_stdin(sandbox) -> None:
    handle = sandbox.commands.run("cat; echo done", background=True, stdin=True)
    sandbox.commands.send_stdin(handle.pid, "line 1\n")
    sandbox.commands.send_stdin(handle.pid, b"line 2\n")
    sandbox.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "line 1\nline 2\ndone\n"


def test_stdin_false_reads_dev_null(sandbox) -> None:
    assert sandbox.commands.run("cat; readlink /proc/self/fd/0").stdout == "/dev/null\n"


def test_kill_true_then_false_once_gone(sandbox, tmp_path) -> None:
    handle = background_started(sandbox, tmp_path, "sleep 100")
    assert sandbox.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException) as info:
        handle.wait()
    assert info.value.exit_code == -1
    assert info.value.error == "signal: killed"
    assert sandbox.commands.kill(handle.pid) is False
    assert not pid_alive(handle.pid)


def test_envs_from_init_and_request_request_wins(sandbox, sdk_env: EnvdProcess) -> None:
    httpx.post(sdk_env.url + "/init", json={"envVars": {"FROM_INIT": "i", "BOTH": "init"}})
    result = sandbox.commands.run(
        'echo "$FROM_INIT $BOTH $FROM_REQ"', envs={"BOTH": "request", "FROM_REQ": "r"}
    )
    assert result.stdout == "i request r\n"


def test_login_environment(sandbox) -> None:
    out = sandbox.commands.run('echo "$HOME|$USER|$LOGNAME|$SHELL"', user="root").stdout
    assert out == "/root|root|root|" + pwd.getpwnam("root").pw_shell + "\n"
    # A login shell's profile may rewrite PATH: read what envd handed to the shell.
    initial = "tr '\\0' '\\n' < /proc/$$/environ | grep ^PATH="
    assert sandbox.commands.run(initial).stdout == (
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    )
    assert (
        sandbox.commands.run(initial, envs={"PATH": "/opt/x:/bin"}).stdout == "PATH=/opt/x:/bin\n"
    )


def test_cwd_absolute_relative_and_default(sandbox, tmp_path) -> None:
    assert sandbox.commands.run("pwd", cwd=str(tmp_path)).stdout == f"{tmp_path}\n"
    assert sandbox.commands.run("pwd", user="root").stdout == "/root\n"
    assert sandbox.commands.run("pwd", cwd="~", user="root").stdout == "/root\n"


def test_missing_cwd_is_an_error_naming_it(sandbox, sdk_env: EnvdProcess) -> None:
    from e2b import InvalidArgumentException

    with pytest.raises(InvalidArgumentException, match="/no/such/dir"):
        sandbox.commands.run("pwd", cwd="/no/such/dir")
    assert_healthy(sdk_env)


def test_runs_as_test_user(sandbox, test_user, tmp_path) -> None:
    name = test_user.pw_name
    result = sandbox.commands.run("id -u; id -g; echo $HOME; pwd; touch made-here", user=name)
    uid, gid, home, cwd = result.stdout.split()
    assert (int(uid), int(gid)) == (test_user.pw_uid, test_user.pw_gid)
    assert home == cwd == test_user.pw_dir
    made = os.path.join(test_user.pw_dir, "made-here")
    try:
        assert os.stat(made).st_uid == test_user.pw_uid
    finally:
        os.unlink(made)
    # Supplementary groups are the account's, not envd's (root's).
    groups = sandbox.commands.run("id -G", user=name).stdout.split()
    assert sorted(map(int, groups)) == sorted(os.getgrouplist(name, test_user.pw_gid))


def test_root_user(sandbox) -> None:
    assert sandbox.commands.run("id -u", user="root").stdout == "0\n"


def test_deadline_kills_the_command(sandbox, test_user) -> None:
    # As the test account: a deadline may land while a login shell runs its profile,
    # and root's profile on a dev host may hold locks (pyenv) that a kill leaves behind.
    # 5 s, not 1: a loaded machine's login shell can take a second before the echo, and
    # a deadline that lands first leaves no marker to read.
    marker = Path(test_user.pw_dir) / f"deadline-pid-{uuid.uuid4().hex}"
    with pytest.raises(TimeoutException):
        sandbox.commands.run(
            f"echo $$ > {marker}; exec sleep 30", timeout=5, user=test_user.pw_name
        )
    pid = int(marker.read_text())
    marker.unlink()
    assert eventually(lambda: not pid_alive(pid))
    assert eventually(lambda: pid not in [p.pid for p in sandbox.commands.list()])


def test_client_disconnect_leaves_process_running(sandbox, tmp_path) -> None:
    handle = background_started(sandbox, tmp_path, "sleep 30", timeout=0)
    handle.disconnect()
    # A later request on the same envd proves the disconnect was processed.
    assert sandbox.commands.run("true").exit_code == 0
    assert pid_alive(handle.pid)
    assert handle.pid in [p.pid for p in sandbox.commands.list()]
    assert sandbox.commands.kill(handle.pid)
