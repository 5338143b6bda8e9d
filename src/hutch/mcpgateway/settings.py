"""The gateway's settings: command line first, then ``HUTCH_MCP_GATEWAY_*``, then defaults.

This is the one module that reads ``os.environ``; the access token comes from
``GATEWAY_ACCESS_TOKEN``, the name E2B's SDKs set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TOKEN_ENV = "GATEWAY_ACCESS_TOKEN"
#: The running gateway's config, in the state dir (written by the launcher, 0600).
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 50005
    #: Where the token (``.token``, read back by the SDK's ``get_mcp_token()``) and the
    #: config of the running gateway are kept.
    state_dir: Path = Path("/etc/mcp-gateway")
    #: The gateway's and its servers' logs.
    log_dir: Path = Path("/var/log/mcp-gateway")
    #: Where catalog servers are installed (``npm/`` and ``venv/``), and ``github/``
    #: entries are cloned.
    servers_dir: Path = Path("/opt/mcp-gateway/servers")
    #: The Python that catalog servers from PyPI get their venv from (``mcp-gateway pull``).
    server_python: str = "/usr/bin/python3"
    #: Seconds ``mcp-gateway --config`` waits for every server and the endpoint (the SDK
    #: itself gives the command 60 s).
    start_timeout_s: float = 55.0
    #: Seconds one server gets to answer ``initialize`` once started.
    init_timeout_s: float = 30.0


def from_env() -> Settings:
    d = Settings()
    env = os.environ.get
    return Settings(
        host=env("HUTCH_MCP_GATEWAY_HOST", d.host),
        port=int(env("HUTCH_MCP_GATEWAY_PORT", str(d.port))),
        state_dir=Path(env("HUTCH_MCP_GATEWAY_STATE_DIR", str(d.state_dir))),
        log_dir=Path(env("HUTCH_MCP_GATEWAY_LOG_DIR", str(d.log_dir))),
        servers_dir=Path(env("HUTCH_MCP_GATEWAY_SERVERS_DIR", str(d.servers_dir))),
        server_python=env("HUTCH_MCP_GATEWAY_SERVER_PYTHON", d.server_python),
        start_timeout_s=float(env("HUTCH_MCP_GATEWAY_START_TIMEOUT_S", str(d.start_timeout_s))),
        init_timeout_s=float(env("HUTCH_MCP_GATEWAY_INIT_TIMEOUT_S", str(d.init_timeout_s))),
    )


def access_token() -> str | None:
    """The token the SDK passed (``GATEWAY_ACCESS_TOKEN``), if any."""
    return os.environ.get(TOKEN_ENV) or None


def process_env() -> dict[str, str]:
    """This process's environment, the base of each stdio server's."""
    return dict(os.environ)
