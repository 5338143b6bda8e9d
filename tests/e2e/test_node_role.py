"""``hutch node``: the node role alone in its own process, driven over the node API by the
api's real ``HttpNodeClient`` (TCP on loopback, the cluster token from the home's file).

Proves the wire outside ``hutch serve``: a busybox sandbox is created (envd answers at its
private address), listed, gets new metadata, is sampled and killed; a wrong token is 401
raised as ``UnauthenticatedError``; a template the node lacks, with no peer named to fetch it
from, crosses as ``ArtifactUnavailableError`` (a refusal: the api tries another node, ADR 0029).
The node's host names are its own (``hsn<slot>``), so it runs beside the session's serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hutch.api.nodes.http_client import HttpNodeClient
from hutch.api.service.ports import SandboxSpec
from hutch.node.templates.busybox import build_busybox
from hutch.shared.errors import ArtifactUnavailableError, NotFoundError, UnauthenticatedError
from hutch.shared.ids import SandboxID, TeamID, TemplateID

from .serveproc import SLOT, HostNames, Serve, free_port, nodehelpers

NODE_NAMES = HostNames(
    bridge=f"hsn{SLOT}",
    subnet=f"10.219.{33 + SLOT}.0/24",
    netns_prefix=f"hsn{SLOT}-",
    veth_prefix=f"hz{SLOT}",
    nft_table=f"hsn{SLOT}",
    cgroup_parent=f"hsn{SLOT}-{os.getpid()}",
    extra_env={
        "HUTCH_NODE_ENVD_READY_TIMEOUT_S": "60",
        "HUTCH_NODE_POOL_SIZE": "",
        "HUTCH_NODE_SHARED_TEMPLATES_DIR": "",
        "HUTCH_NODE_METRICS_INTERVAL_S": "1",
    },
)
TOKEN = "e2e-cluster-token-0123456789"


@dataclass
class NodeProcess:
    url: str
    home: Path
    proc: subprocess.Popen[bytes]
    metrics_url: str = ""

    def log_tail(self) -> str:
        return (self.home / "node.log").read_text(errors="replace")[-3000:]


@pytest.fixture
def node_process(tmp_path: Path) -> Iterator[NodeProcess]:
    home = tmp_path / "node-home"
    build_busybox(home / "templates")
    (home / "node-api.token").write_text(TOKEN + "\n")
    envd = nodehelpers.cached_envd_bundle()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(NODE_NAMES.env(), HUTCH_NODE_ENVD_BUNDLE_DIR=str(envd))
    metrics_port = free_port()  # docs/observability.md: the role's own /metrics, JSON logs
    env.update(HUTCH_METRICS_PORT=str(metrics_port), HUTCH_LOG_FORMAT="json")
    with open(home / "node.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hutch", "node", "--home", str(home), "--listen",
             f"127.0.0.1:{port}", "--node-id", "node-e2e"],
            env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    node = NodeProcess(url=f"http://127.0.0.1:{port}", home=home, proc=proc,
                       metrics_url=f"http://127.0.0.1:{metrics_port}/metrics")  # fmt: skip
    helper = Serve(home=home, envd_bundle=envd, names=NODE_NAMES)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"hutch node exited: {node.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(
                    f"{node.url}/v1/node", headers={"Authorization": f"Bearer {TOKEN}"}
                )
                if answer.status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"hutch node did not answer: {node.log_tail()}")
            time.sleep(0.05)
        yield node
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        helper.destroy_everything()
        leaks = helper.leaks()
    assert code == 0, node.log_tail()
    assert leaks.total() == 0, leaks


def _spec(sid: str, template: str = "busybox") -> SandboxSpec:
    return SandboxSpec(
        sandbox_id=SandboxID(sid), team_id=TeamID("t"), template_id=TemplateID(template),
        cpu_count=1, memory_mb=128, disk_mb=512, metadata={"owner": "e2e"},
        envd_access_token=None,
    )  # fmt: skip


def test_node_role_serves_the_node_api_to_http_node_client(node_process: NodeProcess) -> None:
    async def drive() -> None:
        with pytest.raises(UnauthenticatedError, match="wrong cluster token"):
            await HttpNodeClient.connect(node_process.url, token="not-the-token")
        client = await HttpNodeClient.connect(node_process.url, token=TOKEN)
        try:
            assert client.node_id == "node-e2e"
            assert client.info.api_version == "v1" and client.info.runtime == "runc"
            with pytest.raises(ArtifactUnavailableError, match="nosuch"):
                await client.create(_spec("nodee2e0unknown", template="nosuch"))

            placed = await client.create(_spec("nodee2e0sandbox1"))
            assert placed.node_id == "node-e2e"
            assert placed.address.startswith(f"10.219.{33 + SLOT}.")
            async with httpx.AsyncClient() as envd:  # the sandbox's own envd, at its address
                health = await envd.get(f"http://{placed.address}:49983/health")
            assert health.status_code == 204
            assert await client.list_running() == ["nodee2e0sandbox1"]

            await client.set_metadata(SandboxID("nodee2e0sandbox1"), {"owner": "e2e", "k": "v"})
            record = node_process.home / "sandboxes" / "nodee2e0sandbox1" / "sandbox.json"
            assert json.loads(record.read_text())["metadata"] == {"owner": "e2e", "k": "v"}

            samples = []
            for _ in range(300):  # the sampler ticks every second here
                samples = list(
                    await client.metrics(SandboxID("nodee2e0sandbox1"), start=None, end=None)
                )
                if samples:
                    break
                await asyncio.sleep(0.1)
            assert samples and samples[0].mem_total == 128 << 20

            await client.kill(SandboxID("nodee2e0sandbox1"))
            assert await client.list_running() == []
            assert not record.exists()
            with pytest.raises(NotFoundError):
                await client.metrics(SandboxID("nodee2e0sandbox1"), start=None, end=None)
        finally:
            await client.aclose()

    asyncio.run(drive())
    # The node role alone serves its metrics and logs JSON lines that name the sandbox.
    families = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(httpx.get(node_process.metrics_url).text)
        for sample in family.samples
    }
    created = ("hutch_node_requests_total",
               (("method", "POST"), ("route", "/v1/sandboxes"), ("status", "201")))  # fmt: skip
    assert families[created] == 1
    assert families[("hutch_node_sandboxes", (("state", "running"),))] == 0
    assert families[("hutch_node_runtime_call_duration_seconds_count",
                     (("call", "create"), ("outcome", "ok")))] >= 1  # fmt: skip
    lines = [json.loads(line) for line in node_process.log_tail().splitlines()
             if line.startswith("{")]  # fmt: skip
    mine = [line for line in lines if line.get("sandbox_id") == "nodee2e0sandbox1"]
    assert mine and all(line["node_id"] == "node-e2e" for line in mine)
