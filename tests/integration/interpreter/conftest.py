"""A real interpreter server (``python -m hutch.interpreter``) on loopback with real
ipykernel/bash_kernel kernels, a real envd beside it for the sandbox's env vars, and the
official ``e2b_code_interpreter`` SDK aimed at it.

The SDK builds the interpreter's URL from the sandbox host and port 49999; in debug
mode (``E2B_DEBUG=true``, no control plane) with ``E2B_SANDBOX_URL`` set, every sandbox
URL is that one, so ``Sandbox.create()`` talks straight to the server under test.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import EnvdProcess, free_port, start_envd, stop_envd

SANDBOX_ENVS = {"SANDBOX_ONLY": "from-sandbox", "SHARED": "sandbox"}


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    cwd: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(tmp: Path, envd_url: str, *extra: str) -> Server:
    port = free_port()
    log_path = tmp / f"interpreter-{port}.log"
    cwd = tmp / "home"
    cwd.mkdir(exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "hutch.interpreter",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--envd-url",
        envd_url,
        "--cwd",
        str(cwd),
        *extra,
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"interpreter exited with {proc.returncode}:\n{log_path.read_text()}"
            )
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"interpreter did not become healthy:\n{log_path.read_text()}")
        time.sleep(0.1)
    return Server(url=url, process=proc, log_path=log_path, cwd=cwd)


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def init_envd(envd: EnvdProcess, envs: dict[str, str], token: str | None = None) -> None:
    body: dict[str, object] = {"envVars": envs}
    if token:
        body["accessToken"] = token
    req = urllib.request.Request(
        envd.url + "/init",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status in (200, 204)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("interp")


@pytest.fixture(scope="module")
def envd(module_tmp: Path) -> Iterator[EnvdProcess]:
    server = start_envd(module_tmp)
    init_envd(server, SANDBOX_ENVS)
    try:
        yield server
    finally:
        stop_envd(server)


@pytest.fixture(scope="module")
def server(module_tmp: Path, envd: EnvdProcess) -> Iterator[Server]:
    srv = start_server(module_tmp, envd.url, "--keepalive-seconds", "1")
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture
def sdk_env(server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setenv("E2B_DEBUG", "true")
    monkeypatch.setenv("E2B_SANDBOX_URL", server.url)
    monkeypatch.setenv("E2B_API_KEY", "e2b_" + "0" * 40)
    return server


@pytest.fixture
def sbx(sdk_env: Server):
    from e2b_code_interpreter import Sandbox

    return Sandbox.create()


@pytest.fixture
async def async_sbx(sdk_env: Server):
    from e2b_code_interpreter import AsyncSandbox

    return await AsyncSandbox.create()


def proc_status(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` size field (VmRSS, VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        path = task / "children"
        if path.exists():
            out += [int(x) for x in path.read_text().split()]
    return out
