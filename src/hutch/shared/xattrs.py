"""User file metadata kept as extended attributes ``user.e2b.<key>`` (E2B infra PR 2732); shared by
envd's ``/files`` and the volume content API.

Rules (docs/envd.md): keys and values are printable US-ASCII; keys are non-empty, lower-cased
and at most 246 bytes (255, the xattr name limit, minus ``user.e2b.``); the whole set (keys
plus values) is at most 4 KiB. An upload replaces a file's whole ``user.e2b.*`` set; other
``user.*`` attributes are never touched nor shown. Filesystems without xattrs are best effort.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable, Mapping

from hutch.shared.errors import InsufficientStorageError, InvalidArgumentError, from_os_error

log = logging.getLogger("hutch.xattrs")

XATTR_PREFIX = "user.e2b."
HEADER_PREFIX = "x-metadata-"
MAX_KEY_BYTES = 255 - len(XATTR_PREFIX)
MAX_TOTAL_BYTES = 4096

_UNSUPPORTED = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def _printable(text: str) -> bool:
    return all(0x20 <= ord(ch) <= 0x7E for ch in text)


def validate_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Check a metadata set against the rules; returns it with keys lower-cased."""
    result: dict[str, str] = {}
    total = 0
    for raw_key, value in metadata.items():
        key = raw_key.lower()
        if not key:
            raise InvalidArgumentError("metadata key is empty")
        if not _printable(key):
            raise InvalidArgumentError(f"metadata key {key!r}: only printable ASCII is allowed")
        if len(key) > MAX_KEY_BYTES:
            raise InvalidArgumentError(
                f"metadata key {key[:32]!r}...: longer than {MAX_KEY_BYTES} bytes"
            )
        if not _printable(value):
            raise InvalidArgumentError(
                f"metadata key {key!r}: value must be printable ASCII (0x20-0x7E)"
            )
        if key in result:
            continue
        result[key] = value
        total += len(key) + len(value)
        if total > MAX_TOTAL_BYTES:
            raise InvalidArgumentError(
                f"metadata key {key!r}: the metadata set exceeds {MAX_TOTAL_BYTES} bytes"
            )
    return result


def metadata_from_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``X-Metadata-<key>: <value>`` headers, in order, the first value of a key winning."""
    pairs: dict[str, str] = {}
    for name, value in headers:
        lname = name.lower()
        if not lname.startswith(HEADER_PREFIX):
            continue
        key = lname[len(HEADER_PREFIX) :]
        if key not in pairs:
            pairs[key] = value
    return validate_metadata(pairs)


def write_metadata(target: int | str, metadata: Mapping[str, str], *, what: str) -> bool:
    """Replace the ``user.e2b.*`` set of ``target`` (a file descriptor or path).

    Returns False (and logs a warning) when the filesystem has no xattr support; raises
    ``InsufficientStorageError`` when it is out of space, other errors translated.
    """
    try:
        existing = [n for n in os.listxattr(target) if n.startswith(XATTR_PREFIX)]
        for name in existing:
            if name[len(XATTR_PREFIX) :] not in metadata:
                os.removexattr(target, name)
        for key, value in metadata.items():
            os.setxattr(target, XATTR_PREFIX + key, value.encode("ascii"))
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            if metadata:
                log.warning("%s: filesystem has no user xattrs; metadata not stored", what)
            return False
        if exc.errno in _NO_SPACE:
            raise InsufficientStorageError(f"{what}: no space left for metadata") from exc
        if exc.errno == errno.E2BIG:
            raise InvalidArgumentError(f"{what}: metadata too large for this filesystem") from exc
        raise from_os_error(exc, what) from exc
    return True


def read_metadata(path: str) -> dict[str, str]:
    """The ``user.e2b.*`` set of ``path`` (following symlinks); empty when there is none."""
    try:
        names = os.listxattr(path)
    except OSError:
        return {}
    result: dict[str, str] = {}
    for name in names:
        if not name.startswith(XATTR_PREFIX):
            continue
        try:
            result[name[len(XATTR_PREFIX) :]] = os.getxattr(path, name).decode("ascii", "replace")
        except OSError:
            continue
    return result
