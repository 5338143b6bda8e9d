"""envd behaviours real client code relies on (issue 18), driven with the official SDK
against a real ``hutch serve``: removing what is not there, signed URL errors, answer
shapes, images without bash, writes under ``/`` as the default user, and what watchers
see while files are written."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from e2b import (
    AsyncSandbox,
    CommandExitException,
    FilesystemEventType,
    InvalidArgumentException,
    PtySize,
    Sandbox,
)
from e2b.exceptions import AuthenticationException

from .serveproc import Serve

pytestmark = pytest.mark.root


@pytest.fixture
def busybox(serve: Serve) -> Iterator[Sandbox]:
    sandbox = Sandbox.create("busybox", timeout=120)
    try:
        yield sandbox
    finally:
        sandbox.kill()


def test_remove_of_a_missing_path_succeeds(busybox: Sandbox) -> None:
    workdir = f"/home/user/work-{uuid.uuid4().hex[:8]}"
    busybox.files.remove(workdir)  # nothing there yet: the clean-up step before a start
    assert busybox.files.make_dir(workdir) is True
    busybox.files.write(f"{workdir}/a.txt", "a")
    busybox.files.remove(workdir)
    assert busybox.files.exists(workdir) is False
    busybox.files.remove(workdir)  # and again: still fine
    busybox.files.remove(f"{workdir}/deeper/still")


def test_signed_url_and_token_errors_are_e2bs(busybox: Sandbox, serve: Serve) -> None:
    busybox.files.write("/tmp/signed.txt", "signed")
    assert httpx.get(busybox.download_url("/tmp/signed.txt", use_signature_expiration=60)).text == (
        "signed"
    )
    expired = busybox.download_url("/tmp/signed.txt", use_signature_expiration=-60)
    r = httpx.get(expired)
    assert (r.status_code, r.json()) == (
        401,
        {"code": 401, "message": "signature is already expired"},
    )
    r = httpx.post(
        busybox.upload_url("/tmp/up.txt", use_signature_expiration=-60), files={"file": b"x"}
    )
    assert (r.status_code, r.json()["message"]) == (401, "signature is already expired")
    assert not busybox.files.exists("/tmp/up.txt")

    # Routed by the sandbox headers, without the token or with a wrong one.
    route = {"E2b-Sandbox-Id": busybox.sandbox_id, "E2b-Sandbox-Port": "49983"}
    files_url = f"{serve.sandbox_url}/files"
    r = httpx.get(files_url, params={"path": "/tmp/signed.txt"}, headers=route)
    assert (r.status_code, r.json()["message"]) == (401, "missing signature query parameter")
    r = httpx.get(
        files_url,
        params={"path": "/tmp/signed.txt"},
        headers={**route, "X-Access-Token": "not-the-token"},
    )
    assert (r.status_code, r.json()["message"]) == (
        401,
        "access token present in header but does not match",
    )
    r = httpx.get(expired.replace("signature_expiration=", "signature_expiration=x"), headers=route)
    assert r.status_code == 400
    assert r.json()["message"].startswith("Invalid format for parameter signature_expiration: ")
    r = httpx.post(
        f"{serve.sandbox_url}/filesystem.Filesystem/Stat", json={"path": "/"}, headers=route
    )
    assert (r.status_code, r.json()["message"]) == (
        401,
        "unauthorized access, please provide a valid access token or method signing if supported",
    )


def test_answers_carry_fields_exactly_where_e2bs_envd_does(busybox: Sandbox, serve: Serve) -> None:
    plain = busybox.files.write("/tmp/shape.txt", "x")
    assert plain.metadata is None
    assert busybox.files.write("/tmp/shape.txt", "y", metadata={"k": "v"}).metadata == {"k": "v"}

    headers = {
        "E2b-Sandbox-Id": busybox.sandbox_id,
        "E2b-Sandbox-Port": "49983",
        "X-Access-Token": busybox._envd_access_token,
    }
    r = httpx.post(
        f"{serve.sandbox_url}/files",
        params={"path": "/tmp/raw.txt"},
        content=b"raw",
        headers={**headers, "Content-Type": "application/octet-stream"},
    )
    assert r.json() == [{"name": "raw.txt", "path": "/tmp/raw.txt", "type": "file"}]
    r = httpx.post(
        f"{serve.sandbox_url}/files",
        files=[("file", ("/tmp/m1.txt", b"1")), ("file", ("/tmp/m2.txt", b"2"))],
        headers={**headers, "X-Metadata-Team": "blue"},
    )
    assert r.json() == [
        {"metadata": {"team": "blue"}, "name": "m1.txt", "path": "/tmp/m1.txt", "type": "file"},
        {"metadata": {"team": "blue"}, "name": "m2.txt", "path": "/tmp/m2.txt", "type": "file"},
    ]
    # Connect EntryInfo as JSON: no empty metadata map, no symlinkTarget for a plain file.
    r = httpx.post(
        f"{serve.sandbox_url}/filesystem.Filesystem/Stat",
        json={"path": "/tmp/raw.txt"},
        headers={**headers, "Authorization": "Basic dXNlcjo="},  # user:
    )
    entry = r.json()["entry"]
    assert "metadata" not in entry and "symlinkTarget" not in entry and "isSymlink" not in entry
    assert (entry["name"], entry["type"], entry["size"]) == ("raw.txt", "FILE_TYPE_FILE", "3")


def test_default_user_writes_under_root_like_e2b(busybox: Sandbox) -> None:
    top = f"/{uuid.uuid4().hex[:6]}"
    infos = busybox.files.write_files(
        [{"path": f"{top}/a.txt", "data": "a"}, {"path": "/home/user/b.txt", "data": "b"}]
    )
    assert [i.path for i in infos] == [f"{top}/a.txt", "/home/user/b.txt"]
    assert busybox.files.read(f"{top}/a.txt") == "a"
    assert busybox.files.read("/home/user/b.txt") == "b"
    for path in (top, f"{top}/a.txt", "/home/user/b.txt"):
        info = busybox.files.get_info(path)
        assert (info.owner, info.group) == ("user", "user"), path
    assert busybox.files.get_info("/").owner == "root"
    assert busybox.files.make_dir(f"{top}/made/here") is True
    assert busybox.files.get_info(f"{top}/made").owner == "user"
    # Still refused, as E2B refuses them: a directory as a file, an unknown user.
    with pytest.raises(InvalidArgumentException):
        busybox.files.write(top, "x")
    with pytest.raises(AuthenticationException):
        busybox.files.write(f"{top}/c.txt", "c", user="nobody-here")
    busybox.files.remove(top)


def test_commands_and_ptys_run_without_bash(busybox: Sandbox) -> None:
    assert busybox.files.exists("/bin/bash") is False  # the busybox template has no bash
    # A login shell: /etc/profile and ~/.profile are read, as bash -l reads them.
    busybox.files.write("/etc/profile", "export FROM_PROFILE=system\n", user="root")
    busybox.files.write("/home/user/.profile", "export FROM_HOME=mine\n")
    out = busybox.commands.run('echo "$FROM_PROFILE $FROM_HOME $(id -un) $HOME"; echo err >&2')
    assert (out.stdout, out.stderr, out.exit_code) == ("system mine user /home/user\n", "err\n", 0)
    with pytest.raises(CommandExitException) as exc:
        busybox.commands.run("exit 7")
    assert exc.value.exit_code == 7
    assert busybox.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"
    assert busybox.commands.run("echo $X", envs={"X": "from-request"}).stdout == "from-request\n"

    cat = busybox.commands.run("cat; echo done", background=True, stdin=True)
    assert [p.cmd for p in busybox.commands.list() if p.pid == cat.pid] == ["/bin/bash"]
    cat.send_stdin("piped\n")
    cat.close_stdin()
    assert cat.wait().stdout == "piped\ndone\n"

    term = busybox.pty.create(PtySize(rows=24, cols=80))
    busybox.pty.send_stdin(term.pid, b'echo "[$FROM_PROFILE] $((6*7))x"; exit 5\n')
    raw = bytearray()
    with pytest.raises(CommandExitException) as exc:
        term.wait(on_pty=raw.extend)
    assert exc.value.exit_code == 5
    assert "[system] 42x" in raw.decode(errors="replace")


#: Upper bound for events to arrive; only ever waited up to, never asserted on.
PATIENCE_S = 20.0
CREATE, WRITE, CHMOD = (
    FilesystemEventType.CREATE,
    FilesystemEventType.WRITE,
    FilesystemEventType.CHMOD,
)


def _kinds(events: list, name: str) -> list:
    return [e.type for e in events if e.name == name]


def _poll_until(handle, events: list, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not done():
        assert time.monotonic() < deadline, [(e.name, e.type) for e in events]
        events.extend(handle.get_new_events())
        time.sleep(0.05)


def test_polling_watchers_see_writes_as_e2b_shows_them(busybox: Sandbox) -> None:
    top = f"/home/user/w-{uuid.uuid4().hex[:6]}"
    busybox.files.make_dir(f"{top}/nested")
    busybox.files.write(f"{top}/old.txt", "old")
    plain = busybox.files.watch_dir(top)
    recursive = busybox.files.watch_dir(top, recursive=True, include_entry=True)
    try:
        busybox.files.write(f"{top}/new.txt", "new")
        busybox.files.write(f"{top}/old.txt", "replaced")
        busybox.files.write(f"{top}/nested/file.txt", "deep")
        busybox.files.make_dir(f"{top}/zz")  # the sentinel: every earlier event is in
        got, deep = [], []
        _poll_until(plain, got, lambda: "zz" in [e.name for e in got])
        _poll_until(recursive, deep, lambda: "zz" in [e.name for e in deep])
    finally:
        plain.stop()
        recursive.stop()
    for events in (got, deep):
        assert _kinds(events, "new.txt") == [CREATE, CHMOD, WRITE]
        assert _kinds(events, "old.txt") == [CHMOD, WRITE]
        assert not any("hutch-upload" in e.name for e in events), [e.name for e in events]
    assert _kinds(deep, "nested/file.txt") == [CREATE, CHMOD, WRITE]
    assert _kinds(got, "nested/file.txt") == []
    written = next(e for e in deep if e.name == "old.txt" and e.type == WRITE)
    assert (written.entry.path, written.entry.size) == (f"{top}/old.txt", len("replaced"))


def test_streamed_watches_see_writes_as_e2b_shows_them(serve: Serve) -> None:
    async def scenario() -> list:
        sbx = await AsyncSandbox.create("busybox", timeout=120)
        try:
            top = f"/home/user/s-{uuid.uuid4().hex[:6]}"
            await sbx.files.make_dir(top)
            events: list = []
            handle = await sbx.files.watch_dir(top, events.append, recursive=True)
            try:
                await sbx.files.write(f"{top}/a.txt", "a", metadata={"team": "blue"})
                await sbx.files.write(f"{top}/made/b.txt", "b")  # its parent is made too
                await sbx.files.write(f"{top}/a.txt", "again")
                await sbx.files.make_dir(f"{top}/zz")
                deadline = time.monotonic() + PATIENCE_S
                while "zz" not in [e.name for e in events]:
                    assert time.monotonic() < deadline, [(e.name, e.type) for e in events]
                    await asyncio.sleep(0.05)
            finally:
                await handle.stop()
            return events
        finally:
            await sbx.kill()

    events = asyncio.run(scenario())
    assert _kinds(events, "a.txt") == [CREATE, CHMOD, WRITE, CHMOD, CHMOD, WRITE, CHMOD]
    assert _kinds(events, "made") == [CREATE, CHMOD]
    assert _kinds(events, "made/b.txt") == [CREATE, CHMOD, WRITE]
    assert not any("hutch-upload" in e.name for e in events), [e.name for e in events]
