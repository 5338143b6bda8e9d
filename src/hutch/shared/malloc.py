"""glibc malloc tuned for bulk byte streams: no page faults per received megabyte.

Why (issue 19, ADR 36 addendum): ``perf`` on envd and on the proxy during 256 MiB uploads
showed 12-17 % of their CPU in the kernel's page-fault path (``exc_page_fault``,
``clear_page_erms``, ``do_anonymous_page``, ``unmap_page_range``) and system time above
user time. Every socket read allocates a 256 KiB ``bytes`` (asyncio's read size); glibc's
*dynamic* thresholds then trim the heap top back to the kernel as soon as 512 KiB of it is
free (twice the adapted mmap threshold), which a 1 MiB flush frees at once, so the next
reads fault fresh zeroed pages in again, megabyte after megabyte. Fixed thresholds keep
those pages: allocations below :data:`MMAP_THRESHOLD` come from the heap, and the top is
trimmed only above :data:`TRIM_THRESHOLD`.

:class:`BulkTransfers` applies them at the first transfer (nothing changes for a process
that never moves a large body) and, for envd, whose memory is the sandbox's density, gives
the kept pages back with ``malloc_trim(0)`` when the last transfer in progress ends. Not
glibc (no ``mallopt`` symbol): nothing is done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Final

#: ``<malloc.h>``: ``M_TRIM_THRESHOLD`` and ``M_MMAP_THRESHOLD``.
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
#: Above every buffer a stream allocates (256 KiB reads, bodies joined up to a few hundred
#: KiB), far below the 32 MiB glibc allows.
MMAP_THRESHOLD: Final = 4 << 20
#: Free memory the heap top keeps while transfers run: a few flush buffers' worth per stream.
TRIM_THRESHOLD: Final = 16 << 20

_libc: Any = None


def _glibc() -> Any:
    """libc with ``mallopt`` and ``malloc_trim``, or False when it has neither (not glibc)."""
    global _libc
    if _libc is None:
        import ctypes  # only once a transfer starts: not on envd's start path

        try:
            lib = ctypes.CDLL(None)
            lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            lib.malloc_trim.argtypes = [ctypes.c_size_t]
            _libc = lib
        except (OSError, AttributeError):
            _libc = False
    return _libc


def tune() -> bool:
    """Set the fixed thresholds (module docstring); whether this libc took them."""
    lib = _glibc()
    if not lib:
        return False
    return bool(
        lib.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        and lib.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def release() -> None:
    """Give free heap memory back to the kernel (``malloc_trim(0)``)."""
    lib = _glibc()
    if lib:
        lib.malloc_trim(0)


class BulkTransfers:
    """Transfers in progress in one event loop: tune malloc at the first, and with
    ``trim_when_idle`` release the kept memory each time the last one ends."""

    def __init__(self, *, trim_when_idle: bool) -> None:
        self._trim_when_idle = trim_when_idle
        self._tuned = False
        self._active = 0

    @property
    def active(self) -> int:
        """How many transfers are in progress."""
        return self._active

    @contextlib.contextmanager
    def transfer(self) -> Iterator[None]:
        """Around one transfer (an upload request, a proxied body)."""
        if not self._tuned:
            self._tuned = True
            tune()
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0 and self._trim_when_idle:
                release()
