"""Directory watches on inotify, read on the event loop (``loop.add_reader``), no threads.

One ``DirWatch`` owns one inotify instance. Event kinds follow E2B's envd, which uses
fsnotify on Linux:

* IN_CREATE, IN_MOVED_TO  -> CREATE (a rename *into* the directory looks like a creation)
* IN_MODIFY               -> WRITE (one per write(2), as fsnotify; IN_CLOSE_WRITE would
  double every write)
* IN_DELETE               -> REMOVE
* IN_MOVED_FROM           -> RENAME (the old name; the new one arrives as CREATE)
* IN_ATTRIB               -> CHMOD

envd's own uploads (a temporary file renamed into place, ``writer.py``) are shown as E2B's
in-place writes: temporary names never appear, and the rename shows the events E2B's envd
causes for the same write (``e2b_events``, from what the writer noted in ``Publications``).

``recursive`` watches every subdirectory (symlinks are not followed) and adds watches for
directories as they appear; entries already inside a directory that appears (``mkdir -p``,
a tree moved in) are reported as CREATE, since they were made before its watch existed, so
an entry may occasionally be reported twice. When the watched directory itself is deleted,
the watch ends. The ``WatcherManager`` owns every live watch: the polling watchers of the
sync SDK by id, and the streaming ones while their stream lasts; ``close()`` ends them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import posixpath
import secrets
import stat
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from inotify_simple import INotify

from hutch.envd.filesystem.entries import Entry, find_entry
from hutch.envd.filesystem.publications import Publication, Publications, is_temp_name
from hutch.shared.errors import (
    HutchError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    from_os_error,
)

log = logging.getLogger("hutch.envd")

# inotify(7) masks.
IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000

_MASK = IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
_MASK |= IN_DELETE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW

#: Events kept for a client that does not collect them; older ones are dropped beyond this.
MAX_BUFFERED_EVENTS = 10_000

#: Renames of temporary files awaiting their other half, and uploads already shown, per watch.
_MAX_REMEMBERED = 1024

#: Filesystem types events cannot be trusted on (E2B: NFS, CIFS/SMB, FUSE; plus kin).
_NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "9p", "afs"}


class EventKind(StrEnum):
    """What happened to an entry (E2B's ``EventType``)."""

    CREATE = "create"
    WRITE = "write"
    REMOVE = "remove"
    RENAME = "rename"
    CHMOD = "chmod"


@dataclass(frozen=True, kw_only=True)
class WatchEvent:
    """One change under a watched directory; ``name`` is relative to it."""

    name: str
    kind: EventKind
    entry: Entry | None = None


def _kinds(mask: int) -> list[EventKind]:
    # Same order as E2B's envd: create, rename, chmod, write, remove.
    kinds = []
    if mask & (IN_CREATE | IN_MOVED_TO):
        kinds.append(EventKind.CREATE)
    if mask & IN_MOVED_FROM:
        kinds.append(EventKind.RENAME)
    if mask & IN_ATTRIB:
        kinds.append(EventKind.CHMOD)
    if mask & IN_MODIFY:
        kinds.append(EventKind.WRITE)
    if mask & IN_DELETE:
        kinds.append(EventKind.REMOVE)
    return kinds


def e2b_events(publication: Publication | None) -> list[EventKind]:
    """What E2B's envd shows for the write that ``publication`` records (``publications.py``).

    New file: CREATE, CHMOD (chown), WRITE (unless empty), CHMOD (metadata). Replaced file:
    CHMOD (chown), WRITE (truncate and data), CHMOD (metadata set or cleared). No record:
    a new, non-empty file without metadata.
    """
    if publication is None:
        return [EventKind.CREATE, EventKind.CHMOD, EventKind.WRITE]
    if publication.replaced:
        kinds = [EventKind.CHMOD, EventKind.WRITE]
    else:
        kinds = [EventKind.CREATE, EventKind.CHMOD]
        if publication.wrote:
            kinds.append(EventKind.WRITE)
    if publication.metadata:
        kinds.append(EventKind.CHMOD)
    return kinds


def _remember(memory: OrderedDict, key: object, value: object) -> None:
    memory[key] = value
    while len(memory) > _MAX_REMEMBERED:
        memory.popitem(last=False)


def _unescape_mount(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def filesystem_type(path: str, *, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem ``path`` (a real path) is on, from ``/proc/self/mountinfo``."""
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
                mountinfo = f.read()
        except OSError:
            return None
    best, best_type = "", None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right:
            continue
        mount_point = _unescape_mount(fields[4])
        inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        # Later lines are mounted on top of earlier ones: >= lets them win.
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, right.split()[0]
    return best_type


def is_network_filesystem(fs_type: str | None) -> bool:
    """Whether inotify events on ``fs_type`` are unreliable (remote or FUSE)."""
    if fs_type is None:
        return False
    return fs_type in _NETWORK_FS or fs_type.startswith(("fuse", "nfs"))


def check_watchable(path: str, *, allow_network_mounts: bool) -> str:
    """Validate a watch target; returns its real path.

    ``NotFoundError`` when missing, ``InvalidArgumentError`` when not a directory or on a
    network filesystem without ``allow_network_mounts``.
    """
    try:
        real = os.path.realpath(path, strict=True)
        st = os.stat(real)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidArgumentError(f"{path}: cyclic symlink") from exc
        if exc.errno == errno.ENOENT:
            raise NotFoundError(f"path {path} not found") from exc
        raise from_os_error(exc, path) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidArgumentError(f"path {path} is not a directory")
    if not allow_network_mounts:
        fs_type = filesystem_type(real)
        if is_network_filesystem(fs_type):
            raise InvalidArgumentError(
                f"cannot watch path on network filesystem ({fs_type}): {path}"
            )
    return real


class DirWatch:
    """A live inotify watch on one directory (and its subtree when ``recursive``)."""

    def __init__(
        self,
        path: str,
        *,
        recursive: bool,
        include_entry: bool,
        publications: Publications | None = None,
    ) -> None:
        self.path = path
        self._publications = publications or Publications()
        #: inotify rename cookie -> the temporary name it moved away.
        self._moved_temps: OrderedDict[int, str] = OrderedDict()
        #: temporary names whose publication this watch has shown (a scan and the rename
        #: itself may both see one upload).
        self._shown: OrderedDict[str, None] = OrderedDict()
        self.recursive = recursive
        self.include_entry = include_entry
        self.error: HutchError | None = None
        self.closed = False
        self._inotify: INotify | None = None
        self._wds: dict[int, str] = {}
        self._events: list[WatchEvent] = []
        self._dropped = 0
        self._ready = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Open inotify and watch the tree; must run on the event loop that will read it."""
        self._loop = asyncio.get_running_loop()
        try:
            self._inotify = INotify(nonblocking=True)
        except OSError as exc:
            raise ResourceExhaustedError(f"cannot open an inotify instance: {exc}") from exc
        try:
            self._add_tree(self.path, report=False)
        except BaseException:
            self.close()
            raise
        self._loop.add_reader(self._inotify.fileno(), self._on_readable)

    def close(self) -> None:
        """Stop watching: remove the reader, close the inotify fd (which drops every watch)."""
        if self.closed:
            return
        self.closed = True
        if self._inotify is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._inotify.fileno())
            self._inotify.close()
        self._wds.clear()
        self._ready.set()

    @property
    def watch_count(self) -> int:
        """How many inotify watches this watch holds (one per watched directory)."""
        return len(self._wds)

    # -- consuming -----------------------------------------------------------------------

    def drain(self) -> list[WatchEvent]:
        """The events since the last drain; raises the watch's error once they are gone."""
        events, self._events = self._events, []
        if self._dropped:
            log.warning("watch %s: %d events dropped (not collected)", self.path, self._dropped)
            self._dropped = 0
        if not events and self.error is not None:
            raise self.error
        if not self.closed:
            self._ready.clear()
        return events

    async def wait(self, timeout: float | None, *, cancel: asyncio.Event | None = None) -> None:
        """Wait until events are ready, the watch ends, ``cancel`` is set or ``timeout``."""
        if self._ready.is_set():
            return
        waiters = [asyncio.ensure_future(self._ready.wait())]
        if cancel is not None:
            waiters.append(asyncio.ensure_future(cancel.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    # -- inotify -------------------------------------------------------------------------

    def _add_watch(self, directory: str) -> bool:
        assert self._inotify is not None
        try:
            wd = self._inotify.add_watch(directory, _MASK)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise ResourceExhaustedError(
                    f"{directory}: inotify watch limit reached (fs.inotify.max_user_watches)"
                ) from exc
            if directory == self.path:
                raise from_os_error(exc, directory) from exc
            return False  # vanished or not a directory any more: nothing to watch
        self._wds[wd] = directory
        return True

    def _add_tree(self, top: str, *, report: bool, made: bool = False) -> None:
        """Watch ``top`` (and its subdirectories when recursive); report what is inside.

        ``made``: ``top`` was just created (not moved in), so a file found inside may be an
        upload renamed into place before the watch existed: it is shown as that upload.
        """
        pending = [top]  # iterative: trees may be deeper than Python's recursion limit
        while pending:
            directory = pending.pop()
            if not self._add_watch(directory) or not (self.recursive or report):
                continue
            try:
                with os.scandir(directory) as it:
                    children = sorted(it, key=lambda d: d.name)
            except OSError:
                continue
            for child in children:
                if is_temp_name(child.name):
                    continue  # an upload in flight: shown when it is renamed into place
                if report:
                    self._report_found(child, uploads=made)
                try:
                    is_dir = child.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir and self.recursive:
                    pending.append(child.path)

    def _report_found(self, child: os.DirEntry[str], *, uploads: bool) -> None:
        """Report an entry found in a directory that appeared: an upload as its events."""
        found = None
        if uploads:
            try:
                st = child.stat(follow_symlinks=False)
            except OSError:
                return
            if stat.S_ISREG(st.st_mode):
                found = self._publications.find_inode(st.st_dev, st.st_ino)
        if found is not None:
            self._show_publication(child.path, *found)
        else:
            self._push(child.path, EventKind.CREATE)

    def _show_publication(
        self, full_path: str, temp_name: str, publication: Publication | None
    ) -> None:
        if temp_name in self._shown:
            return
        _remember(self._shown, temp_name, None)
        for kind in e2b_events(publication):
            self._push(full_path, kind)

    def _forget_tree(self, top: str) -> None:
        """Stop watching ``top`` and below (it moved away: its wds would follow it)."""
        assert self._inotify is not None
        prefix = top + "/"
        for wd, directory in list(self._wds.items()):
            if directory == top or directory.startswith(prefix):
                del self._wds[wd]
                with contextlib.suppress(OSError):
                    self._inotify.rm_watch(wd)

    def _push(self, full_path: str, kind: EventKind) -> None:
        name = posixpath.relpath(full_path, self.path)
        entry = None
        if self.include_entry and kind not in (EventKind.REMOVE, EventKind.RENAME):
            entry = find_entry(full_path)
        if len(self._events) >= MAX_BUFFERED_EVENTS:
            del self._events[0]
            self._dropped += 1
        self._events.append(WatchEvent(name=name, kind=kind, entry=entry))
        self._ready.set()

    def _on_readable(self) -> None:
        if self.closed or self._inotify is None:
            return
        try:
            raw = self._inotify.read(timeout=0)
        except OSError as exc:
            self._fail(HutchError(f"reading inotify events for {self.path}: {exc}"))
            return
        try:
            self._handle(raw)
        except HutchError as exc:
            self._fail(exc)

    def _handle(self, raw: Iterable) -> None:
        for event in raw:
            if event.mask & IN_Q_OVERFLOW:
                raise ResourceExhaustedError(
                    f"watch {self.path}: too many events, the kernel queue overflowed"
                )
            directory = self._wds.get(event.wd)
            if directory is None:
                continue  # a watch we already dropped
            if event.mask & IN_IGNORED:
                del self._wds[event.wd]
                if directory == self.path:
                    self.close()  # the watched directory is gone: nothing more will come
                    return
                continue
            if event.mask & IN_DELETE_SELF or not event.name:
                continue  # reported by the parent directory's watch
            if is_temp_name(event.name):
                if event.mask & IN_MOVED_FROM and event.cookie:
                    _remember(self._moved_temps, event.cookie, event.name)
                continue  # envd's upload in flight: never shown
            full_path = posixpath.join(directory, event.name)
            if event.mask & IN_MOVED_TO and event.cookie in self._moved_temps:
                temp_name = self._moved_temps.pop(event.cookie)
                self._show_publication(full_path, temp_name, self._publications.find(temp_name))
                continue
            for kind in _kinds(event.mask):
                self._push(full_path, kind)
            if event.mask & IN_ISDIR and self.recursive:
                if event.mask & (IN_CREATE | IN_MOVED_TO):
                    self._add_tree(full_path, report=True, made=bool(event.mask & IN_CREATE))
                elif event.mask & IN_MOVED_FROM:
                    self._forget_tree(full_path)

    def _fail(self, error: HutchError) -> None:
        log.warning("%s", error.message)
        self.error = error
        self.close()


class WatcherManager:
    """Every live watch of this envd: polling watchers by id, streaming ones while open."""

    def __init__(self, *, publications: Publications | None = None) -> None:
        #: What envd's uploads did, noted by the writer for the watches (shared with it).
        self.publications = publications or Publications()
        self._polling: dict[str, DirWatch] = {}
        self._streaming: set[DirWatch] = set()

    def open(
        self, path: str, *, recursive: bool, include_entry: bool, allow_network_mounts: bool
    ) -> DirWatch:
        """Start a streaming watch; give it back with ``release`` when the stream ends."""
        real = check_watchable(path, allow_network_mounts=allow_network_mounts)
        watch = DirWatch(
            real,
            recursive=recursive,
            include_entry=include_entry,
            publications=self.publications,
        )
        watch.start()
        self._streaming.add(watch)
        return watch

    def release(self, watch: DirWatch) -> None:
        """End a streaming watch."""
        watch.close()
        self._streaming.discard(watch)

    def create(
        self, path: str, *, recursive: bool, include_entry: bool, allow_network_mounts: bool
    ) -> str:
        """Start a polling watcher; returns its id."""
        watch = self.open(
            path,
            recursive=recursive,
            include_entry=include_entry,
            allow_network_mounts=allow_network_mounts,
        )
        self._streaming.discard(watch)
        watcher_id = "w" + secrets.token_hex(10)
        self._polling[watcher_id] = watch
        return watcher_id

    def events(self, watcher_id: str) -> list[WatchEvent]:
        """The events of a polling watcher since the previous call."""
        return self._get(watcher_id).drain()

    def remove(self, watcher_id: str) -> None:
        """Stop and forget a polling watcher."""
        self._get(watcher_id).close()
        del self._polling[watcher_id]

    def _get(self, watcher_id: str) -> DirWatch:
        watch = self._polling.get(watcher_id)
        if watch is None:
            raise NotFoundError(f"watcher with id {watcher_id!r} not found")
        return watch

    @property
    def live(self) -> int:
        """How many watches are open (for tests and metrics)."""
        return sum(1 for w in (*self._polling.values(), *self._streaming) if not w.closed)

    async def close(self) -> None:
        """End every watch (envd shutdown)."""
        for watch in (*self._polling.values(), *self._streaming):
            watch.close()
        self._polling.clear()
        self._streaming.clear()
