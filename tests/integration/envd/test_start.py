"""envd's start path: what is imported before /health can answer, and the deferred load (ADR 16)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import start_envd, stop_envd

#: Modules the first /health must not wait for: the Connect stack and the managers behind it.
DEFERRED = [
    "protobuf",
    "connectrpc",
    "pyqwest",
    "hutch.shared.proto.process.process_pb",
    "hutch.envd.rpc.services",
    "hutch.envd.process.manager",
    "hutch.envd.process.pty",
    "hutch.envd.filesystem.watcher",
    "inotify_simple",
]

_PROBE = """
import asyncio, json, sys
from hutch.envd.app import create_app, create_envd
from hutch.envd.settings import load_settings

settings = load_settings(["--state-dir", sys.argv[1]])
envd = create_envd(settings)
app = create_app(settings, envd=envd)
deferred = json.loads(sys.argv[2])
before = [m for m in deferred if m in sys.modules]

async def lifespan():
    queue = asyncio.Queue()
    for kind in ("lifespan.startup", "lifespan.shutdown"):
        queue.put_nowait({"type": kind})
    sent = []
    async def send(message):
        sent.append(message["type"])
    await app({"type": "lifespan"}, queue.get, send)
    return sent

sent = asyncio.run(lifespan())
print(json.dumps({"before": before, "lifespan": sent,
                  "made": sorted(k for k in ("processes", "watchers") if k in vars(envd))}))
"""


def test_envd_app_builds_without_importing_the_connect_stack(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path / "state"), json.dumps(DEFERRED)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    result = json.loads(out.splitlines()[-1])
    assert result["before"] == []
    # A start and a stop with no request in between: nothing lazily made is made to close it.
    assert result["lifespan"] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert result["made"] == []


#: uvicorn's command line, which its package ``__init__`` imports and envd never uses (ADR 32).
UVICORN_CLI = ["uvicorn.main", "uvicorn.supervisors", "click", "multiprocessing"]

_UVICORN_PROBE = """
import json, sys
from hutch.envd.main import HTTP_PROTOCOL, _uvicorn

Config, Server = _uvicorn()
config = Config(lambda scope, receive, send: None, lifespan="on", http=HTTP_PROTOCOL, ws="none",
                loop="asyncio", log_config=None)
config.load()  # imports the HTTP protocol and uvicorn.lifespan.on (`from uvicorn import Config`)
Server(config)
print(json.dumps({"cli": [m for m in json.loads(sys.argv[1]) if m in sys.modules],
                  "lifespan": config.lifespan_class.__module__,
                  "http": config.http_protocol_class.__module__}))
"""


def test_envd_runs_uvicorn_without_importing_its_command_line() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _UVICORN_PROBE, json.dumps(UVICORN_CLI)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    result = json.loads(out.splitlines()[-1])
    assert result == {
        "cli": [],
        "lifespan": "uvicorn.lifespan.on",
        "http": "uvicorn.protocols.http.httptools_impl",
    }


def test_envd_serves_an_rpc_sent_the_moment_health_answers(tmp_path: Path) -> None:
    envd = start_envd(tmp_path)
    try:
        # start_envd returns at the first 204: the Connect import is at most just starting.
        r = httpx.post(
            f"{envd.url}/filesystem.Filesystem/Stat",
            json={"path": "/"},
            headers={"Connect-Protocol-Version": "1", "Authorization": "Basic cm9vdDo="},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert r.json()["entry"]["type"] == "FILE_TYPE_DIRECTORY"
    finally:
        stop_envd(envd)
