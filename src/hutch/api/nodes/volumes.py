"""A node's local volumes over the node API (``/v1/volumes``, ADR 0034), for the api.

:class:`NodeVolumes` is a ``VolumeBackend`` whose every call is one node API request: the
content API of a local volume is forwarded through it, bodies streamed both ways (an upload
is sent as it arrives, a download passed on as the node sends it; nothing is buffered
whole). :class:`ClusterVolumeHosts` chooses the node of a new volume and hands out the
``NodeVolumes`` of a volume's node (``VolumeHosts`` of ``service/volumes.py``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel

from hutch.api.nodes.errors import from_response, transport_errors
from hutch.api.nodes_model import Node, NodeStatus
from hutch.shared import nodewire as wire
from hutch.shared.errors import NotFoundError, UnavailableError
from hutch.shared.ids import NodeID
from hutch.volumes.base import EntryStat, FileContent, Owner, Usage, VolumeBackend

_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")
#: Uploads and downloads may be long and slow: no read/write timeout, only connect.
_FILE_TIMEOUT = httpx.Timeout(None, connect=10.0)


def entry_in(entry: wire.VolumeEntry) -> EntryStat:
    """An entry off the wire."""
    return EntryStat(
        name=entry.name, type=entry.type,  # type: ignore[arg-type]  # the node sent a valid one
        path=entry.path, size=entry.size, mode=entry.mode, uid=entry.uid, gid=entry.gid,
        atime=datetime.fromtimestamp(entry.atime, tz=UTC),
        mtime=datetime.fromtimestamp(entry.mtime, tz=UTC),
        ctime=datetime.fromtimestamp(entry.ctime, tz=UTC),
        target=entry.target, metadata=dict(entry.metadata),
    )  # fmt: skip


def _owner(owner: Owner) -> dict[str, str]:
    return {
        k: str(v) for k, v in (("uid", owner.uid), ("gid", owner.gid), ("mode", owner.mode))
        if v is not None
    }  # fmt: skip


class _RemoteFile:
    """A download opened on the node: its size, then its bytes as the node sends them."""

    def __init__(self, volumes: NodeVolumes, response: httpx.Response, params: dict[str, str]):
        self._volumes = volumes
        self._response: httpx.Response | None = response
        self._params = params
        self.size = int(response.headers[wire.VOLUME_FILE_SIZE_HEADER])

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        response = self._response
        if response is None or (start, end) != (0, self.size):
            # A part: ask for exactly that part (the whole-file answer is dropped unread).
            await self.aclose()
            response = await self._volumes.open_stream(
                {**self._params, "start": str(start), "end": str(end)}
            )
            self._response = response
        with transport_errors("GET volume file"):
            async for chunk in response.aiter_bytes():
                yield chunk

    async def aclose(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()


class NodeVolumes:
    """The local volumes of one node, over its node API (see the module docstring)."""

    name = "local"
    mountable = True

    def __init__(self, http: httpx.AsyncClient, *, node_id: NodeID) -> None:
        self._http = http
        self.node_id = node_id

    async def _call(
        self,
        method: str,
        path: str,
        *,
        answer: type[_M] | None = None,
        body: BaseModel | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        what = f"{method} /volumes{path}"
        with transport_errors(what):
            response = await self._http.request(
                method, f"{wire.PREFIX}/volumes{path}",
                content=body.model_dump_json() if body is not None else None,
                headers={"Content-Type": "application/json"} if body is not None else None,
                params=params,
            )  # fmt: skip
        if response.is_error:
            raise from_response(response, what=what)
        return answer.model_validate_json(response.content) if answer is not None else None

    async def open_stream(self, params: Mapping[str, str]) -> httpx.Response:
        """``GET .../file`` with its body still to read (the caller closes it)."""
        vid = params["volume"]
        query = {k: v for k, v in params.items() if k != "volume"}
        what = f"GET /volumes/{vid}/file"
        request = self._http.build_request(
            "GET", f"{wire.PREFIX}/volumes/{vid}/file", params=query, timeout=_FILE_TIMEOUT
        )
        with transport_errors(what):
            response = await self._http.send(request, stream=True)
        if response.is_error:
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise from_response(response, what=what)
        return response

    # -- lifecycle --------------------------------------------------------------------------

    async def capacity_bytes(self) -> int:
        out: wire.VolumeCapacity = await self._call("GET", "", answer=wire.VolumeCapacity)
        return out.capacity_bytes

    async def create(self, volume_id: str, *, quota_bytes: int) -> None:
        await self._call(
            "POST", "", body=wire.CreateVolume(volume_id=volume_id, quota_bytes=quota_bytes)
        )

    async def delete(self, volume_id: str) -> None:
        await self._call("DELETE", f"/{volume_id}")

    async def usage(self, volume_id: str) -> Usage:
        out: wire.VolumeUsage = await self._call(
            "GET", f"/{volume_id}/usage", answer=wire.VolumeUsage
        )
        return Usage(used_bytes=out.used_bytes, total_bytes=out.total_bytes)

    # -- content ----------------------------------------------------------------------------

    async def _entry(self, method: str, path: str, **kwargs: Any) -> EntryStat:
        return entry_in(await self._call(method, path, answer=wire.VolumeEntry, **kwargs))

    async def stat(self, volume_id: str, rel: str) -> EntryStat:
        return await self._entry("GET", f"/{volume_id}/entry", params={"path": rel})

    async def list_dir(self, volume_id: str, rel: str, *, depth: int) -> list[EntryStat]:
        out: wire.VolumeEntries = await self._call(
            "GET", f"/{volume_id}/dir", answer=wire.VolumeEntries,
            params={"path": rel, "depth": str(depth)},
        )  # fmt: skip
        return [entry_in(e) for e in out.entries]

    async def make_dir(self, volume_id: str, rel: str, *, owner: Owner, parents: bool) -> EntryStat:
        params = {"path": rel, "parents": "true" if parents else "false", **_owner(owner)}
        return await self._entry("POST", f"/{volume_id}/dir", params=params)

    async def write_file(
        self,
        volume_id: str,
        rel: str,
        chunks: AsyncIterable[bytes],
        *,
        owner: Owner,
        metadata: Mapping[str, str],
    ) -> EntryStat:
        what = f"PUT /volumes/{volume_id}/file"
        headers = {"Content-Type": "application/octet-stream"}
        if metadata:
            headers[wire.VOLUME_METADATA_HEADER] = json.dumps(dict(metadata))
        with transport_errors(what):
            response = await self._http.put(
                f"{wire.PREFIX}/volumes/{volume_id}/file", content=_iterate(chunks),
                params={"path": rel, **_owner(owner)}, headers=headers, timeout=_FILE_TIMEOUT,
            )  # fmt: skip
        if response.is_error:
            raise from_response(response, what=what)
        return entry_in(wire.VolumeEntry.model_validate_json(response.content))

    async def open_file(self, volume_id: str, rel: str) -> FileContent:
        params = {"volume": volume_id, "path": rel}
        return _RemoteFile(self, await self.open_stream(params), params)

    async def remove(self, volume_id: str, rel: str) -> None:
        await self._call("DELETE", f"/{volume_id}/entry", params={"path": rel})

    async def move(self, volume_id: str, src: str, dst: str) -> EntryStat:
        return await self._entry(
            "POST", f"/{volume_id}/move", body=wire.MoveVolumeEntry(src=src, dst=dst)
        )

    async def set_attrs(self, volume_id: str, rel: str, *, owner: Owner) -> EntryStat:
        return await self._entry(
            "PATCH", f"/{volume_id}/entry", params={"path": rel, **_owner(owner)}
        )

    async def host_path(self, volume_id: str) -> str:
        raise UnavailableError(f"volume {volume_id}: host paths are the node's own")

    async def aclose(self) -> None:
        """Nothing: the connections are the node client's."""


async def _iterate(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if chunk:
            yield chunk


class _VolumeNodeClient(Protocol):
    @property
    def volumes(self) -> NodeVolumes: ...


class _Clients(Protocol):
    async def client(self, node_id: NodeID) -> Any: ...
    async def forget(self, node_id: NodeID) -> None: ...


class _Forgetting:
    """A node's ``NodeVolumes`` that drops the node's client when the node does not
    answer, so the next call reads the node's row again (as ``NodeRouter`` does)."""

    name = "local"
    mountable = True

    def __init__(self, inner: NodeVolumes, forget: Callable[[], Awaitable[None]]) -> None:
        self._inner = inner
        self._forget = forget

    def __getattr__(self, attr: str) -> Any:
        method = getattr(self._inner, attr)

        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            except UnavailableError:
                await self._forget()
                raise

        return call


class ClusterVolumeHosts:
    """``VolumeHosts`` of an api with membership: new volumes go to the ready node with the
    most free disk; a volume's calls go to its node through the registry's client."""

    def __init__(
        self,
        *,
        clients: _Clients,
        list_nodes: Callable[[], Awaitable[list[Node]]],
        get_node: Callable[[NodeID], Awaitable[Node]],
    ) -> None:
        self._clients = clients
        self._list_nodes = list_nodes
        self._get_node = get_node

    async def choose(self, *, quota_bytes: int) -> NodeID:
        """The ready (not draining, not lost) node with the most free disk."""
        ready = [n for n in await self._list_nodes() if n.status is NodeStatus.READY]
        if not ready:
            raise UnavailableError(
                "no ready node to hold a new local volume",
                public_message="No node is ready to hold a new local volume; retry later",
                error_code="volume_node_unavailable",
            )

        def free(node: Node) -> int:
            return node.capacity.disk_mb - node.usage.disk_used_mb

        return min(ready, key=lambda n: (-free(n), n.id)).id

    async def status_of(self, node_id: NodeID) -> NodeStatus | None:
        """The node's status (None: not in the nodes table); one row read."""
        try:
            return (await self._get_node(node_id)).status
        except NotFoundError:
            return None

    async def on(self, node_id: NodeID) -> VolumeBackend:
        """The node's volumes; ``UnavailableError`` when it is lost, gone or unreachable."""
        status = await self.status_of(node_id)
        if status is None or status is NodeStatus.LOST:
            raise UnavailableError(f"node {node_id} is {'lost' if status else 'not registered'}")
        try:
            client: _VolumeNodeClient = await self._clients.client(node_id)
        except UnavailableError:
            await self._clients.forget(node_id)
            raise

        async def forget() -> None:
            await self._clients.forget(node_id)

        return _Forgetting(client.volumes, forget)  # type: ignore[return-value]
