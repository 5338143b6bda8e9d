"""The external programs the envd bundle builder drives: ``ldd``, ``patchelf``, ``strip``, Python.

This is the builder's only adapter (STYLE.md: ``subprocess`` lives in adapter modules under
``node/``). Each failure of a tool becomes one :class:`EnvdBundleError` that names the tool,
the file and the tool's own message, so a failed build says why.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hutch.shared.errors import HutchError

#: ELF files start with these four bytes.
_ELF_MAGIC = b"\x7fELF"
#: ``libfoo.so.1 => /lib/x86_64-linux-gnu/libfoo.so.1 (0x...)``, or ``=> not found``.
_LDD_LINKED = re.compile(r"^\s*(\S+)\s+=>\s+(\S+)(?:\s+\(0x[0-9a-f]+\))?\s*$")
#: The loader line has no arrow: ``/lib64/ld-linux-x86-64.so.2 (0x...)``.
_LDD_LOADER = re.compile(r"^\s*(/\S*ld-linux\S*)\s+\(0x[0-9a-f]+\)\s*$")


class EnvdBundleError(HutchError):
    """Building the envd bundle failed; the message says which step and why."""


@dataclass(frozen=True, slots=True)
class LibraryClosure:
    """What ``ldd`` says a set of ELF files needs: the loader and every library by soname."""

    loader: Path | None
    libraries: Mapping[str, Path]


def _run(argv: Sequence[str], *, what: str, env: Mapping[str, str] | None = None) -> str:
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            check=False,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except OSError as exc:
        raise EnvdBundleError(f"{what}: cannot run {argv[0]}: {exc.strerror or exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()[-2000:]
        raise EnvdBundleError(f"{what}: {argv[0]} exited with {done.returncode}: {detail}")
    return done.stdout


def is_elf(path: Path) -> bool:
    """Whether ``path`` is a regular file in ELF format (no tool needed: read the magic)."""
    if path.is_symlink() or not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(4) == _ELF_MAGIC


def probe_python(python: Path, *, requirements: Sequence[str]) -> dict[str, Any]:
    """Run :mod:`envd_bundle_probe` in ``python`` and return its description."""
    script = Path(__file__).with_name("envd_bundle_probe.py")
    out = _run([str(python), "-I", str(script), *requirements], what=f"probing {python}")
    try:
        result: dict[str, Any] = json.loads(out)
    except ValueError as exc:
        raise EnvdBundleError(f"probing {python}: unreadable answer: {out[:200]!r}") from exc
    return result


def library_closure(elf_files: Sequence[Path]) -> LibraryClosure:
    """The loader and shared libraries that ``elf_files`` need, as ``ldd`` resolves them.

    ``ldd`` already reports the transitive closure of each file. A library it cannot find
    fails the build: a bundle that lacks one would fail only later, inside a sandbox.
    """
    loader: Path | None = None
    libraries: dict[str, Path] = {}
    for elf in elf_files:
        out = _run(["ldd", str(elf)], what=f"listing the libraries of {elf}")
        for line in out.splitlines():
            if "statically linked" in line or "linux-vdso" in line:
                continue
            linked = _LDD_LINKED.match(line)
            if linked:
                soname, target = linked.groups()
                if target == "not":
                    raise EnvdBundleError(f"{elf} needs {soname}, which ldd cannot find")
                if re.search(r"ld-linux[^/]*$", soname):
                    loader = loader or Path(target)
                    continue
                libraries.setdefault(soname, Path(target))
                continue
            found = _LDD_LOADER.match(line)
            if found:
                loader = loader or Path(found.group(1))
    return LibraryClosure(loader=loader, libraries=libraries)


def strip_symbols(paths: Sequence[Path]) -> None:
    """Drop debug sections and static symbols; the dynamic ones that ``dlsym`` needs stay."""
    if paths:
        _run(["strip", "--strip-unneeded", *map(str, paths)], what="stripping symbols")


def set_interpreter(path: Path, *, interpreter: str) -> None:
    """Make the kernel start ``path`` through ``interpreter`` (an absolute path, PT_INTERP)."""
    _run(["patchelf", "--set-interpreter", interpreter, str(path)], what=f"patching {path}")


def set_rpath(path: Path, *, rpath: str) -> None:
    """Set DT_RPATH (not DT_RUNPATH) of ``path``.

    DT_RPATH is searched *before* ``LD_LIBRARY_PATH`` and also serves the libraries this file
    loads, so a library path that the image sets can never pull the image's own libraries
    into envd.
    """
    _run(
        ["patchelf", "--force-rpath", "--set-rpath", rpath, str(path)],
        what=f"patching {path}",
    )


def run_bundled_python(bundle: Path, args: Sequence[str], *, what: str) -> str:
    """Run the bundle's interpreter through the bundle's own loader, on the build host.

    The interpreter's PT_INTERP names the loader's path *inside the sandbox*, which does not
    exist here; naming the loader explicitly runs the very same files anyway. The environment
    is fixed and minimal: ``PYTHONHASHSEED=0`` keeps the order of set constants in ``.pyc``
    files, and so the bundle's digest, the same from build to build.
    """
    loaders = sorted((bundle / "lib").glob("ld-linux*.so*"))
    if not loaders:
        raise EnvdBundleError(f"{what}: the bundle has no dynamic loader")
    env = {"PYTHONHASHSEED": "0", "LC_ALL": "C.UTF-8", "PATH": os.defpath}
    return _run([str(loaders[0]), str(bundle / "bin" / "python3"), *args], what=what, env=env)
