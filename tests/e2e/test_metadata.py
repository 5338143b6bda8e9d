"""Metadata PATCH through a real ``hutch serve`` and node, and ``hutch sandbox metadata``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest
from e2b import Sandbox, SandboxQuery

from .serveproc import Serve

pytestmark = pytest.mark.root


def _node_record(serve: Serve, sandbox_id: str) -> dict[str, object]:
    path = serve.home / "sandboxes" / sandbox_id / "sandbox.json"
    return json.loads(path.read_text())


def _patch(serve: Serve, sandbox_id: str, body: object) -> httpx.Response:
    return httpx.patch(
        f"{serve.api_url}/sandboxes/{sandbox_id}/metadata",
        json=body,
        headers={"X-API-Key": os.environ["E2B_API_KEY"]},
        timeout=30,
    )


@pytest.mark.compat("metadata")
def test_patch_reaches_store_and_node(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", metadata={"user": "u1", "tmp": "x"}, timeout=120)
    try:
        assert _node_record(serve, sbx.sandbox_id)["metadata"] == {"user": "u1", "tmp": "x"}
        r = _patch(serve, sbx.sandbox_id, {"task": "t1", "tmp": None})
        assert r.status_code == 200 and r.json() == {"user": "u1", "task": "t1"}
        assert sbx.get_info().metadata == {"user": "u1", "task": "t1"}
        assert _node_record(serve, sbx.sandbox_id)["metadata"] == {"user": "u1", "task": "t1"}
        listed = Sandbox.list(query=SandboxQuery(metadata={"task": "t1"})).next_items()
        assert [s.sandbox_id for s in listed] == [sbx.sandbox_id]
    finally:
        sbx.kill()


def test_cli_sets_unsets_and_shows(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", metadata={"a": "1", "b": "2"}, timeout=120)
    port = str(serve.api_port)
    try:
        out = serve.hutch(
            "sandbox", "metadata", sbx.sandbox_id, "--set", "c=x=y", "--unset", "a",
            "--api-port", port,
        )  # fmt: skip
        assert json.loads(out) == {"b": "2", "c": "x=y"}
        assert sbx.get_info().metadata == {"b": "2", "c": "x=y"}
        shown = serve.hutch("sandbox", "metadata", sbx.sandbox_id, "--api-port", port)
        assert json.loads(shown) == {"b": "2", "c": "x=y"}
        # Without E2B_API_KEY: the home's CLI key (default team) is made and reused.
        env = {k: v for k, v in serve.env.items() if k != "E2B_API_KEY"}
        env["HUTCH_API_PORT"] = port
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-m", "hutch", "sandbox", "metadata", sbx.sandbox_id,
                 "--set", "d=4", "--home", str(serve.home)],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            assert json.loads(done.stdout)["d"] == "4"
        assert (serve.home / "cli.key").stat().st_mode & 0o777 == 0o600
        failed = subprocess.run(
            [sys.executable, "-m", "hutch", "sandbox", "metadata", "iunknown00000000000",
             "--set", "a=1", "--home", str(serve.home)],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert failed.returncode == 1 and "404" in failed.stderr
    finally:
        sbx.kill()


def test_restart_gives_the_node_the_stores_metadata(serve: Serve) -> None:
    """A crash between a patch's store and node steps is repaired by reconciliation."""
    sbx = Sandbox.create("busybox", metadata={"k": "store"}, timeout=300)
    try:
        serve.stop(signal.SIGKILL)
        record_path = serve.home / "sandboxes" / sbx.sandbox_id / "sandbox.json"
        record = json.loads(record_path.read_text())
        record["metadata"] = {"k": "stale"}
        record_path.write_text(json.dumps(record))
        serve.start()
        assert _node_record(serve, sbx.sandbox_id)["metadata"] == {"k": "store"}
        assert sbx.get_info().metadata == {"k": "store"}
    finally:
        sbx.kill()
