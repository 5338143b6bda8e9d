"""envd behaviours real client code relies on (issue 18), driven with the official SDK
against a real ``hutch serve``: removing what is not there, signed URL errors, answer
shapes, images without bash, writes under ``/`` as the default user, and what watchers
see while files are written."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from e2b import Sandbox

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
