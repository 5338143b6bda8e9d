"""The rest of the user's path with the sync SDK: PTY, stdin, background commands,
watches, connect, paginated and filtered listing, file metadata, timeouts, info."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from e2b import (
    CommandExitException,
    FilesystemEventType,
    PtySize,
    Sandbox,
    SandboxQuery,
    SandboxState,
)

from .serveproc import Serve

pytestmark = pytest.mark.root


@pytest.fixture
def sbx(serve: Serve):  # type: ignore[no-untyped-def]
    sandbox = Sandbox.create("busybox", timeout=120)
    try:
        yield sandbox
    finally:
        sandbox.kill()


@pytest.mark.compat("pty")
def test_pty_input_resize_and_kill(sbx: Sandbox) -> None:
    term = sbx.pty.create(PtySize(rows=24, cols=80))
    sbx.pty.resize(term.pid, PtySize(rows=50, cols=120))
    sbx.pty.send_stdin(term.pid, b"stty size; echo $((6*7))x; exit 3\n")
    out = bytearray()
    with pytest.raises(CommandExitException) as exc:
        term.wait(on_pty=out.extend)
    assert exc.value.exit_code == 3
    text = out.decode(errors="replace")
    assert "50 120" in text and "42x" in text, text

    other = sbx.pty.create(PtySize(rows=24, cols=80))
    assert sbx.pty.kill(other.pid) is True
    with pytest.raises(CommandExitException):
        other.wait()
    assert other.pid not in [p.pid for p in sbx.commands.list()]


@pytest.mark.compat("commands")
def test_stdin_background_wait_and_kill(sbx: Sandbox) -> None:
    cat = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(cat.pid, "hello ")
    cat.send_stdin("stdin\n")
    cat.close_stdin()
    assert cat.wait().stdout == "hello stdin\n"

    sleeper = sbx.commands.run("sleep 600", background=True)
    assert sleeper.pid in [p.pid for p in sbx.commands.list()]
    assert sleeper.kill() is True
    with pytest.raises(CommandExitException):
        sleeper.wait()
    assert sbx.commands.kill(sleeper.pid) is False  # already gone

    out: list[str] = []
    job = sbx.commands.run("for i in 1 2 3; do echo $i; done", background=True)
    assert job.wait(on_stdout=out.append).exit_code == 0
    assert "".join(out) == "1\n2\n3\n"

    with pytest.raises(CommandExitException) as exc:
        sbx.commands.run("echo bad >&2; exit 7")
    assert exc.value.exit_code == 7 and exc.value.stderr == "bad\n"


@pytest.mark.compat("watch")
def test_watch_dir_sees_writes(sbx: Sandbox) -> None:
    sbx.files.make_dir("/tmp/watched")
    handle = sbx.files.watch_dir("/tmp/watched")
    try:
        sbx.files.write("/tmp/watched/a.txt", "one")
        sbx.commands.run("rm /tmp/watched/a.txt")
        events = []
        for _ in range(600):  # a count of polls, not a deadline
            events += handle.get_new_events()
            if any(e.type == FilesystemEventType.REMOVE for e in events):
                break
            time.sleep(0.05)
        kinds = {(e.name, e.type) for e in events}
        assert ("a.txt", FilesystemEventType.CREATE) in kinds, events
        assert ("a.txt", FilesystemEventType.REMOVE) in kinds, events
    finally:
        handle.stop()


@pytest.mark.compat("connect", "files", "metadata", "info")
def test_connect_info_timeout_and_file_metadata(sbx: Sandbox) -> None:
    again = Sandbox.connect(sbx.sandbox_id)
    assert again.sandbox_id == sbx.sandbox_id
    again.files.write("notes/a.txt", "hi", metadata={"owner": "me", "kind": "note"})
    assert sbx.files.get_info("notes/a.txt").metadata == {"owner": "me", "kind": "note"}
    assert sbx.files.read("notes/a.txt") == "hi"
    assert [e.name for e in sbx.files.list("notes")] == ["a.txt"]

    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id and info.state == SandboxState.RUNNING
    sbx.set_timeout(30)
    shorter = sbx.get_info()
    assert shorter.end_at - shorter.started_at < timedelta(seconds=120)
    again.set_timeout(900)
    assert sbx.get_info().end_at > shorter.end_at
    assert sbx.is_running()


@pytest.mark.compat("list", "pause")
def test_list_filters_and_pages(serve: Serve) -> None:
    tag = uuid.uuid4().hex[:8]
    made = [Sandbox.create("busybox", metadata={"tag": tag, "n": str(i)}, timeout=120)
            for i in range(5)]  # fmt: skip
    try:
        query = SandboxQuery(metadata={"tag": tag}, state=[SandboxState.RUNNING])
        paginator = Sandbox.list(query=query, limit=2)
        pages = []
        while paginator.has_next:
            pages.append([s.sandbox_id for s in paginator.next_items()])
        assert [len(p) for p in pages] == [2, 2, 1]
        assert [sid for page in pages for sid in page] == [s.sandbox_id for s in reversed(made)]
        one = Sandbox.list(query=SandboxQuery(metadata={"tag": tag, "n": "3"})).next_items()
        assert [s.sandbox_id for s in one] == [made[3].sandbox_id]
        assert one[0].metadata == {"tag": tag, "n": "3"}
        paused = SandboxQuery(metadata={"tag": tag}, state=[SandboxState.PAUSED])
        assert Sandbox.list(query=paused).next_items() == []
        assert made[1].pause() is True
        listed = Sandbox.list(query=paused).next_items()
        assert [(s.sandbox_id, s.state) for s in listed] == [
            (made[1].sandbox_id, SandboxState.PAUSED)
        ]
        running = Sandbox.list(query=query, limit=3)
        ids = [s.sandbox_id for s in running.next_items()]
        ids += [s.sandbox_id for s in running.next_items()] if running.has_next else []
        assert ids == [s.sandbox_id for s in reversed(made) if s is not made[1]]
        both = SandboxQuery(
            metadata={"tag": tag}, state=[SandboxState.RUNNING, SandboxState.PAUSED]
        )
        assert len(Sandbox.list(query=both).next_items()) == 5
    finally:
        for s in made:
            s.kill()
    assert Sandbox.list(query=SandboxQuery(metadata={"tag": tag})).next_items() == []
