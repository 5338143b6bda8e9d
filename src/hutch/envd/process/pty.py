"""Pseudo-terminals: open one at a size, make it the child's controlling tty, resize it."""

from __future__ import annotations

import fcntl
import os
import struct
import termios

from hutch.envd.process.models import PtySize


def _winsize(size: PtySize) -> bytes:
    # struct winsize {unsigned short ws_row, ws_col, ws_xpixel, ws_ypixel;}
    return struct.pack("HHHH", size.rows, size.cols, 0, 0)


def open_pty(size: PtySize) -> tuple[int, int]:
    """A new (master, slave) pair, both close-on-exec, the terminal set to ``size``."""
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, _winsize(size))
    except OSError:
        os.close(master)
        os.close(slave)
        raise
    return master, slave


def resize(master: int, size: PtySize) -> None:
    """Set the terminal's size; the kernel sends SIGWINCH to its foreground process group."""
    fcntl.ioctl(master, termios.TIOCSWINSZ, _winsize(size))


def take_controlling_terminal() -> None:
    """Run in the child after ``setsid``: make stdin (the slave) its controlling terminal.

    Without it ``bash -i`` has no job control ("cannot set terminal process group") and
    Ctrl-C would not reach the foreground job. Only one ioctl runs between fork and exec.
    """
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
