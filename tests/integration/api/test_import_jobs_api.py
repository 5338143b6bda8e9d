"""``POST /templates/from-image`` and ``GET /templates/imports/{id}`` on two real apis
(uvicorn, each its own store and import worker) sharing one PostgreSQL, with a fake
node importer (the real one is tests/e2e/test_image_templates.py): an import accepted by
one api is followed through the other, and survives the api that accepted it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from hutch.api.app import create_app
from hutch.api.service.ports import ImageImport, ImportedImage, ImportProgress
from hutch.api.settings import ApiSettings
from tests.conftest import free_port
from tests.fakes.node import FakeNodeClient
from tests.integration.api.conftest import PostgresDatabases, _seed, run_async


class ThreadGatedBuilder:
    """Reports a stage, then waits for ``gate`` (a thread event: apis run in threads)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.runs: list[str] = []

    async def import_image(
        self, request: ImageImport, *, progress: ImportProgress | None = None
    ) -> ImportedImage:
        self.runs.append(request.name)
        if progress is not None:
            progress("layer 1/1", 1, 4)
        self.started.set()
        while not self.gate.is_set():
            await asyncio.sleep(0.02)
        if progress is not None:
            progress("layer 1/1", 4, 4)
            progress("seal", 1, 1)
        return ImportedImage(name=request.name, fingerprint="e" * 64, cache_hit=False,
                             envd_injected=False, envd_sha256=None)  # fmt: skip

    async def delete(self, name: str) -> None:
        pass


@contextmanager
def _api(url: str, home: Path, builder: ThreadGatedBuilder) -> Iterator[tuple[str, object]]:
    port = free_port()
    cfg = ApiSettings(home=home, database_url=url, api_host="127.0.0.1", api_port=port,
                      reaper_interval_s=3600, usage_interval_s=3600,
                      build_poll_interval_s=0.1)  # fmt: skip
    app = create_app(cfg, node=FakeNodeClient(), builder=builder)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_an_import_outlives_the_api_that_accepted_it(
    postgres_databases: PostgresDatabases, tmp_path: Path
) -> None:
    url = postgres_databases.create()
    key, _team, other_key, _admin = run_async(lambda: _seed(url))
    headers = {"X-API-Key": key, "Accept": "application/x-ndjson"}
    first, second = ThreadGatedBuilder(), ThreadGatedBuilder()
    second.gate.set()
    body = {"source": "oci:/nowhere:latest", "name": "outlived", "memoryMB": 256}
    with contextlib.ExitStack() as apis:
        api_a, server_a = apis.enter_context(_api(url, tmp_path / "a", first))
        with httpx.stream("POST", f"{api_a}/templates/from-image", json=body,
                          headers=headers, timeout=30) as r:  # fmt: skip
            assert r.status_code == 200
            import_id = r.headers["x-hutch-import-id"]
            lines = r.iter_lines()
            assert json.loads(next(lines)) == {"type": "progress", "stage": "layer 1/1",
                                               "done": 1, "total": 4}  # fmt: skip
        assert first.runs == ["outlived"]  # api A's worker claimed it
        # api B starts beside it: A's lease holds, so B's worker leaves the import alone.
        api_b, _ = apis.enter_context(_api(url, tmp_path / "b", second))
        # Any api reads the job; another team's key does not see it.
        seen = httpx.get(f"{api_b}/templates/imports/{import_id}",
                         headers={"X-API-Key": key}).json()  # fmt: skip
        assert seen["status"] == "running" and seen["templateID"] == "outlived"
        assert seen["progress"] == [{"stage": "layer 1/1", "done": 1, "total": 4}]
        hidden = httpx.get(f"{api_b}/templates/imports/{import_id}",
                           headers={"X-API-Key": other_key})  # fmt: skip
        assert hidden.status_code == 404
        # The same name through the other api while it runs: 409 at once.
        taken = httpx.post(f"{api_b}/templates/from-image", json=body,
                           headers={"X-API-Key": key})  # fmt: skip
        assert taken.status_code == 409 and "being imported" in taken.json()["message"]
        server_a.should_exit = True  # type: ignore[attr-defined]
        # api A stopped mid-import (its import never finished there): api B's worker takes
        # the job over, and the client follows it to its end through api B.
        with httpx.stream("GET", f"{api_b}/templates/imports/{import_id}", headers=headers,
                          timeout=30) as r:  # fmt: skip
            events = [json.loads(line) for line in r.iter_lines() if line]
        assert events[-1]["type"] == "result", events
        template = events[-1]["template"]
        assert template["templateID"] == "outlived" and template["fingerprint"] == "e" * 64
        assert template["memoryMB"] == 256
        assert {"type": "progress", "stage": "seal", "done": 1, "total": 1} in events
        assert second.runs == ["outlived"]
        done = httpx.get(f"{api_b}/templates/imports/{import_id}",
                         headers={"X-API-Key": key}).json()  # fmt: skip
        assert done["status"] == "ready" and done["attempts"] == 2
        listed = httpx.get(f"{api_b}/templates", headers={"X-API-Key": key}).json()
        assert [t["templateID"] for t in listed].count("outlived") == 1

        # A plain request blocks until the end: 201 with the template; errors as the
        # node said them.
        plain = httpx.post(f"{api_b}/templates/from-image", timeout=30,
                           json={**body, "name": "plain"}, headers={"X-API-Key": key})  # fmt: skip
        assert plain.status_code == 201 and plain.json()["templateID"] == "plain"
        assert plain.headers["x-hutch-import-id"].startswith("imp-")
        again = httpx.post(f"{api_b}/templates/from-image", timeout=30,
                           json={**body, "name": "plain"}, headers={"X-API-Key": key})  # fmt: skip
        assert again.status_code == 409 and "already exists" in again.json()["message"]
