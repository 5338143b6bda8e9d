"""The operator CLI against the session's real ``hutch serve`` (issue 18 gap 10):
``hutch sandbox list | kill | logs | exec`` and ``hutch status``, each with ``--json`` and
with bad input (an unknown id, a bad filter, nothing listening, a wrong key) ending in
``hutch: <status>: <message>`` and a non-zero exit code. Sandboxes are made and checked
with the official SDK."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from e2b import Sandbox, SandboxQuery, SandboxState

from .serveproc import Serve, free_port

pytestmark = pytest.mark.root


def hutch(
    serve: Serve, *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``hutch`` against the serve (``--home`` first: ``exec`` ends in the command)."""
    return subprocess.run(
        _argv(serve, args),
        env={**serve.env, **(env or {})}, capture_output=True, text=True, input=input,
        timeout=120,
    )  # fmt: skip


def _argv(serve: Serve, args: tuple[str, ...]) -> list[str]:
    words = 1 if args[0] == "status" else 2  # "status" | "sandbox <command>"
    return [sys.executable, "-m", "hutch", *args[:words], "--home", str(serve.home), *args[words:]]


def popen(serve: Serve, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        _argv(serve, args),
        env=serve.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


class Lines:
    """A child's stdout read as it comes (``os.read``: no buffer hides a line from select)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._buf = b""
        self.text = ""

    def until(self, needle: str, timeout_s: float = 60) -> str:
        """Read until ``needle`` has been seen; everything read so far."""
        deadline = time.monotonic() + timeout_s
        while needle not in self.text:
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} not seen in time; got {self.text!r}"
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                chunk = os.read(self._fd, 65536)
                assert chunk, f"output ended before {needle!r}; got {self.text!r}"
                self.text += chunk.decode()
        return self.text


def assert_error(result: subprocess.CompletedProcess[str], status: int | str, text: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith(f"hutch: {status}: "), result.stderr
    assert text in result.stderr, result.stderr


@pytest.fixture
def sandboxes(serve: Serve) -> Iterator[list[Sandbox]]:
    tag = f"cli{os.getpid()}{time.monotonic_ns()}"
    made = [
        Sandbox.create("busybox", timeout=300, metadata={"suite": tag, "who": who})
        for who in ("a", "b")
    ]
    try:
        yield made
    finally:
        for sbx in made:
            sbx.kill()


def test_list_filters_by_state_and_metadata(serve: Serve, sandboxes: list[Sandbox]) -> None:
    a, b = sandboxes
    tag = a.get_info().metadata["suite"]
    b.pause()

    def listed(*args: str) -> list[dict[str, object]]:
        result = hutch(serve, "sandbox", "list", "--json", *args)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    mine = listed("--metadata", f"suite={tag}")
    assert sorted(r["sandboxID"] for r in mine) == sorted([a.sandbox_id, b.sandbox_id])
    assert {r["sandboxID"]: r["state"] for r in mine} == {
        a.sandbox_id: "running",
        b.sandbox_id: "paused",
    }
    only_a = listed("--metadata", f"suite={tag}", "--metadata", "who=a")
    assert [r["sandboxID"] for r in only_a] == [a.sandbox_id]
    assert only_a[0]["metadata"] == {"suite": tag, "who": "a"}
    paused = listed("--metadata", f"suite={tag}", "--state", "paused")
    assert [r["sandboxID"] for r in paused] == [b.sandbox_id]
    assert listed("--metadata", f"suite={tag}", "--state", "running", "--state", "paused") == mine
    assert listed("--metadata", "suite=none-such") == []
    # What the SDK lists agrees.
    sdk = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}, state=[SandboxState.PAUSED]))
    assert [s.sandbox_id for s in sdk.next_items()] == [b.sandbox_id]

    table = hutch(serve, "sandbox", "list", "--metadata", f"suite={tag}")
    assert table.returncode == 0, table.stderr
    assert a.sandbox_id in table.stdout and b.sandbox_id in table.stdout
    assert "paused" in table.stdout and "who=a" in table.stdout

    bad_state = hutch(serve, "sandbox", "list", "--state", "sleeping")
    assert bad_state.returncode == 2 and "'sleeping' is not one of" in bad_state.stderr
    bad_meta = hutch(serve, "sandbox", "list", "--metadata", "novalue")
    assert bad_meta.returncode == 2 and "want KEY=VALUE" in bad_meta.stderr


def test_kill_kills_every_known_id_and_fails_on_unknown(
    serve: Serve, sandboxes: list[Sandbox]
) -> None:
    a, b = sandboxes
    result = hutch(serve, "sandbox", "kill", a.sandbox_id, "nosuchsandbox0", b.sandbox_id)
    assert_error(result, 404, "nosuchsandbox0")
    assert result.stdout.splitlines() == [f"killed {a.sandbox_id}", f"killed {b.sandbox_id}"]
    assert not a.is_running() and not b.is_running()

    again = hutch(serve, "sandbox", "kill", "--json", a.sandbox_id)
    assert_error(again, 404, a.sandbox_id)
    assert json.loads(again.stdout) == {"sandboxID": a.sandbox_id, "killed": False}
    assert hutch(serve, "sandbox", "kill").returncode == 2  # an id is required


def test_kill_json(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", timeout=120)
    result = hutch(serve, "sandbox", "kill", "--json", sbx.sandbox_id)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"sandboxID": sbx.sandbox_id, "killed": True}
    assert not sbx.is_running()


def test_logs_print_and_follow_until_the_sandbox_ends(
    serve: Serve, sandboxes: list[Sandbox]
) -> None:
    sbx = sandboxes[0]
    first = sbx.commands.run("true", background=True)
    first.wait()
    marker = f"started pid {first.pid} "
    deadline = time.monotonic() + 30
    while True:
        plain = hutch(serve, "sandbox", "logs", sbx.sandbox_id)
        assert plain.returncode == 0, plain.stderr
        if marker in plain.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    line = next(x for x in plain.stdout.splitlines() if marker in x)
    assert " INFO  " in line and " logger=" in line  # the entry's fields as k=v

    as_json = hutch(serve, "sandbox", "logs", "--json", sbx.sandbox_id)
    entries = [json.loads(x) for x in as_json.stdout.splitlines()]
    assert any(marker in e["message"] for e in entries)
    assert {"timestamp", "level", "message", "fields"} <= set(entries[0])
    assert [e["timestamp"] for e in entries] == sorted(e["timestamp"] for e in entries)
    errors_only = hutch(serve, "sandbox", "logs", "--json", "--level", "error", sbx.sandbox_id)
    assert marker not in errors_only.stdout

    follower = popen(serve, "sandbox", "logs", "--follow", sbx.sandbox_id)
    try:
        lines = Lines(follower)
        lines.until(marker)  # the old lines first
        second = sbx.commands.run("true", background=True)
        second.wait()
        ended = f"pid {second.pid} ended: exit status 0"
        lines.until(ended)  # then the new ones, as they come
        sbx.kill()
        out, err = follower.communicate(timeout=60)  # it stops by itself once it is gone
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err
    assert (lines.text + out.decode()).count(ended) == 1  # no line twice across polls

    unknown = hutch(serve, "sandbox", "logs", "nosuchsandbox0")
    assert_error(unknown, 404, "nosuchsandbox0")


def test_exec_streams_and_exits_with_the_command_code(
    serve: Serve, sandboxes: list[Sandbox]
) -> None:
    sbx = sandboxes[0]
    sid = sbx.sandbox_id
    result = hutch(serve, "sandbox", "exec", sid, "--", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")

    words = hutch(serve, "sandbox", "exec", sid, "--", "printf", "%s|", "a b", "$HOME")
    assert (words.returncode, words.stdout) == (0, "a b|$HOME|")
    env = hutch(
        serve,
        "sandbox",
        "exec",
        sid,
        "-e",
        "GREETING=hi",
        "-c",
        "/tmp",
        "--",
        "echo $GREETING $PWD",
    )
    assert env.stdout == "hi /tmp\n"
    root = hutch(serve, "sandbox", "exec", sid, "--user", "root", "--", "id -u")
    assert root.stdout == "0\n"
    piped = hutch(serve, "sandbox", "exec", sid, "--", "cat; echo done", input="from stdin\n")
    assert (piped.returncode, piped.stdout) == (0, "from stdin\ndone\n")

    as_json = hutch(serve, "sandbox", "exec", sid, "--json", "--", "echo x; echo y >&2; exit 7")
    assert as_json.returncode == 7
    assert json.loads(as_json.stdout) == {
        "exitCode": 7, "stdout": "x\n", "stderr": "y\n", "error": "exit status 7"
    }  # fmt: skip

    # Output streams before the command ends; Ctrl-C ends it in the sandbox too.
    tag = f"sleep {300 + time.monotonic_ns() % 100000}"  # a unique command line
    long = popen(serve, "sandbox", "exec", sid, "--", f"echo first; exec {tag}")
    try:
        assert Lines(long).until("first\n") == "first\n"
        assert tag in sbx.commands.run("ps -o args").stdout
        long.send_signal(signal.SIGINT)
        assert long.wait(timeout=60) == 130
    finally:
        if long.poll() is None:
            long.kill()
            long.wait()
    deadline = time.monotonic() + 30
    while tag in sbx.commands.run("ps -o args").stdout:
        assert time.monotonic() < deadline, "the command outlived the exec"
        time.sleep(0.2)

    assert_error(hutch(serve, "sandbox", "exec", "nosuchsandbox0", "--", "true"), 404, "nosuch")
    sandboxes[1].pause()
    assert_error(
        hutch(serve, "sandbox", "exec", sandboxes[1].sandbox_id, "--", "true"), 409, "paused"
    )
    no_command = hutch(serve, "sandbox", "exec", sid)
    assert no_command.returncode == 2 and "COMMAND" in no_command.stderr


def test_exec_says_so_when_the_sandbox_is_killed_under_it(
    serve: Serve, sandboxes: list[Sandbox]
) -> None:
    sbx = sandboxes[0]
    running = popen(serve, "sandbox", "exec", sbx.sandbox_id, "--", "echo up; exec sleep 300")
    try:
        Lines(running).until("up\n")
        sbx.kill()
        _, err = running.communicate(timeout=60)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert running.returncode == 1, err
    assert (
        err.decode()
        == f"hutch: 502: sandbox {sbx.sandbox_id} was killed or reached its end of life\n"
    )


def test_status_reports_health_capacity_sandboxes_pool_and_templates(
    serve: Serve, sandboxes: list[Sandbox]
) -> None:
    sandboxes[1].pause()
    result = hutch(serve, "status", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["health"] == "ok" and report["nodeID"] == "local"
    assert report["runtime"] == "runc"
    assert report["capacity"]["maxSandboxes"] == 100
    assert report["capacity"]["cpuCount"] == os.cpu_count()
    assert report["capacity"]["allocatedCPU"] >= 2
    assert report["sandboxes"]["running"] >= 1 and report["sandboxes"]["paused"] >= 1
    running = len(Sandbox.list(query=SandboxQuery(state=[SandboxState.RUNNING])).next_items())
    assert report["sandboxes"]["running"] >= running
    assert report["pool"] == []  # the e2e serve runs without a warm pool
    assert "busybox" in {t["templateID"] for t in report["templates"]}

    text = hutch(serve, "status")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("health     ok (")
    assert "capacity   " in text.stdout and "/100 sandboxes" in text.stdout
    assert "pool       off" in text.stdout and "busybox" in text.stdout

    nobody = hutch(serve, "status", "--api-port", str(free_port()))
    assert nobody.returncode == 2 and "hutch: cannot reach the API at" in nobody.stderr
    wrong_key = hutch(serve, "status", "--api-key", "e2b_" + "0" * 40)
    assert_error(wrong_key, 401, "")


def _node_cli(serve: Serve, *args: str) -> subprocess.CompletedProcess[str]:
    """``hutch node ...`` with the home's CLI key (an admin key; the env's is a member's)."""
    env = {k: v for k, v in serve.env.items() if k != "E2B_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "hutch", "node", *args[:1], "--home", str(serve.home), *args[1:]],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_node_list_drain_and_undrain(serve: Serve) -> None:
    """``hutch node list|drain|undrain`` on serve's own registered node (ADR 0025): a
    drained node takes no create (503 naming it), an undrained one does again."""
    listed = _node_cli(serve, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (node,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert node["id"] == "local" and node["status"] == "ready"
    assert node["address"].startswith("unix:") and node["metrics"]["cpuCount"] >= 1
    assert _node_cli(serve, "drain", "local").returncode == 0
    try:
        assert "local  draining" in _node_cli(serve, "list").stdout
        key = (serve.home / "cli.key").read_text().strip()
        r = httpx.post(f"{serve.api_url}/v2/sandboxes", json={"templateID": "base"},
                       headers={"X-API-Key": key}, timeout=60)  # fmt: skip
        assert r.status_code == 503, r.text
        assert r.json()["error_code"] == "sandbox_capacity_unavailable"
        assert "node local: draining" in r.json()["message"]
    finally:
        assert _node_cli(serve, "undrain", "local").returncode == 0
    assert "local  ready" in _node_cli(serve, "list").stdout
    missing = _node_cli(serve, "drain", "nope")
    assert missing.returncode == 1 and "hutch: 404: Node nope not found" in missing.stderr
