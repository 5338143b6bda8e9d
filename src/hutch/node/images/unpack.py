"""Apply OCI image layers to a root filesystem directory, refusing anything that escapes it.

The OCI image spec's "Applying changesets": layers are applied in order; ``.wh.NAME``
deletes NAME from the layers below, ``.wh..wh..opq`` empties its directory of everything
the layers below put there; ownership (numeric ids), modes (setuid included), xattrs
(``SCHILY.xattr.*`` PAX records), modification times, hard links, symlinks, FIFOs and device
nodes are kept.

Safety: the tree is written from the host, as root, so a member must never reach outside
``root``. Every member name is normalised and refused if a ``..`` component remains; every
directory on the way to a member must be a real directory (a member that would be written
*through* a symlink, e.g. ``evil -> /etc`` then ``evil/shadow``, is refused: tools that
produce layers walk the file system and never emit such paths); hard-link targets obey the
same rules. Symlinks themselves may point anywhere: they are only ever resolved inside the
sandbox, where ``/`` is the rootfs.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Final

from hutch.shared.errors import ImageError

WHITEOUT_PREFIX: Final = ".wh."
OPAQUE_WHITEOUT: Final = ".wh..wh..opq"
_XATTR_PREFIX: Final = "SCHILY.xattr."

#: Called with the number of compressed bytes read so far (progress displays).
Progress = Callable[[int], None]


class UnsafeLayerError(ImageError):
    """A layer tries to write outside the rootfs (``..``, through a symlink, a link out)."""


class _HashingReader:
    """A read-only file object that hashes what passes through and counts raw bytes."""

    def __init__(self, raw: IO[bytes], *, on_read: Callable[[int], None] | None = None) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self._on_read = on_read

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.sha256.update(data)
        if self._on_read is not None and data:
            self._on_read(len(data))
        return data


def apply_layer(
    root: Path,
    blob: Path,
    *,
    media_type: str,
    digest: str,
    diff_id: str,
    what: str,
    progress: Progress | None = None,
) -> None:
    """Apply the layer in ``blob`` (tar, or gzipped tar) to ``root``; check its ``diff_id``.

    ``digest`` is the blob's own digest (the manifest's); ``diff_id`` is the ``sha256:...``
    digest of the *uncompressed* tar from the image config;
    ``what`` names the layer in errors ("layer 2/5 sha256:ab12..."). Raises
    :class:`UnsafeLayerError` for escaping members and :class:`ImageError` for corrupt,
    truncated or mismatching layers.
    """
    root = Path(root)
    done = 0

    def counted(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done)

    with blob.open("rb") as raw:
        counter = _HashingReader(raw, on_read=counted)
        stream: IO[bytes]
        if media_type.endswith(("+gzip", ".gzip")):
            stream = gzip.GzipFile(fileobj=counter, mode="rb")  # type: ignore[arg-type]
        elif media_type.endswith(("+zstd", ".zstd")):
            raise ImageError(f"{what}: zstd-compressed layers are not supported ({media_type})")
        else:
            stream = counter  # type: ignore[assignment]
        uncompressed = _HashingReader(stream)
        try:
            with tarfile.open(fileobj=uncompressed, mode="r|") as tar:  # type: ignore[call-overload]
                _apply_members(root, tar, what=what)
            while uncompressed.read(1 << 20):  # the tar's trailing padding counts in diff_id
                pass
            while counter.read(1 << 20):  # and whatever follows the gzip stream in the blob
                pass
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib_error()) as exc:
            raise ImageError(f"{what} is corrupt or truncated: {exc}") from exc
    blob_digest = "sha256:" + counter.sha256.hexdigest()
    if blob_digest != digest:
        raise ImageError(
            f"{what}: blob digest {blob_digest} does not match the manifest's {digest}"
        )
    actual = "sha256:" + uncompressed.sha256.hexdigest()
    if actual != diff_id:
        raise ImageError(f"{what}: uncompressed digest {actual} does not match diff_id {diff_id}")


def zlib_error() -> type[Exception]:
    """zlib's error class (kept in a function so the except clause stays readable)."""
    import zlib

    return zlib.error


def copy_archive(
    root: Path,
    archive: Path,
    *,
    src: str,
    dest: str,
    uid: int,
    gid: int,
    mode: int | None,
    what: str,
) -> None:
    """A template build's COPY: the uploaded tar of ``src`` (paths relative to the build
    context) lands at ``dest`` in ``root``, owned by ``uid:gid``, with ``mode`` if given.

    Docker's rules: a file ``src`` becomes ``dest`` itself unless ``dest`` ends with ``/``
    (then ``dest/<name>``); a directory's content goes below ``dest``. The same refusals as
    layers: nothing is written through a symlink or outside ``root``.
    """
    src_norm = "/".join(p for p in src.split("/") if p not in ("", "."))
    dest_norm = "/".join(p for p in dest.split("/") if p not in ("", "."))
    into_dir = dest.endswith("/")

    def transform(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = _normalise(member.name, what=what)
        if name == src_norm or not src_norm:
            if member.isdir():
                target = dest_norm
            elif into_dir or not dest_norm:
                target = posixpath.join(dest_norm, posixpath.basename(name))
            else:
                target = dest_norm
        elif name.startswith(src_norm + "/"):
            target = posixpath.join(dest_norm, name[len(src_norm) + 1 :])
        else:
            target = posixpath.join(dest_norm, name)
        member.name = target
        member.uid, member.gid = uid, gid
        member.pax_headers = {}
        if mode is not None and member.isreg():
            member.mode = mode
        return member

    try:
        with tarfile.open(archive, mode="r:*") as tar:
            _apply_members(root, tar, what=what, transform=transform, whiteouts=False)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib_error()) as exc:
        raise ImageError(f"{what}: the uploaded files are corrupt: {exc}") from exc


def _apply_members(
    root: Path,
    tar: tarfile.TarFile,
    *,
    what: str,
    transform: Callable[[tarfile.TarInfo], tarfile.TarInfo | None] | None = None,
    whiteouts: bool = True,
) -> None:
    # Paths this layer created: an opaque whiteout hides only what the layers *below* made.
    created: set[str] = set()
    opaque_done: set[str] = set()
    deferred_dirs: list[tuple[Path, tarfile.TarInfo]] = []
    for original in tar:
        member = transform(original) if transform is not None else original
        if member is None:
            continue
        rel = _normalise(member.name, what=what)
        if rel == "":
            continue  # the root directory itself keeps hutch's 0755 root:root
        parent_rel, base = posixpath.split(rel)
        parent = _real_parent(root, parent_rel, what=what, member=member.name, created=created)
        if base == OPAQUE_WHITEOUT and whiteouts:
            if parent_rel not in opaque_done:
                _empty_dir_except(parent, parent_rel, created)
                opaque_done.add(parent_rel)
            continue
        if base.startswith(WHITEOUT_PREFIX) and whiteouts:
            victim = parent / base[len(WHITEOUT_PREFIX) :]
            _remove(victim)
            continue
        target = parent / base
        _write_member(root, target, member, tar, what=what, created=created)
        created.add(rel)
        if member.isdir():
            deferred_dirs.append((target, member))
    # Directory times last: writing their entries above changed them.
    for target, member in reversed(deferred_dirs):
        os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)


def _normalise(name: str, *, what: str) -> str:
    if "\0" in name:
        raise UnsafeLayerError(f"{what}: member name {name!r} contains a NUL byte")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayerError(f"{what}: member {name!r} escapes the rootfs ('..')")
    return "/".join(parts)


def _real_parent(root: Path, parent_rel: str, *, what: str, member: str, created: set[str]) -> Path:
    """``root/parent_rel`` after checking that no component is a symlink (made if missing)."""
    current = root
    walked = ""
    for part in parent_rel.split("/") if parent_rel else ():
        current = current / part
        walked = f"{walked}/{part}" if walked else part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            os.chmod(current, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeLayerError(
                f"{what}: member {member!r} would be written through the symlink "
                f"{walked!r} -> {os.readlink(current)!r}; refusing (it could escape the rootfs)"
            )
        if not stat.S_ISDIR(st.st_mode):
            raise ImageError(f"{what}: member {member!r}: {walked!r} is not a directory")
    return current


def _empty_dir_except(directory: Path, rel: str, created: set[str]) -> None:
    prefix = f"{rel}/" if rel else ""
    for entry in os.listdir(directory):
        if f"{prefix}{entry}" not in created:
            _remove(directory / entry)


def _remove(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _write_member(
    root: Path,
    target: Path,
    member: tarfile.TarInfo,
    tar: tarfile.TarFile,
    *,
    what: str,
    created: set[str],
) -> None:
    try:
        existing = os.lstat(target)
    except FileNotFoundError:
        existing = None
    if existing is not None and not (member.isdir() and stat.S_ISDIR(existing.st_mode)):
        _remove(target)
    if member.isdir():
        if existing is None or not stat.S_ISDIR(existing.st_mode):
            os.mkdir(target, 0o700)
    elif member.isreg():
        source = tar.extractfile(member)
        if source is None:
            raise ImageError(f"{what}: cannot read member {member.name!r}")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    elif member.issym():
        os.symlink(member.linkname, target)
    elif member.islnk():
        link_rel = _normalise(member.linkname, what=what)
        link_parent, link_base = posixpath.split(link_rel)
        source_path = (
            _real_parent(root, link_parent, what=what, member=member.linkname, created=created)
            / link_base
        )
        if not link_base or not os.path.lexists(source_path):
            raise ImageError(
                f"{what}: hard link {member.name!r} -> {member.linkname!r}: target is missing"
            )
        if stat.S_ISDIR(os.lstat(source_path).st_mode):
            raise UnsafeLayerError(
                f"{what}: hard link {member.name!r} -> {member.linkname!r} names a directory"
            )
        os.link(source_path, target, follow_symlinks=False)
        return  # a hard link shares the inode: owner, mode and xattrs are its target's
    elif member.isfifo():
        os.mkfifo(target, 0o600)
    elif member.ischr() or member.isblk():
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
        os.mknod(target, kind | 0o600, os.makedev(member.devmajor, member.devminor))
    else:
        raise ImageError(f"{what}: member {member.name!r} has an unsupported type {member.type!r}")
    _set_metadata(target, member)


def _set_metadata(target: Path, member: tarfile.TarInfo) -> None:
    os.lchown(target, member.uid, member.gid)
    for key, value in member.pax_headers.items():
        if not key.startswith(_XATTR_PREFIX):
            continue
        name = key[len(_XATTR_PREFIX) :]
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        try:
            os.setxattr(target, name, raw, follow_symlinks=False)
        except OSError as exc:
            # trusted.* needs CAP_SYS_ADMIN, user.* is refused on symlinks: not the image's
            # content that matters for running it; anything else is a real failure.
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    if not member.issym():
        # After chown, which clears setuid/setgid bits.
        os.chmod(target, stat.S_IMODE(member.mode))
    os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
