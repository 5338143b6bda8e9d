"""``mcp-gateway --config '<json>'``: what E2B's SDKs run right after the create.

Validates the config, keeps the token (``<state>/.token``, 0600, read back by the SDK's
``get_mcp_token()``) and the config, starts the gateway as a daemon in a session of its
own (it outlives this command; its pid in ``<state>/gateway.pid``), and waits for its one
status line: exit 0 once ``/mcp`` serves, else 1 with the reason on stderr (the SDK
raises ``Failed to start MCP gateway: <stderr>`` and kills the sandbox). Imports no
``mcp``: a bad config fails before anything heavy loads.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

from hutch.mcpgateway.catalog import parse_config
from hutch.mcpgateway.errors import ConfigError, GatewayError
from hutch.mcpgateway.settings import CONFIG_FILE, TOKEN_ENV, Settings, access_token

TOKEN_FILE = ".token"
PID_FILE = "gateway.pid"
LOG_FILE = "gateway.log"


def _write_private(path: os.PathLike[str] | str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def launch(settings: Settings, raw_config: str) -> str:
    """Start the gateway for ``raw_config``; return the ready line's servers, joined.

    Raises:
        GatewayError: a bad config, no token, or the gateway did not become ready.
    """
    try:
        config = json.loads(raw_config)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"the config is not JSON: {exc}") from exc
    parse_config(config, servers_dir=settings.servers_dir, state_dir=settings.state_dir)
    token = access_token()
    if token is None:
        raise ConfigError(f"{TOKEN_ENV} is not set: the gateway needs an access token")
    if _answers(settings.port):
        # Before the token file is touched: the running gateway keeps its token.
        raise GatewayError(f"a gateway already serves port {settings.port} in this sandbox")
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    _write_private(settings.state_dir / TOKEN_FILE, token)
    _write_private(settings.state_dir / CONFIG_FILE, json.dumps(config))
    read_fd, write_fd = os.pipe()
    with (settings.log_dir / LOG_FILE).open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hutch.mcpgateway", "serve", "--status-fd", str(write_fd)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(write_fd,),
            start_new_session=True,
            cwd="/",
        )
    os.close(write_fd)
    try:
        line = _read_status(read_fd, settings.start_timeout_s)
    finally:
        os.close(read_fd)
    if line is None:
        _stop(proc)
        raise GatewayError(
            f"the gateway was not ready within {settings.start_timeout_s:g} s "
            f"(its log: {settings.log_dir / LOG_FILE})"
        )
    try:
        status = json.loads(line) if line else {}
    except json.JSONDecodeError:
        status = {}
    if not status.get("ok"):
        _stop(proc)
        reason = status.get("error") or (
            f"the gateway exited with {proc.poll()} before it was ready "
            f"(its log: {settings.log_dir / LOG_FILE})"
        )
        raise GatewayError(reason)
    _write_private(settings.state_dir / PID_FILE, f"{proc.pid}\n")
    return ", ".join(status.get("servers") or ())


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _read_status(fd: int, timeout_s: float) -> str | None:
    """The status line, ``""`` when the daemon closed the pipe without one, None on timeout."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk or b"\n" in chunk:
            return (data + chunk).decode(errors="replace").strip()
        data += chunk


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the daemon and everything it started (its session's process group)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
