"""``HttpNodeClient``: the api's ``NodeClient``, ``TemplateBuilder`` and ``BuildRunner``
over the node API (docs/node-api.md), on any httpx transport.

One class for every deployment (Prefect's one client, two transports): ``hutch serve``
hands it a Unix socket in its home, a scale-out api a node's URL. It speaks the wire of
``shared.nodewire`` and the api's vocabulary of ``service/ports.py``, and translates errors
in ``nodes/errors.py`` only.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from hutch.api.nodes.errors import from_response, from_wire, transport_errors
from hutch.api.nodes.observe import ObservedTransport
from hutch.api.nodes.volumes import NodeVolumes
from hutch.api.service.node_status import NodeStatus, PoolFill
from hutch.api.service.ports import (
    BuildFailedError,
    BuildLogger,
    ImageImport,
    ImportedImage,
    ImportProgress,
    PlacedSandbox,
    ReconciledNode,
    ResumedSandbox,
    SandboxLogLine,
    SandboxMetrics,
    SandboxSpec,
    VolumeMountSpec,
)
from hutch.shared import nodewire as wire
from hutch.shared.egress import EgressPolicy
from hutch.shared.errors import HutchError, UnavailableError
from hutch.shared.ids import NodeID, SandboxID, TemplateID

_M = TypeVar("_M", bound=BaseModel)

#: Ordinary calls: a create waits for envd (``HUTCH_NODE_ENVD_READY_TIMEOUT_S``, 30 s by
#: default) and may boot cold, a snapshot copies a sandbox's files. Streams have no read
#: timeout (a build's RUN step may be silent for minutes).
DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=10.0)
_STREAM_TIMEOUT = httpx.Timeout(None, connect=10.0)


class HttpNodeClient:
    """One node over HTTP. Build with :meth:`connect` (it asks the node who it is)."""

    def __init__(self, http: httpx.AsyncClient, *, info: wire.NodeInfo) -> None:
        self._http = http
        self.info = info

    @classmethod
    async def connect(
        cls,
        base_url: str,
        *,
        token: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> HttpNodeClient:
        """A client of the node at ``base_url`` (over ``transport`` when given, e.g. a
        Unix socket); raises ``UnavailableError`` if it does not answer, and the node's
        error (``UnauthenticatedError`` for a wrong token) if it refuses."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Every call carries the request id and trace context (nodes/observe.py).
        observed = ObservedTransport(transport or httpx.AsyncHTTPTransport())
        http = httpx.AsyncClient(
            base_url=base_url, transport=observed, headers=headers, timeout=timeout
        )
        try:
            info = await _get_info(http)
        except BaseException:
            await http.aclose()
            raise
        return cls(http, info=info)

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    @property
    def node_id(self) -> NodeID:
        """See ``NodeClient.node_id``: the id the node answered with."""
        return NodeID(self.info.node_id)

    @property
    def volumes(self) -> NodeVolumes:
        """The node's local volumes (``/v1/volumes``), on this client's connections."""
        return NodeVolumes(self._http, node_id=self.node_id)

    # ---- plumbing ------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: BaseModel | None = None,
        params: Mapping[str, str] | None = None,
        answer: type[_M] | None = None,
        timeout: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> _M | None:
        what = f"{method} {path}"
        with transport_errors(what):
            response = await self._http.request(
                method,
                wire.PREFIX + path,
                content=body.model_dump_json() if body is not None else None,
                headers={"Content-Type": "application/json"} if body is not None else None,
                params=params,
                timeout=timeout,
            )
        if response.is_error:
            raise from_response(response, what=what)
        if answer is None:
            return None
        return answer.model_validate_json(response.content)

    async def _stream(self, path: str, body: BaseModel) -> AsyncIterator[wire.StreamEvent]:
        what = f"POST {path}"
        with transport_errors(what):
            async with self._http.stream(
                "POST", wire.PREFIX + path, content=body.model_dump_json(),
                headers={"Content-Type": "application/json", "Accept": wire.NDJSON},
                timeout=_STREAM_TIMEOUT,
            ) as response:  # fmt: skip
                if response.is_error:
                    await response.aread()
                    raise from_response(response, what=what)
                async for line in response.aiter_lines():
                    if line.strip():
                        yield wire.parse_event(line)

    # ---- NodeClient ------------------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> PlacedSandbox:
        """See ``NodeClient.create``."""
        out = await self._call(
            "POST",
            "/sandboxes",
            body=wire.CreateSandbox(
                sandbox_id=spec.sandbox_id,
                template=spec.template_id,
                cpu_count=spec.cpu_count,
                memory_mb=spec.memory_mb,
                disk_mb=spec.disk_mb,
                env_vars=dict(spec.env_vars),
                access_token=spec.envd_access_token,
                allow_internet=spec.allow_internet,
                egress=_egress(spec.egress) if spec.egress is not None else None,
                metadata=dict(spec.metadata),
                volume_mounts=_mounts(spec.volume_mounts),
                artifact_sources=list(spec.artifact_sources),
            ),
            answer=wire.Sandbox,
        )
        assert out is not None
        return self._placed(out)

    def _placed(self, sandbox: wire.Sandbox) -> PlacedSandbox:
        return PlacedSandbox(
            sandbox_id=SandboxID(sandbox.sandbox_id), node_id=self.node_id,
            address=sandbox.address,
        )  # fmt: skip

    async def kill(self, sandbox_id: SandboxID) -> None:
        """See ``NodeClient.kill``."""
        await self._call("DELETE", f"/sandboxes/{sandbox_id}")

    async def pause(self, sandbox_id: SandboxID, *, keep_memory: bool) -> bool:
        """See ``NodeClient.pause``."""
        out = await self._call(
            "POST", f"/sandboxes/{sandbox_id}/pause",
            body=wire.PauseSandbox(keep_memory=keep_memory), answer=wire.Paused,
        )  # fmt: skip
        assert out is not None
        return out.memory_kept

    async def resume(self, spec: SandboxSpec, *, keep_memory: bool) -> ResumedSandbox:
        """See ``NodeClient.resume``."""
        out = await self._call(
            "POST",
            f"/sandboxes/{spec.sandbox_id}/resume",
            body=wire.ResumeSandbox(
                keep_memory=keep_memory,
                env_vars=dict(spec.env_vars),
                access_token=spec.envd_access_token,
                volume_mounts=_mounts(spec.volume_mounts),
            ),
            answer=wire.Resumed,
        )
        assert out is not None
        return ResumedSandbox(placed=self._placed(out.sandbox), memory_kept=out.memory_kept)

    async def snapshot(self, sandbox_id: SandboxID, *, snapshot_id: TemplateID) -> None:
        """See ``NodeClient.snapshot``."""
        await self._call(
            "POST", f"/sandboxes/{sandbox_id}/snapshot",
            body=wire.SnapshotSandbox(snapshot_id=snapshot_id),
        )  # fmt: skip

    async def delete_snapshot(self, snapshot_id: TemplateID) -> None:
        """See ``NodeClient.delete_snapshot``."""
        await self._call("DELETE", f"/snapshots/{snapshot_id}")

    async def list_running(self) -> Sequence[SandboxID]:
        """See ``NodeClient.list_running``."""
        out = await self._call("GET", "/sandboxes", answer=wire.SandboxList)
        assert out is not None
        return [SandboxID(s.sandbox_id) for s in out.sandboxes]

    async def set_metadata(self, sandbox_id: SandboxID, metadata: Mapping[str, str]) -> None:
        """See ``NodeClient.set_metadata``."""
        await self._call(
            "PUT", f"/sandboxes/{sandbox_id}/metadata", body=wire.Metadata(metadata=dict(metadata))
        )

    async def set_network(self, sandbox_id: SandboxID, policy: EgressPolicy) -> None:
        """See ``NodeClient.set_network``."""
        await self._call("PUT", f"/sandboxes/{sandbox_id}/network", body=_egress(policy))

    async def metrics(
        self, sandbox_id: SandboxID, *, start: datetime | None, end: datetime | None
    ) -> Sequence[SandboxMetrics]:
        """See ``NodeClient.metrics``."""
        params = {}
        if start is not None:
            params["start"] = repr(start.timestamp())
        if end is not None:
            params["end"] = repr(end.timestamp())
        out = await self._call(
            "GET", f"/sandboxes/{sandbox_id}/metrics", params=params, answer=wire.MetricsList
        )
        assert out is not None
        return [
            SandboxMetrics(
                timestamp=datetime.fromtimestamp(s.timestamp, tz=UTC),
                cpu_count=s.cpu_count,
                cpu_used_pct=s.cpu_used_pct,
                mem_used=s.mem_used,
                mem_total=s.mem_total,
                mem_cache=s.mem_cache,
                disk_used=s.disk_used,
                disk_total=s.disk_total,
            )
            for s in out.samples
        ]

    async def logs(self, sandbox_id: SandboxID) -> Sequence[SandboxLogLine]:
        """See ``NodeClient.logs``."""
        out = await self._call("GET", f"/sandboxes/{sandbox_id}/logs", answer=wire.LogList)
        assert out is not None
        return [
            SandboxLogLine(
                timestamp=datetime.fromtimestamp(line.timestamp, tz=UTC),
                message=line.message,
                level=line.level,
                fields=dict(line.fields),
            )
            for line in out.lines
        ]

    async def reconcile(
        self, known: Sequence[SandboxID], *, paused: Sequence[SandboxID]
    ) -> ReconciledNode:
        """See ``NodeClient.reconcile``."""
        out = await self._call(
            "POST", "/reconcile", body=wire.Reconcile(known=list(known), paused=list(paused)),
            answer=wire.Reconciled,
        )  # fmt: skip
        assert out is not None
        return ReconciledNode(
            removed=tuple(SandboxID(s) for s in out.removed),
            adopted={
                SandboxID(s.sandbox_id): (self._placed(s), dict(s.metadata), s.paused)
                for s in out.adopted
            },
        )

    # ---- NodeStatusSource ------------------------------------------------------------------

    async def status(self) -> NodeStatus:
        """See ``NodeStatusSource.status``."""
        out = await self._call("GET", "/status", answer=wire.NodeStatus)
        assert out is not None
        return NodeStatus(
            node_id=out.node_id, runtime=out.runtime, max_sandboxes=out.max_sandboxes,
            running=out.running, paused=out.paused, host_cpu_count=out.host_cpu_count,
            host_memory_mb=out.host_memory_mb, allocated_cpu=out.allocated_cpu,
            allocated_memory_mb=out.allocated_memory_mb,
            pool=[PoolFill(template=p.template, target=p.target, ready=p.ready) for p in out.pool],
        )  # fmt: skip

    # ---- TemplateBuilder ---------------------------------------------------------------------

    async def import_image(
        self, request: ImageImport, *, progress: ImportProgress | None = None
    ) -> ImportedImage:
        """See ``TemplateBuilder.import_image``: progress as the node streams it."""
        body = wire.ImportImage(
            source=request.source, name=request.name, inject_envd=request.inject_envd,
            envd_path=request.envd_path, cpu_count=request.cpu_count,
            memory_mb=request.memory_mb, disk_mb=request.disk_mb, start_cmd=request.start_cmd,
            ready_cmd=request.ready_cmd,
        )  # fmt: skip
        async with contextlib.aclosing(self._stream("/templates/import", body)) as events:
            async for event in events:
                if isinstance(event, wire.ProgressEvent):
                    if progress is not None:
                        progress(event.stage, event.done, event.total)
                elif isinstance(event, wire.ImportedEvent):
                    return ImportedImage(
                        name=event.name, fingerprint=event.fingerprint,
                        cache_hit=event.cache_hit, envd_injected=event.envd_sha256 is not None,
                        envd_sha256=event.envd_sha256,
                    )  # fmt: skip
                else:
                    raise _outcome_error(event, "import")
        raise _cut_short("import")

    async def delete(self, name: str) -> None:
        """See ``TemplateBuilder.delete``."""
        await self._call("DELETE", f"/templates/{name}")

    async def fetch_artifact(self, name: str, sources: Sequence[str]) -> bool:
        """``POST /v1/artifacts/{name}/fetch``: the node holds ``name`` afterwards, fetched
        from the first of ``sources`` that serves it; whether it had to fetch it."""
        out = await self._call(
            "POST", f"/artifacts/{name}/fetch", body=wire.FetchArtifact(sources=list(sources)),
            answer=wire.FetchedArtifact, timeout=_STREAM_TIMEOUT,
        )  # fmt: skip
        assert out is not None
        return out.fetched

    # ---- BuildRunner -------------------------------------------------------------------------

    async def has_files(self, files_hash: str) -> bool:
        """See ``BuildRunner.has_files``."""
        out = await self._call("GET", f"/build-files/{files_hash}", answer=wire.BuildFiles)
        assert out is not None
        return out.present

    async def store_files(self, files_hash: str, chunks: AsyncIterator[bytes]) -> None:
        """See ``BuildRunner.store_files``: the archive streamed to the node."""
        what = f"PUT /build-files/{files_hash}"
        with transport_errors(what):
            response = await self._http.put(
                f"{wire.PREFIX}/build-files/{files_hash}", content=chunks,
                timeout=_STREAM_TIMEOUT,
            )  # fmt: skip
        if response.is_error:
            raise from_response(response, what=what)

    async def run_build(
        self,
        name: str,
        start: Mapping[str, object],
        *,
        cpu_count: float,
        memory_mb: int,
        log: BuildLogger,
        build_id: str,
    ) -> None:
        """See ``BuildRunner.run_build``: log lines as the node streams them."""
        body = wire.RunBuild(
            name=name, build_id=build_id, start=_json_object(start), cpu_count=cpu_count,
            memory_mb=memory_mb,
        )  # fmt: skip
        async with contextlib.aclosing(self._stream("/builds", body)) as events:
            async for event in events:
                if isinstance(event, wire.BuildLogEvent):
                    log(event.level, event.message, event.step)
                elif isinstance(event, wire.BuildDoneEvent):
                    return
                elif isinstance(event, wire.BuildFailedEvent):
                    raise BuildFailedError(event.message, step=event.step)
                else:
                    raise _outcome_error(event, "build")
        raise _cut_short("build")


async def _get_info(http: httpx.AsyncClient) -> wire.NodeInfo:
    what = "GET /node"
    with transport_errors(what):
        response = await http.get(f"{wire.PREFIX}/node")
    if response.is_error:
        raise from_response(response, what=what)
    info = wire.NodeInfo.model_validate_json(response.content)
    if info.api_version != wire.API_VERSION:
        raise UnavailableError(
            f"node {info.node_id} speaks node API {info.api_version}, not {wire.API_VERSION}"
        )
    return info


def _mounts(mounts: Sequence[VolumeMountSpec]) -> list[wire.VolumeMount]:
    return [wire.VolumeMount(volume_id=m.volume_id, backend=m.backend, path=m.path) for m in mounts]


def _json_object(value: Mapping[str, object]) -> dict[str, Any]:
    # The api hands in what it parsed from JSON; a round trip proves it still is JSON.
    loaded: dict[str, Any] = json.loads(json.dumps(dict(value)))
    return loaded


def _outcome_error(event: wire.StreamEvent, what: str) -> HutchError:
    if isinstance(event, wire.ErrorEvent):
        return from_wire(event.error)
    return HutchError(f"{what}: unexpected {event.type!r} event from the node")


def _cut_short(what: str) -> UnavailableError:
    return UnavailableError(f"{what}: the node's stream ended without an outcome")


def _egress(policy: EgressPolicy) -> wire.Egress:
    return wire.Egress(
        allow_out=list(policy.allow_out),
        deny_out=list(policy.deny_out),
        dns_servers=list(policy.dns_servers) if policy.dns_servers is not None else None,
    )
