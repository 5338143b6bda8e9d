"""The process service over plain Connect: exact fields, codes and lifecycle guarantees."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import httpx
import pytest

from tests.conftest import EnvdProcess, start_envd, stop_envd
from tests.integration.envd.process.conftest import (
    assert_healthy,
    children_of,
    end_frame,
    envelope,
    events,
    eventually,
    frames,
    open_stream,
    pid_alive,
    run_stream,
    start_message,
    stdout_of,
    unary,
)


def _start_pid(envd: EnvdProcess, message: dict, **headers: str) -> int:
    """Start a process, read only its start event, and disconnect."""
    with (
        httpx.Client(timeout=30) as client,
        open_stream(client, envd, "Start", message, headers=headers) as r,
    ):
        _flags, body = next(frames(r))
    return body["event"]["start"]["pid"]


def test_start_stream_shape(envd: EnvdProcess) -> None:
    got = run_stream(
        envd, "Start", start_message("/bin/sh", "-c", "echo out; echo err >&2; exit 2")
    )
    evs = events(got)
    assert list(evs[0]) == ["start"] and evs[0]["start"]["pid"] > 0
    assert evs[-1] == {
        "end": {"exitCode": 2, "exited": True, "status": "exit status 2", "error": "exit status 2"}
    }
    assert stdout_of(evs) == b"out\n"
    assert stdout_of(evs, "stderr") == b"err\n"
    assert end_frame(got) == {}


def test_success_end_event_has_no_error(envd: EnvdProcess) -> None:
    evs = events(run_stream(envd, "Start", start_message("true")))
    assert evs[-1] == {"end": {"exited": True, "status": "exit status 0"}}


def test_sigterm_end_event(envd: EnvdProcess) -> None:
    message = start_message("/bin/sh", "-c", "kill -TERM $$")
    evs = events(run_stream(envd, "Start", message))
    assert evs[-1] == {
        "end": {"exitCode": -1, "status": "signal: terminated", "error": "signal: terminated"}
    }


def test_keepalives_at_the_requested_interval(envd: EnvdProcess) -> None:
    got = run_stream(
        envd, "Start", start_message("sleep", "1"), headers={"Keepalive-Ping-Interval": "0.2"}
    )
    assert {"keepalive": {}} in events(got)


def test_output_is_complete_and_ordered(envd: EnvdProcess) -> None:
    # Far more than a pipe buffer and the per-stream queue: exercises back-pressure.
    evs = events(run_stream(envd, "Start", start_message("seq", "1", "300000")))
    expected = "".join(f"{i}\n" for i in range(1, 300001)).encode()
    assert stdout_of(evs) == expected


def test_stdin_defaults_to_a_pipe_when_absent(envd: EnvdProcess) -> None:
    with (
        httpx.Client(timeout=30) as client,
        open_stream(client, envd, "Start", start_message("cat")) as r,
    ):
        stream = frames(r)
        pid = next(stream)[1]["event"]["start"]["pid"]
        data = base64.b64encode(b"hello").decode()
        sent = unary(envd, "SendInput", {"process": {"pid": pid}, "input": {"stdin": data}})
        assert sent.status_code == 200 and sent.json() == {}
        assert unary(envd, "CloseStdin", {"process": {"pid": pid}}).json() == {}
        rest = [body["event"] for flags, body in stream if not flags & 2]
    assert stdout_of(rest) == b"hello"
    assert rest[-1]["end"]["status"] == "exit status 0"


def test_stdin_false_refuses_input(envd: EnvdProcess) -> None:
    pid = _start_pid(envd, start_message("sleep", "30", stdin=False))
    r = unary(envd, "SendInput", {"process": {"pid": pid}, "input": {"stdin": "eA=="}})
    assert r.status_code == 409 and r.json()["code"] == "aborted"
    assert "stdin" in r.json()["message"]
    assert (
        unary(envd, "SendSignal", {"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}).status_code
        == 200
    )


def test_stream_input_in_order_with_keepalives(envd: EnvdProcess) -> None:
    pid = _start_pid(envd, start_message("cat", tag="sink"))
    chunks = [b"one ", b"two ", b"three"]
    body = envelope({"start": {"process": {"tag": "sink"}}}) + envelope({"keepalive": {}})
    for chunk in chunks:
        body += envelope({"data": {"input": {"stdin": base64.b64encode(chunk).decode()}}})
    body += envelope({}, flags=0x02)
    with httpx.Client(timeout=30) as client:
        connected = client.stream(
            "POST",
            envd.url + "/process.Process/Connect",
            content=envelope({"process": {"tag": "sink"}}),
            headers={"Content-Type": "application/connect+json", "Connect-Protocol-Version": "1"},
        )
        with connected as c:
            stream = frames(c)
            assert next(stream)[1]["event"]["start"]["pid"] == pid
            with open_stream(client, envd, "StreamInput", body) as s:
                answer = list(frames(s))
            assert answer[0] == (0, {}) and answer[-1] == (2, {})
            unary(envd, "CloseStdin", {"process": {"tag": "sink"}})
            rest = [b["event"] for f, b in stream if not f & 2]
    assert stdout_of(rest) == b"".join(chunks)


def test_list_shows_tag_and_config(envd: EnvdProcess) -> None:
    pid = _start_pid(
        envd,
        start_message("sleep", "30", tag="napper", process={"envs": {"A": "1"}, "cwd": "/tmp"}),
    )
    listed = unary(envd, "List", {}).json()["processes"]
    mine = [p for p in listed if p["pid"] == pid]
    assert mine == [
        {
            "config": {"cmd": "sleep", "args": ["30"], "envs": {"A": "1"}, "cwd": "/tmp"},
            "pid": pid,
            "tag": "napper",
        }
    ]
    assert (
        unary(
            envd, "SendSignal", {"process": {"tag": "napper"}, "signal": "SIGNAL_SIGTERM"}
        ).status_code
        == 200
    )
    assert eventually(lambda: not unary(envd, "List", {}).json().get("processes"))


def test_late_connect_to_an_ended_process_gets_its_end(envd: EnvdProcess) -> None:
    got = run_stream(envd, "Start", start_message("/bin/sh", "-c", "exit 4"))
    pid = events(got)[0]["start"]["pid"]
    again = events(run_stream(envd, "Connect", {"process": {"pid": pid}}))
    assert again[0] == {"start": {"pid": pid}}
    assert again[-1]["end"]["exitCode"] == 4


def test_start_deadline_kills_even_after_disconnect(envd: EnvdProcess) -> None:
    pid = _start_pid(envd, start_message("sleep", "30"), **{"Connect-Timeout-Ms": "700"})
    assert eventually(lambda: not pid_alive(pid))
    assert unary(envd, "List", {}).json() == {}


def test_start_deadline_ends_the_stream_with_deadline_exceeded(envd: EnvdProcess) -> None:
    got = run_stream(
        envd, "Start", start_message("sleep", "30"), headers={"Connect-Timeout-Ms": "500"}
    )
    pid = events(got)[0]["start"]["pid"]
    assert end_frame(got)["error"]["code"] == "deadline_exceeded"
    assert not pid_alive(pid)
    assert_healthy(envd)


def test_connect_deadline_does_not_kill(envd: EnvdProcess) -> None:
    pid = _start_pid(envd, start_message("sleep", "30"))
    got = run_stream(
        envd, "Connect", {"process": {"pid": pid}}, headers={"Connect-Timeout-Ms": "300"}
    )
    assert end_frame(got)["error"]["code"] == "deadline_exceeded"
    assert pid_alive(pid)
    unary(envd, "SendSignal", {"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"})


@pytest.mark.parametrize(
    ("method", "body", "code", "needle"),
    [
        (
            "SendSignal",
            {"process": {"pid": 999999}, "signal": "SIGNAL_SIGKILL"},
            "not_found",
            "999999",
        ),
        (
            "SendSignal",
            {"process": {"tag": "nope"}, "signal": "SIGNAL_SIGKILL"},
            "not_found",
            "nope",
        ),
        ("SendSignal", {"process": {"pid": 1}, "signal": 3}, "invalid_argument", "signal"),
        ("SendSignal", {"signal": "SIGNAL_SIGKILL"}, "invalid_argument", "selector"),
        (
            "SendInput",
            {"process": {"pid": 999999}, "input": {"stdin": "eA=="}},
            "not_found",
            "999999",
        ),
        ("CloseStdin", {"process": {"pid": 999999}}, "not_found", "999999"),
        (
            "Update",
            {"process": {"pid": 999999}, "pty": {"size": {"cols": 1, "rows": 1}}},
            "not_found",
            "999999",
        ),
    ],
)
def test_bad_unary_input(
    envd: EnvdProcess, method: str, body: dict, code: str, needle: str
) -> None:
    r = unary(envd, method, body)
    assert r.json()["code"] == code, r.text
    assert needle in r.json()["message"]
    assert_healthy(envd)


def test_malformed_json_is_invalid_argument(envd: EnvdProcess) -> None:
    r = unary(envd, "SendSignal", b"{nope")
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument"
    assert_healthy(envd)


@pytest.mark.parametrize(
    ("message", "user", "code", "needle"),
    [
        (start_message(""), "root", "invalid_argument", "cmd"),
        ({}, "root", "invalid_argument", "cmd"),
        (start_message("true"), "no-such-user-xyz", "unauthenticated", "no-such-user-xyz"),
        (
            start_message("true", process={"cwd": "/no/such/dir"}),
            "root",
            "invalid_argument",
            "/no/such/dir",
        ),
        (start_message("/no/such/binary"), "root", "invalid_argument", "/no/such/binary"),
        (start_message("true", process={"envs": {"A=B": "x"}}), "root", "invalid_argument", "A=B"),
    ],
)
def test_bad_start_input(
    envd: EnvdProcess, message: dict, user: str, code: str, needle: str
) -> None:
    got = run_stream(envd, "Start", message, user=user)
    error = end_frame(got)["error"]
    assert error["code"] == code
    assert needle in error["message"]
    assert events(got) == []  # no start event for a process that never started
    assert_healthy(envd)


def test_connect_unknown_is_not_found(envd: EnvdProcess) -> None:
    got = run_stream(envd, "Connect", {"process": {"pid": 999999}})
    assert end_frame(got)["error"]["code"] == "not_found"
    assert_healthy(envd)


def test_non_pty_refuses_pty_calls(envd: EnvdProcess) -> None:
    pid = _start_pid(envd, start_message("sleep", "30"))
    resize = unary(
        envd, "Update", {"process": {"pid": pid}, "pty": {"size": {"cols": 9, "rows": 9}}}
    )
    assert resize.json()["code"] == "invalid_argument" and "PTY" in resize.json()["message"]
    typed = unary(envd, "SendInput", {"process": {"pid": pid}, "input": {"pty": "eA=="}})
    assert typed.json()["code"] == "invalid_argument"
    unary(envd, "SendSignal", {"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"})
    assert_healthy(envd)


def test_stream_input_must_start_with_start(envd: EnvdProcess) -> None:
    body = envelope({"data": {"input": {"stdin": "eA=="}}}) + envelope({}, flags=0x02)
    with httpx.Client(timeout=30) as client, open_stream(client, envd, "StreamInput", body) as s:
        answer = list(frames(s))
    assert answer[-1][1]["error"]["code"] == "invalid_argument"
    assert_healthy(envd)


def test_no_zombies_and_no_fd_leaks(envd: EnvdProcess) -> None:
    fd_dir = f"/proc/{envd.process.pid}/fd"
    run_stream(envd, "Start", start_message("true"))  # warm up lazily created fds
    before = len(os.listdir(fd_dir))
    for _ in range(5):
        run_stream(envd, "Start", start_message("/bin/sh", "-c", "echo x; sleep 0.01 & exit 3"))
        _start_pid(envd, start_message("true"))  # disconnects at once
    assert eventually(lambda: not children_of(envd.process.pid))
    assert eventually(lambda: len(os.listdir(fd_dir)) <= before)


def test_shutdown_kills_children(tmp_path: Path) -> None:
    server = start_envd(tmp_path)
    try:
        pid = _start_pid(server, start_message("sleep", "100"))
        pty_pid = _start_pid(
            server, start_message("sleep", "100", pty={"size": {"cols": 80, "rows": 24}})
        )
        assert pid_alive(pid) and pid_alive(pty_pid)
    finally:
        stop_envd(server)
    assert "Application shutdown complete" in server.log()  # not killed by the fixture
    assert not pid_alive(pid) and not pid_alive(pty_pid)
