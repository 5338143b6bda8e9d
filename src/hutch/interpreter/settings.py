"""The server's settings: command line first, then ``HUTCH_INTERPRETER_*``, then defaults.

This is the one module that reads ``os.environ``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 49999
    #: envd inside the same sandbox, asked for the sandbox's env vars (``GET /envs``);
    #: empty disables the lookup (a server run outside a sandbox).
    envd_url: str = "http://127.0.0.1:49983"
    #: The working directory of contexts created without ``cwd``.
    cwd: str = "/home/user"
    #: Languages whose default context starts with the server (others start lazily).
    preload: tuple[str, ...] = ("python",)
    #: The Python that runs ipykernel (and so receives ``%pip install``).
    python: str = sys.executable
    #: Seconds without output after which ``/execute`` sends ``{"type": "keepalive"}``.
    keepalive_seconds: float = 5.0
    #: Bytes of stream output one execution may hold in memory while its client lags;
    #: beyond it, stream text is dropped and counted in a notice on stderr.
    max_buffered_output: int = 32 * 1024 * 1024
    #: Seconds an interrupted cell gets to stop before its kernel is restarted.
    interrupt_grace_seconds: float = 5.0
    log_level: str = "info"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"HUTCH_INTERPRETER_{name}", default)


def parse_args(argv: list[str] | None = None) -> Settings:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m hutch.interpreter",
        description="hutch's code-interpreter server (E2B code-interpreter wire contract).",
    )
    p.add_argument("--host", default=_env("HOST", d.host))
    p.add_argument("--port", type=int, default=int(_env("PORT", str(d.port))))
    p.add_argument("--envd-url", default=_env("ENVD_URL", d.envd_url))
    p.add_argument("--cwd", default=_env("CWD", d.cwd))
    p.add_argument(
        "--preload",
        default=_env("PRELOAD", ",".join(d.preload)),
        help="comma-separated languages whose default context starts with the server",
    )
    p.add_argument("--python", default=_env("PYTHON", d.python))
    p.add_argument("--keepalive-seconds", type=float, default=float(_env("KEEPALIVE_SECONDS", "5")))
    p.add_argument(
        "--max-buffered-output",
        type=int,
        default=int(_env("MAX_BUFFERED_OUTPUT", str(d.max_buffered_output))),
    )
    p.add_argument(
        "--interrupt-grace-seconds",
        type=float,
        default=float(_env("INTERRUPT_GRACE_SECONDS", "5")),
    )
    p.add_argument("--log-level", default=_env("LOG_LEVEL", d.log_level))
    a = p.parse_args(argv)
    cwd = a.cwd if os.path.isdir(a.cwd) else os.getcwd()
    return Settings(
        host=a.host,
        port=a.port,
        envd_url=a.envd_url.rstrip("/"),
        cwd=cwd,
        preload=tuple(x.strip() for x in a.preload.split(",") if x.strip()),
        python=a.python,
        keepalive_seconds=a.keepalive_seconds,
        max_buffered_output=a.max_buffered_output,
        interrupt_grace_seconds=a.interrupt_grace_seconds,
        log_level=a.log_level,
    )


def kernel_env(python: str) -> dict[str, str]:
    """The environment kernels start with: the server's own (the sandbox's, as envd
    started it), with matplotlib drawing inline and the kernel Python's ``bin`` first on
    ``PATH``, so ``!pip`` and ``!python`` are the kernel's own."""
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    bindir = os.path.dirname(python)
    path = env.get("PATH", os.defpath)
    if bindir and bindir not in path.split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + path
    return env
