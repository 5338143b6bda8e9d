"""The official SDK through the proxy to a real envd: streams, big files, signed URLs."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import ConnectionConfig, Sandbox, SandboxNotRunningException
from packaging.version import Version

from hutch.proxy.catalog import SandboxRoute
from hutch.shared.ids import SandboxID
from tests.conftest import EnvdProcess, start_envd, stop_envd
from tests.integration.proxy.conftest import RunningProxy

API_KEY = "e2b_" + "0" * 40


def sdk_sandbox(proxy: RunningProxy, sandbox_id: str, token: str | None = None) -> Sandbox:
    """A ``Sandbox`` handle as ``Sandbox.create`` builds one from an API response.

    Built directly (not debug mode): debug mode sends the id ``debug_sandbox_id``, which is
    not a valid sandbox id, and never sends a token, so signed URLs could not be tested.
    """
    headers = {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": "49983"}
    if token is not None:
        headers["X-Access-Token"] = token
    config = ConnectionConfig(
        sandbox_url=proxy.url, api_key=API_KEY, debug=False, extra_sandbox_headers=headers
    )
    return Sandbox(
        sandbox_id=sandbox_id,
        sandbox_domain=None,
        envd_version=Version("0.6.13"),
        envd_access_token=token,
        traffic_access_token=None,
        connection_config=config,
    )


def _register(proxy: RunningProxy, sandbox_id: str, envd: EnvdProcess, token: str | None) -> None:
    if token is not None:
        # Re-init of a module-scoped envd must present the token it already has.
        r = httpx.post(
            envd.url + "/init", json={"accessToken": token}, headers={"X-Access-Token": token}
        )
        assert r.status_code == 204, r.text
    proxy.catalog.put(
        SandboxRoute(
            SandboxID(sandbox_id), "127.0.0.1", envd_access_token=token, ports={49983: envd.port}
        )
    )


@pytest.fixture(scope="module")
def two_envds(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[EnvdProcess, EnvdProcess]]:
    a = start_envd(tmp_path_factory.mktemp("envd-a"))
    b = start_envd(tmp_path_factory.mktemp("envd-b"))
    try:
        yield a, b
    finally:
        stop_envd(a)
        stop_envd(b)


@pytest.fixture
def secure(
    proxy: RunningProxy, two_envds: tuple[EnvdProcess, EnvdProcess]
) -> tuple[Sandbox, Sandbox]:
    a, b = two_envds
    _register(proxy, "isbxa", a, "token-a")
    _register(proxy, "isbxb", b, "token-b")
    return sdk_sandbox(proxy, "isbxa", "token-a"), sdk_sandbox(proxy, "isbxb", "token-b")


def test_sdk_command_output_streams_through_the_proxy(secure: tuple[Sandbox, Sandbox]) -> None:
    sbx, _ = secure
    # The command waits for a file the stdout callback creates: it only finishes if the
    # first line crossed the proxy while the command was still running (no buffering).
    # It runs as "nobody": root's login profile on this host may block in `pyenv rehash`.
    shared = Path(tempfile.mkdtemp(prefix="hutch-proxy-"))
    shared.chmod(0o777)
    flag = shared / "flag"
    out: list[str] = []

    def on_stdout(chunk: str) -> None:
        out.append(chunk)
        flag.touch()

    cmd = f"echo first; while [ ! -e {flag} ]; do sleep 0.01; done; echo second; echo e >&2"
    try:
        result = sbx.commands.run(cmd, on_stdout=on_stdout, timeout=30, user="nobody")
    finally:
        shutil.rmtree(shared)
    assert "".join(out) == result.stdout == "first\nsecond\n"
    assert result.stderr == "e\n"


def test_sdk_big_file_round_trip_is_byte_exact(
    secure: tuple[Sandbox, Sandbox], tmp_path: Path
) -> None:
    sbx, _ = secure
    data = os.urandom(64 * 1024 * 1024)
    target = str(tmp_path / "big.bin")
    sbx.files.write(target, data)
    assert Path(target).stat().st_size == len(data)
    back = sbx.files.read(target, format="bytes")
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()


def test_sdk_unknown_sandbox_is_not_running(proxy: RunningProxy) -> None:
    ghost = sdk_sandbox(proxy, "ighost", "t")
    assert ghost.is_running() is False
    with pytest.raises(SandboxNotRunningException):
        ghost.commands.run("true")
    with pytest.raises(SandboxNotRunningException):
        ghost.files.read("/etc/hostname")


def test_signed_urls_without_headers_reach_the_signing_sandbox(
    secure: tuple[Sandbox, Sandbox], tmp_path: Path
) -> None:
    sbx_a, sbx_b = secure
    path_a, path_b = tmp_path / "a.txt", tmp_path / "b.txt"
    sbx_a.files.write(str(path_a), "from a")
    sbx_b.files.write(str(path_b), "from b")
    # Links point at the one proxy URL and carry no sandbox header: only the signature routes.
    assert httpx.get(sbx_b.download_url(str(path_b))).text == "from b"
    assert httpx.get(sbx_a.download_url(str(path_a), use_signature_expiration=60)).text == "from a"
    up = sbx_b.upload_url(str(tmp_path / "up.txt"))
    r = httpx.post(up, files={"file": ("up.txt", b"uploaded to b")})
    assert r.status_code == 200, r.text
    assert sbx_b.files.read(str(tmp_path / "up.txt")) == "uploaded to b"


def test_signed_url_that_no_sandbox_made_is_401_and_names_none(
    secure: tuple[Sandbox, Sandbox], proxy: RunningProxy, tmp_path: Path
) -> None:
    sbx_a, _ = secure
    good = sbx_a.download_url(str(tmp_path / "x"))
    forged = good.replace("signature=v1_", "signature=v1_X")
    wrong_op = sbx_a.upload_url(str(tmp_path / "x")).replace(proxy.url, proxy.url)  # write-signed
    answers = [
        httpx.get(forged),
        httpx.get(wrong_op),
        httpx.get(proxy.url + "/files?path=/x&signature=v1_nope"),
    ]
    for r in answers:
        assert r.status_code == 401
        assert r.json() == {"message": "missing or invalid signature", "code": 401}
