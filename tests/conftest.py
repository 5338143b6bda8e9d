"""Fixtures shared by every test: a real envd process, and the official E2B SDK aimed at it."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

#: The non-root account tests run requests as (created by the fixture when missing).
TEST_USER = "hutch-test"

#: CI installs everything through test.sh, so there a missing prerequisite is a failed
#: install step, which must fail the run instead of hiding behind skipped tests.
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def machine_lacks(reason: str) -> NoReturn:
    """Skip the current test because this machine lacks something; fail instead on CI."""
    if ON_CI:
        pytest.fail(f"CI must have this (a missing install step?): {reason}", pytrace=False)
    pytest.skip(reason)


def require_for_dir(items: list[pytest.Item], here: Path, reason: str | None) -> None:
    """From ``pytest_collection_modifyitems``: mark every test under ``here`` as lacking
    ``reason`` (skipped on a developer machine, a collection error on CI)."""
    if reason is None:
        return
    if ON_CI:
        raise pytest.UsageError(f"CI must have this (a missing install step?): {reason}")
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The compatibility matrix (tests/compat) last: its pinned SDKs' columns take this
    session's results of the e2e tests they would run again (``tests/compat/plugin.py``)."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/compat/"))  # stable


def pytest_collection_finish(session: pytest.Session) -> None:
    from tests.compat import plugin

    plugin.collected(session)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    from tests.compat import plugin

    report = yield
    plugin.record_in_session(item, report)
    return report


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EnvdProcess:
    """A running ``hutch envd`` started by a test."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_envd(tmp: Path, *extra_args: str, env: dict[str, str] | None = None) -> EnvdProcess:
    """Start ``hutch envd`` on a free loopback port and wait until ``/health`` answers."""
    port = free_port()
    log_path = tmp / f"envd-{port}.log"
    state_dir = tmp / f"envd-state-{port}"
    cmd = [
        sys.executable,
        "-m",
        "hutch.envd",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--state-dir",
        str(state_dir),
        *extra_args,
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"envd exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                if resp.status == 204:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"envd did not become healthy:\n{log_path.read_text()}")
        time.sleep(0.05)
    return EnvdProcess(url=url, port=port, process=proc, log_path=log_path)


def stop_envd(envd: EnvdProcess) -> None:
    """Stop an envd started by ``start_envd`` and every process group it left (by its PID)."""
    if envd.process.poll() is None:
        envd.process.send_signal(signal.SIGTERM)
        try:
            envd.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            envd.process.kill()
            envd.process.wait()


@pytest.fixture
def envd(tmp_path: Path) -> Iterator[EnvdProcess]:
    """A fresh envd per test."""
    server = start_envd(tmp_path)
    try:
        yield server
    finally:
        stop_envd(server)


@pytest.fixture
def sdk_env(envd: EnvdProcess, monkeypatch: pytest.MonkeyPatch) -> EnvdProcess:
    """Point the official SDK at ``envd`` in debug mode (no control plane)."""
    monkeypatch.setenv("E2B_DEBUG", "true")
    monkeypatch.setenv("E2B_SANDBOX_URL", envd.url)
    monkeypatch.setenv("E2B_API_KEY", "e2b_" + "0" * 40)
    return envd


@pytest.fixture
def sandbox(sdk_env: EnvdProcess):
    """The official synchronous SDK's ``Sandbox``, talking to the test's envd."""
    from e2b import Sandbox

    return Sandbox.create()


@pytest.fixture
async def async_sandbox(sdk_env: EnvdProcess):
    """The official asynchronous SDK's ``AsyncSandbox``, talking to the test's envd."""
    from e2b import AsyncSandbox

    return await AsyncSandbox.create()


@pytest.fixture(scope="session")
def test_user() -> Iterator[pwd.struct_passwd]:
    """A non-root account with a home directory (created for the session when missing)."""
    if os.geteuid() != 0:
        machine_lacks("needs root to create a test account and switch users")
    created = False
    try:
        entry = pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", TEST_USER], check=True)
        created = True
        entry = pwd.getpwnam(TEST_USER)
    try:
        yield entry
    finally:
        if created:
            subprocess.run(["userdel", "--remove", TEST_USER], check=False, capture_output=True)
