"""What a path is: the ``Entry`` every filesystem answer carries (Stat, ListDir, uploads...).

The fields follow E2B's envd (``packages/shared/pkg/filesystem/entry.go``) so clients see
the same values from hutch as from E2B:

* ``type`` is the type of what a symlink points to (``is_symlink`` marks the link itself);
  a dangling or looping symlink is reported as ``SYMLINK``, so that it stays visible to
  clients that drop entries of unknown type.
* ``mode`` is the permission bits only (Go's ``FileMode.Perm()``), of the target for a link.
* ``permissions`` is Go's ``FileMode.String()`` of the entry itself: ``-rw-r--r--``,
  ``drwxr-xr-x``, ``Lrwxrwxrwx``, ``dtrwxrwxrwx`` for ``/tmp``.
* ``size``, owner, group and mtime are the entry's own (``lstat``), as in E2B.
* ``metadata`` is the file's ``user.e2b.*`` extended attributes (``xattrs.read_metadata``).
"""

from __future__ import annotations

import grp
import os
import posixpath
import pwd
import stat
from dataclasses import dataclass, field
from enum import StrEnum

from hutch.shared.errors import from_os_error
from hutch.shared.xattrs import read_metadata


class EntryType(StrEnum):
    """The kind of a filesystem object (the values are the ``/files`` API's type strings)."""

    FILE = "file"
    DIRECTORY = "dir"
    SYMLINK = "symlink"
    #: Sockets, FIFOs, devices: E2B reports them as FILE_TYPE_UNSPECIFIED.
    OTHER = "other"


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One filesystem object, as envd describes it to clients."""

    name: str
    type: EntryType
    path: str
    size: int
    mode: int
    permissions: str
    owner: str
    group: str
    #: Modification time in nanoseconds since the epoch (exact, for protobuf Timestamps).
    modified_time_ns: int
    is_symlink: bool = False
    #: Where a symlink leads: the fully resolved path, or the raw link text when it dangles.
    symlink_target: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class NameCache:
    """uid/gid to names, looked up once per operation (a listing may name thousands).

    Not process-wide on purpose: accounts created later (``useradd`` in a sandbox) must
    show up by name in the next request.
    """

    def __init__(self) -> None:
        self._users: dict[int, str] = {}
        self._groups: dict[int, str] = {}

    def user(self, uid: int) -> str:
        """The name of ``uid``, or the number as a string when it has no account."""
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._users[uid] = name
        return name

    def group(self, gid: int) -> str:
        """The name of ``gid``, or the number as a string when it has no group entry."""
        name = self._groups.get(gid)
        if name is None:
            try:
                name = grp.getgrgid(gid).gr_name
            except KeyError:
                name = str(gid)
            self._groups[gid] = name
        return name


def _type_of(st_mode: int) -> EntryType:
    if stat.S_ISREG(st_mode):
        return EntryType.FILE
    if stat.S_ISDIR(st_mode):
        return EntryType.DIRECTORY
    if stat.S_ISLNK(st_mode):
        return EntryType.SYMLINK
    return EntryType.OTHER


def mode_string(st_mode: int) -> str:
    """Go's ``os.FileMode.String()`` for a Linux ``st_mode`` (what E2B's envd sends).

    Go prints one letter per set mode bit, in the order ``dalTLDpSugct?``, then the nine
    permission characters; a plain file gets a single ``-``.
    """
    letters = ""
    if stat.S_ISDIR(st_mode):
        letters += "d"
    if stat.S_ISLNK(st_mode):
        letters += "L"
    if stat.S_ISBLK(st_mode) or stat.S_ISCHR(st_mode):
        letters += "D"
    if stat.S_ISFIFO(st_mode):
        letters += "p"
    if stat.S_ISSOCK(st_mode):
        letters += "S"
    if st_mode & stat.S_ISUID:
        letters += "u"
    if st_mode & stat.S_ISGID:
        letters += "g"
    if stat.S_ISCHR(st_mode):
        letters += "c"
    if st_mode & stat.S_ISVTX:
        letters += "t"
    perms = "".join(char if st_mode & (1 << (8 - i)) else "-" for i, char in enumerate("rwxrwxrwx"))
    return (letters or "-") + perms


def entry_from_stat(
    path: str, st: os.stat_result, *, names: NameCache | None = None, name: str | None = None
) -> Entry:
    """The ``Entry`` of ``path`` whose ``lstat`` is ``st`` (lets listings reuse their stats)."""
    names = names or NameCache()
    entry_type = _type_of(st.st_mode)
    mode = stat.S_IMODE(st.st_mode) & 0o777
    is_symlink = entry_type is EntryType.SYMLINK
    symlink_target: str | None = None
    if is_symlink:
        try:
            target = os.stat(path)
            entry_type = _type_of(target.st_mode)
            mode = target.st_mode & 0o777
            symlink_target = os.path.realpath(path, strict=True)
        except OSError:
            # Dangling or looping: keep it visible as a symlink, show where it points.
            mode = 0
            try:
                symlink_target = os.readlink(path)
            except OSError:
                symlink_target = None
    return Entry(
        name=name if name is not None else (posixpath.basename(path) or "/"),
        type=entry_type,
        path=path,
        size=st.st_size,
        mode=mode,
        permissions=mode_string(st.st_mode),
        owner=names.user(st.st_uid),
        group=names.group(st.st_gid),
        modified_time_ns=st.st_mtime_ns,
        is_symlink=is_symlink,
        symlink_target=symlink_target,
        metadata=read_metadata(path),
    )


def find_entry(path: str, *, names: NameCache | None = None) -> Entry | None:
    """The ``Entry`` of ``path``, or None when nothing is there (any more)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return entry_from_stat(path, st, names=names)


def get_entry(path: str, *, names: NameCache | None = None) -> Entry:
    """The ``Entry`` of the absolute ``path`` (not following a final symlink).

    Raises ``NotFoundError`` when nothing is there, other errors translated.
    """
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise from_os_error(exc, path) from exc
    return entry_from_stat(path, st, names=names)
