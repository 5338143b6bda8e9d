"""File work of the envd bundle builder: what to copy, what to leave out, and the digest.

No external programs here (those are in :mod:`envd_bundle_tools`); only the file system.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

#: Top-level stdlib entries envd never imports; together they are most of the stdlib's size
#: (``config-*`` alone holds a 40 MB static libpython, ``test`` 120 MB).
STDLIB_EXCLUDED = frozenset(
    {
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "turtle.py",
        "ensurepip",
        "lib2to3",
        "distutils",
        "pydoc_data",
        "sqlite3",
        "curses",
        "site-packages",
        "dist-packages",
    }
)
#: Directories left out wherever they are: tests of stdlib packages, stale bytecode (the
#: builder compiles its own, deterministically).
EXCLUDED_ANYWHERE = frozenset({"__pycache__", "test", "tests"})
#: Extension modules left out, by name before the first dot. Each would pull a large or
#: graphical library into ``lib/`` (Tk, X11, ncurses, Kerberos, SQLite) for a module that
#: envd never imports, or is CPython's own test fixture.
DYNLOAD_EXCLUDED = frozenset(
    {
        "_tkinter",
        "_curses",
        "_curses_panel",
        "readline",
        "nis",
        "_dbm",
        "_gdbm",
        "_sqlite3",
        "_ctypes_test",
        "_testbuffer",
        "_testcapi",
        "_testclinic",
        "_testimportmultiple",
        "_testinternalcapi",
        "_testmultiphase",
        "_xxsubinterpreters",
        "_xxtestfuzz",
        "xxlimited",
        "xxlimited_35",
        "xxsubtype",
    }
)
#: Parts of a ``.dist-info`` that describe the *installation*, not the package: RECORD lists
#: hashes of files the bundle does not ship as they were, direct_url.json a host path.
DIST_INFO_EXCLUDED = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})
#: The hutch package's envd subset; the control plane (api, node, cli...) never ships.
HUTCH_SUBSET = ("__init__.py", "__main__.py", "py.typed", "shared", "envd")

_DIGEST_FILE = "SHA256"


def _skip_compiled(name: str) -> bool:
    return name in EXCLUDED_ANYWHERE or name.endswith((".pyc", ".pyo"))


def copy_stdlib(src: Path, dest: Path, *, lib_dynload: Path | None) -> None:
    """Copy the stdlib at ``src`` to ``dest`` without the parts envd never needs."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        if entry.name in STDLIB_EXCLUDED or entry.name.startswith("config-"):
            continue
        if entry.name == "lib-dynload" or _skip_compiled(entry.name):
            continue
        target = dest / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, ignore=_ignore_compiled, symlinks=False)
        else:
            shutil.copy2(entry, target)
    if lib_dynload is not None:
        copy_lib_dynload(lib_dynload, dest / "lib-dynload")


def copy_lib_dynload(src: Path, dest: Path) -> None:
    """Copy the stdlib's extension modules, less :data:`DYNLOAD_EXCLUDED`."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        if entry.is_file() and entry.name.split(".", 1)[0] not in DYNLOAD_EXCLUDED:
            shutil.copy2(entry, dest / entry.name)


def _ignore_compiled(_directory: str, names: list[str]) -> set[str]:
    return {name for name in names if _skip_compiled(name)}


def copy_distribution(files: list[list[str]], site_packages: Path) -> None:
    """Copy one installed distribution's files (``[relative, absolute]`` from its RECORD).

    Files outside site-packages (console scripts, data files) are not part of what envd
    imports, and compiled bytecode is rebuilt by the builder.
    """
    for relative, absolute in files:
        parts = Path(relative).parts
        if not parts or parts[0] == ".." or any(_skip_compiled(p) for p in parts):
            continue
        if parts[0].endswith(".dist-info") and parts[-1] in DIST_INFO_EXCLUDED:
            continue
        source = Path(absolute)
        if not source.is_file():
            continue
        target = site_packages.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def copy_hutch_subset(source: Path, site_packages: Path) -> list[str]:
    """Copy hutch's envd subset from the package directory ``source``; returns what was copied."""
    target = site_packages / "hutch"
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in HUTCH_SUBSET:
        entry = source / name
        if entry.is_dir():
            shutil.copytree(entry, target / name, ignore=_ignore_compiled)
        elif entry.is_file():
            shutil.copy2(entry, target / name)
        else:
            continue
        copied.append(name)
    return copied


def normalize_modes(root: Path) -> None:
    """Give every entry a mode that depends only on its kind, not on the source's or umask.

    Directories and executables ``0755``, other files ``0644``: readable by whichever user
    envd runs as, and the same bytes for the digest on every build host.
    """
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o111:
            path.chmod(0o755)
        else:
            path.chmod(0o644)


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """Every entry below ``root`` with its relative POSIX path, in a fixed (byte) order."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            entries.append((full.relative_to(root).as_posix(), full))
    entries.sort(key=lambda item: item[0].encode())
    yield from entries


def content_digest(root: Path) -> str:
    """The bundle's SHA-256: over sorted relative paths, kinds, modes, contents, link targets.

    Timestamps and owners are left out, so two builds from the same inputs agree. The
    ``SHA256`` file at the top, which holds this very digest, is left out too.
    """
    outer = hashlib.sha256()
    for relative, path in _walk(root):
        if relative == _DIGEST_FILE:
            continue
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            record = f"l\0{relative}\0{mode:o}\0{os.readlink(path)}\0"
            outer.update(record.encode())
        elif stat.S_ISDIR(st.st_mode):
            outer.update(f"d\0{relative}\0{mode:o}\0".encode())
        elif stat.S_ISREG(st.st_mode):
            inner = hashlib.sha256()
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    inner.update(chunk)
            outer.update(f"f\0{relative}\0{mode:o}\0{inner.hexdigest()}\0".encode())
        else:
            # A device, socket or FIFO has no place in a bundle; refuse rather than guess.
            raise ValueError(f"{relative}: not a file, directory or symlink")
    return outer.hexdigest()


def copy_with_digest(root: Path, dest: Path) -> str:
    """Copy the bundle at ``root`` to ``dest`` (created) and return its content digest.

    Each file is read once and the same bytes are hashed and written, so the digest is the
    digest of exactly what was copied (an injected bundle's, for template fingerprints),
    even if ``root`` changes meanwhile. Same records as :func:`content_digest`; modes are
    kept, owners become root's.
    """
    if not (root / "bin").is_dir():
        raise ValueError(f"{root} is not an envd bundle (no bin/)")
    outer = hashlib.sha256()
    dest.mkdir(mode=0o755)
    for relative, path in _walk(root):
        target = dest / relative
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            link = os.readlink(path)
            if relative != _DIGEST_FILE:
                outer.update(f"l\0{relative}\0{mode:o}\0{link}\0".encode())
            os.symlink(link, target)
        elif stat.S_ISDIR(st.st_mode):
            outer.update(f"d\0{relative}\0{mode:o}\0".encode())
            target.mkdir(mode=0o700)
            target.chmod(mode)
        elif stat.S_ISREG(st.st_mode):
            inner = hashlib.sha256()
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with path.open("rb") as f, os.fdopen(fd, "wb") as out:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    inner.update(chunk)
                    out.write(chunk)
            target.chmod(mode)
            if relative != _DIGEST_FILE:
                outer.update(f"f\0{relative}\0{mode:o}\0{inner.hexdigest()}\0".encode())
        else:
            raise ValueError(f"{relative}: not a file, directory or symlink")
    dest.chmod(0o755)
    return outer.hexdigest()


def write_digest(root: Path, digest: str) -> None:
    """Store ``digest`` in ``root/SHA256`` (mode 0644, one line)."""
    path = root / _DIGEST_FILE
    path.write_text(digest + "\n", encoding="ascii")
    path.chmod(0o644)


def tree_size(root: Path) -> int:
    """Total bytes of the regular files below ``root``."""
    return sum(p.lstat().st_size for _, p in _walk(root) if p.is_file() and not p.is_symlink())
