"""envd's configuration: a frozen dataclass read once in ``main`` (no pydantic: envd is lean).

Command-line flags win over ``HUTCH_ENVD_*`` environment variables, which win over defaults.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from hutch.shared.paths import ENVD_PORT


@dataclass(frozen=True, kw_only=True)
class EnvdSettings:
    """Everything envd needs to know before ``/init`` personalises it."""

    host: str = "0.0.0.0"
    port: int = ENVD_PORT
    #: The user requests run as when they name none, until ``/init`` sets another.
    default_user: str = "root"
    #: Where relative paths and processes start when no cwd is given (default: the user's home).
    default_workdir: str | None = None
    #: Multipart uploads: open sessions at most, idle expiry, and size limits.
    max_upload_sessions: int = 100
    upload_session_ttl_s: float = 3600.0
    max_upload_total_size: int = 10 * 1024**3
    max_upload_part_size: int = 100 * 1024**2
    max_upload_parts: int = 10_000
    #: Largest request header block and Connect message accepted, in bytes.
    max_rpc_message_bytes: int = 16 * 1024**2
    #: Where envd keeps the temporary files of multipart uploads it must find again at start.
    state_dir: Path = field(default_factory=lambda: Path("/run/hutch-envd"))
    log_level: str = "info"
    #: A listening socket to serve on instead of binding ``host:port`` (-1: bind). The
    #: node's zygote binds it in the sandbox before envd runs (ADR 0041): connections made
    #: meanwhile wait in its backlog, so the node's first ``/health`` needs no retry.
    listen_fd: int = -1


_ENV_PREFIX = "HUTCH_ENVD_"


def _from_env(environ: dict[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for f in fields(EnvdSettings):
        raw = environ.get(_ENV_PREFIX + f.name.upper())
        if raw is None:
            continue
        default = getattr(EnvdSettings(), f.name)
        if isinstance(default, bool):
            values[f.name] = raw.lower() in ("1", "true", "yes")
        elif isinstance(default, int):
            values[f.name] = int(raw)
        elif isinstance(default, float):
            values[f.name] = float(raw)
        elif isinstance(default, Path):
            values[f.name] = Path(raw)
        else:
            values[f.name] = raw
    return values


def load_settings(argv: list[str]) -> EnvdSettings:
    """Parse ``hutch envd`` flags over the environment."""
    parser = argparse.ArgumentParser(
        prog="hutch envd", description="Run hutch's in-sandbox daemon."
    )
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help=f"port to listen on (default {ENVD_PORT})")
    parser.add_argument("--user", dest="default_user", help="default user (default root)")
    parser.add_argument("--workdir", dest="default_workdir", help="default working directory")
    parser.add_argument("--state-dir", dest="state_dir", type=Path, help="upload state directory")
    parser.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")
    parser.add_argument(
        "--listen-fd", dest="listen_fd", type=int, help="serve on this listening socket"
    )
    ns = parser.parse_args(argv)
    values = _from_env(dict(os.environ))
    values.update({k: v for k, v in vars(ns).items() if v is not None})
    return EnvdSettings(**values)  # type: ignore[arg-type]
