"""What envd's own atomic writes did, so watchers can show them as E2B's in-place writes.

E2B's envd writes an upload in place (``open(O_CREAT|O_TRUNC)``, ``fchown``, ``write``,
xattrs), so a watcher of the directory sees the file's own events. hutch writes a hidden
temporary file next to it and renames it into place (``writer.py``: a failed upload never
leaves half a file), which inotify reports as events of the temporary name and a rename.
Watchers hide temporary names (``is_temp_name``) and, when the rename lands, show the
events E2B's envd would have caused instead (``watcher.e2b_events``). What they cannot see, whether
a file was replaced and what changed, the writer records here just before its rename.

E2B's sequence, read from ``internal/api/upload.go`` ``processFile`` and the fsnotify
mapping in ``services/filesystem/watch.go`` (inotify merges a repeat of the event still
queued, so repeats are shown once):

* a new file: CREATE (``open O_CREAT``), CHMOD (``fchown``), WRITE (the data; none for an
  empty file), CHMOD when ``user.e2b.*`` metadata is set;
* a replaced file: CHMOD (``chown``), WRITE (``O_TRUNC``, then the data), CHMOD when
  metadata is set or the old file's is cleared.

Records are kept for the last ``capacity`` publications (not by time): a watch reads its
inotify queue long before thousands of later uploads push a record out, and a missing
record is shown as a new file.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

#: ``.<name>.hutch-upload-<token>``: the names of envd's temporary upload files.
_TEMP_NAME = re.compile(r"^\..*\.hutch-upload-[0-9a-f]+\Z", re.DOTALL)


def is_temp_name(name: str) -> bool:
    """Whether the basename ``name`` is one of envd's temporary upload files."""
    return _TEMP_NAME.match(name) is not None


@dataclass(frozen=True, kw_only=True)
class Publication:
    """One temporary file renamed over its target: what E2B's in-place write would show."""

    #: A file was already at the target (it is replaced).
    replaced: bool
    #: The new content is not empty.
    wrote: bool
    #: ``user.e2b.*`` metadata was set, or the replaced file's was cleared.
    metadata: bool
    #: The file's inode (kept by the rename), to recognise it when a scan finds it.
    dev: int
    ino: int


class Publications:
    """The recent publications by temporary name; written from worker threads."""

    def __init__(self, *, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._by_temp: OrderedDict[str, Publication] = OrderedDict()
        self._by_inode: dict[tuple[int, int], str] = {}
        self._lock = threading.Lock()

    def record(self, temp_name: str, publication: Publication) -> None:
        """Note that the temporary file ``temp_name`` (a basename) is about to be renamed."""
        with self._lock:
            self._by_temp[temp_name] = publication
            self._by_inode[(publication.dev, publication.ino)] = temp_name
            while len(self._by_temp) > self._capacity:
                old_name, old = self._by_temp.popitem(last=False)
                if self._by_inode.get((old.dev, old.ino)) == old_name:
                    del self._by_inode[(old.dev, old.ino)]

    def find(self, temp_name: str) -> Publication | None:
        """The publication of the temporary file ``temp_name``, if still recorded."""
        with self._lock:
            return self._by_temp.get(temp_name)

    def find_inode(self, dev: int, ino: int) -> tuple[str, Publication] | None:
        """The latest publication that produced the file with this inode, if recorded."""
        with self._lock:
            name = self._by_inode.get((dev, ino))
            if name is None:
                return None
            return name, self._by_temp[name]
