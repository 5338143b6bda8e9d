"""The user's path through the whole stack with the official SDK (sync)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from e2b import Sandbox, SandboxQuery

from .serveproc import Serve

pytestmark = pytest.mark.root


@pytest.mark.compat("create", "commands", "files", "metadata", "info", "list", "kill")
def test_create_run_files_info_list_kill(serve: Serve) -> None:
    tag = uuid.uuid4().hex[:8]
    sbx = Sandbox.create("busybox", metadata={"tag": tag}, envs={"GREETING": "hi"}, timeout=120)
    try:
        out: list[str] = []
        err: list[str] = []
        result = sbx.commands.run(
            'echo "$GREETING"; echo oops >&2; hostname',
            on_stdout=out.append,
            on_stderr=err.append,
        )
        assert result.exit_code == 0
        assert "".join(out) == f"hi\n{sbx.sandbox_id}\n"
        assert "".join(err) == "oops\n"

        sbx.files.write("/tmp/note.txt", "hello", metadata={"owner": "e2e"})
        assert sbx.files.read("/tmp/note.txt") == "hello"
        assert sbx.files.get_info("/tmp/note.txt").metadata == {"owner": "e2e"}

        info = sbx.get_info()
        assert info.sandbox_id == sbx.sandbox_id
        assert info.template_id == "busybox"
        assert info.metadata == {"tag": tag}
        assert info.end_at - info.started_at == timedelta(seconds=120)

        sbx.set_timeout(600)
        info = sbx.get_info()
        assert info.end_at - info.started_at >= timedelta(seconds=600)

        listed = Sandbox.list(query=SandboxQuery(metadata={"tag": tag})).next_items()
        assert [s.sandbox_id for s in listed] == [sbx.sandbox_id]
    finally:
        assert sbx.kill() is True
    assert Sandbox.kill(sbx.sandbox_id) is False
    assert Sandbox.list(query=SandboxQuery(metadata={"tag": tag})).next_items() == []


def test_killed_sandbox_is_not_routed(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", timeout=60)
    sbx.kill()
    r = httpx.get(
        f"{serve.sandbox_url}/health",
        headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"},
    )
    assert r.status_code == 502
    assert "was not found" in r.json()["message"]


def test_signed_urls_through_the_single_sandbox_url(serve: Serve) -> None:
    """``download_url``/``upload_url`` carry no sandbox header: the proxy routes by signature."""
    sbx = Sandbox.create("busybox", timeout=60, secure=True)
    other = Sandbox.create("busybox", timeout=60, secure=True)
    try:
        sbx.files.write("/tmp/data.bin", b"\x00payload\xff")
        url = sbx.download_url("/tmp/data.bin", use_signature_expiration=120)
        assert url.startswith(serve.sandbox_url)
        r = httpx.get(url)
        assert r.status_code == 200, r.text
        assert r.content == b"\x00payload\xff"

        up = other.upload_url("/tmp/up.txt", use_signature_expiration=120)
        r = httpx.post(up, files={"file": ("up.txt", b"uploaded")})
        assert r.status_code == 200, r.text
        assert other.files.read("/tmp/up.txt") == "uploaded"
        assert not sbx.files.exists("/tmp/up.txt")

        # A signature no sandbox's token made finds nothing (the proxy's 401, docs/proxy).
        forged = url.replace("signature=v1_", "signature=v1_x")
        assert httpx.get(forged).status_code == 401
    finally:
        sbx.kill()
        other.kill()
