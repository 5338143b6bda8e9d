"""The ``filesystem.Filesystem`` Connect service: wire messages to domain calls and back.

No logic lives here: paths are resolved by ``Envd.path``, the work is done by
``filesystem.ops`` (in a worker thread, since it blocks) and ``filesystem.watcher``, and
domain errors become Connect codes in ``rpc.errors``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from protobuf import Oneof
from protobuf.wkt import Timestamp

from hutch.envd.context import Envd
from hutch.envd.filesystem import ops
from hutch.envd.filesystem.entries import Entry, EntryType
from hutch.envd.filesystem.watcher import EventKind, WatchEvent
from hutch.envd.rpc.context import deadline_s, keepalive_interval, request_user
from hutch.envd.rpc.disconnect import current_disconnect
from hutch.shared.errors import DeadlineExceededError
from hutch.shared.proto.filesystem import filesystem_pb as pb

_FILE_TYPES = {
    EntryType.FILE: pb.FileType.FILE,
    EntryType.DIRECTORY: pb.FileType.DIRECTORY,
    EntryType.SYMLINK: pb.FileType.SYMLINK,
    EntryType.OTHER: pb.FileType.UNSPECIFIED,
}

_EVENT_TYPES = {
    EventKind.CREATE: pb.EventType.CREATE,
    EventKind.WRITE: pb.EventType.WRITE,
    EventKind.REMOVE: pb.EventType.REMOVE,
    EventKind.RENAME: pb.EventType.RENAME,
    EventKind.CHMOD: pb.EventType.CHMOD,
}


def entry_info(entry: Entry) -> pb.EntryInfo:
    """The wire ``EntryInfo`` of a domain ``Entry``."""
    seconds, nanos = divmod(entry.modified_time_ns, 1_000_000_000)
    return pb.EntryInfo(
        name=entry.name,
        type=_FILE_TYPES[entry.type],
        path=entry.path,
        size=entry.size,
        mode=entry.mode,
        permissions=entry.permissions,
        owner=entry.owner,
        group=entry.group,
        modified_time=Timestamp(seconds=seconds, nanos=nanos),
        symlink_target=entry.symlink_target,
        metadata=dict(entry.metadata),
        is_symlink=entry.is_symlink,
    )


def filesystem_event(event: WatchEvent) -> pb.FilesystemEvent:
    """The wire ``FilesystemEvent`` of a domain ``WatchEvent``."""
    return pb.FilesystemEvent(
        name=event.name,
        type=_EVENT_TYPES[event.kind],
        entry=entry_info(event.entry) if event.entry is not None else None,
    )


_START = pb.WatchDirResponse(event=Oneof("start", pb.WatchDirResponse.StartEvent()))
_KEEPALIVE = pb.WatchDirResponse(event=Oneof("keepalive", pb.WatchDirResponse.KeepAlive()))


class FilesystemService:
    """Implements ``filesystem.Filesystem`` (see ``filesystem_connect.Filesystem``)."""

    def __init__(self, envd: Envd) -> None:
        self._envd = envd

    async def stat(self, request: pb.StatRequest, ctx: Any) -> pb.StatResponse:
        user = request_user(self._envd, ctx)
        path = self._envd.path(request.path, user)
        entry = await asyncio.to_thread(ops.stat_entry, path, user=user)
        return pb.StatResponse(entry=entry_info(entry))

    async def list_dir(self, request: pb.ListDirRequest, ctx: Any) -> pb.ListDirResponse:
        user = request_user(self._envd, ctx)
        path = self._envd.path(request.path, user)
        entries = await asyncio.to_thread(ops.list_dir, path, user=user, depth=request.depth)
        return pb.ListDirResponse(entries=[entry_info(e) for e in entries])

    async def make_dir(self, request: pb.MakeDirRequest, ctx: Any) -> pb.MakeDirResponse:
        user = request_user(self._envd, ctx)
        path = self._envd.path(request.path, user)
        entry = await asyncio.to_thread(ops.make_dir, path, user=user)
        return pb.MakeDirResponse(entry=entry_info(entry))

    async def move(self, request: pb.MoveRequest, ctx: Any) -> pb.MoveResponse:
        user = request_user(self._envd, ctx)
        source = self._envd.path(request.source, user)
        destination = self._envd.path(request.destination, user)
        entry = await asyncio.to_thread(ops.move, source, destination, user=user)
        return pb.MoveResponse(entry=entry_info(entry))

    async def remove(self, request: pb.RemoveRequest, ctx: Any) -> pb.RemoveResponse:
        user = request_user(self._envd, ctx)
        path = self._envd.path(request.path, user)
        await asyncio.to_thread(ops.remove, path, user=user)
        return pb.RemoveResponse()

    async def watch_dir(
        self, request: pb.WatchDirRequest, ctx: Any
    ) -> AsyncIterator[pb.WatchDirResponse]:
        """Stream events: ``start`` at once, then events, keepalives when idle.

        Ends when the client goes away, the watched directory is deleted, or the call's
        deadline (``Connect-Timeout-Ms``) passes (deadline_exceeded, as E2B's envd).
        """
        user = request_user(self._envd, ctx)
        path = self._envd.path(request.path, user)
        watch = self._envd.watchers.open(
            path,
            recursive=request.recursive,
            include_entry=request.include_entry,
            allow_network_mounts=request.allow_network_mounts,
        )
        try:
            yield _START
            disconnect = current_disconnect()
            gone = disconnect.event if disconnect is not None else None
            interval = keepalive_interval(ctx)
            next_keepalive = time.monotonic() + interval
            while True:
                timeout = max(0.0, next_keepalive - time.monotonic())
                remaining = deadline_s(ctx)
                if remaining is not None:
                    if remaining <= 0:
                        raise DeadlineExceededError("watch deadline exceeded")
                    timeout = min(timeout, remaining)
                await watch.wait(timeout, cancel=gone)
                if gone is not None and gone.is_set():
                    return
                events = watch.drain()
                for event in events:
                    yield pb.WatchDirResponse(event=Oneof("filesystem", filesystem_event(event)))
                if events:
                    next_keepalive = time.monotonic() + interval
                elif watch.closed:
                    return  # the watched directory is gone
                elif time.monotonic() >= next_keepalive:
                    yield _KEEPALIVE
                    next_keepalive = time.monotonic() + interval
        finally:
            self._envd.watchers.release(watch)

    async def create_watcher(
        self, request: pb.CreateWatcherRequest, ctx: Any
    ) -> pb.CreateWatcherResponse:
        user = request_user(self._envd, ctx)
        path = self._envd.path(request.path, user)
        watcher_id = self._envd.watchers.create(
            path,
            recursive=request.recursive,
            include_entry=request.include_entry,
            allow_network_mounts=request.allow_network_mounts,
        )
        return pb.CreateWatcherResponse(watcher_id=watcher_id)

    async def get_watcher_events(
        self, request: pb.GetWatcherEventsRequest, ctx: Any
    ) -> pb.GetWatcherEventsResponse:
        request_user(self._envd, ctx)  # authenticates, like every call
        events = self._envd.watchers.events(request.watcher_id)
        return pb.GetWatcherEventsResponse(events=[filesystem_event(e) for e in events])

    async def remove_watcher(
        self, request: pb.RemoveWatcherRequest, ctx: Any
    ) -> pb.RemoveWatcherResponse:
        request_user(self._envd, ctx)
        self._envd.watchers.remove(request.watcher_id)
        return pb.RemoveWatcherResponse()
