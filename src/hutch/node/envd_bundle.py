"""Build envd's self-contained bundle: one directory that runs envd in any sandbox image.

envd is Python, but a template's image may have no Python, musl instead of glibc, or no libc
at all. The bundle carries everything envd needs and starts through its own dynamic loader::

    bin/python3          the interpreter; PT_INTERP = <dir in sandbox>/lib/ld-linux-*.so.2,
                         DT_RPATH = $ORIGIN/../lib:<dir in sandbox>/lib
    bin/envd             launcher: a "#!" line naming bin/python3 (the kernel reads it, no shell)
    lib/ld-linux-*.so.2  the loader, libc and the rest of the ldd closure of every ELF file
    lib/python3.X/       trimmed stdlib, lib-dynload/, site-packages/ (envd's dependency
                         closure and hutch's envd subset), all with fresh .pyc files
    bundle.json          python version, distributions, the argv that starts envd
    SHA256               content digest of everything else (part of every template fingerprint)

Start it as :func:`envd_argv` says. The bundle sits at
:data:`~hutch.shared.paths.ENVD_BUNDLE_DIR_IN_SANDBOX` inside every sandbox, because the
interpreter's loader path is absolute. See docs/envd-bundle.md for the measurements.

Run ``python -m hutch.node.envd_bundle build --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hutch.node import envd_bundle_files as files
from hutch.node import envd_bundle_tools as tools
from hutch.node.envd_bundle_tools import EnvdBundleError
from hutch.shared.paths import ENVD_BUNDLE_DIR_IN_SANDBOX

__all__ = [
    "ENVD_REQUIREMENTS",
    "BundleInfo",
    "EnvdBundleError",
    "build_envd_bundle",
    "bundled_python_argv",
    "envd_argv",
    "main",
]

#: envd's direct dependencies, pinned as in pyproject.toml. Their installed closure (pyqwest,
#: anyio, h11, click...) is bundled too; a version that differs from the pin fails the build.
ENVD_REQUIREMENTS: tuple[str, ...] = (
    "connectrpc==0.12.1",
    "protobuf-py==0.6.0",
    "uvicorn==0.54.0",
    "httptools==0.9.0",  # uvicorn's C HTTP/1.1 parser (envd.main.HTTP_PROTOCOL)
    "starlette==1.10.0",
    "python-multipart==0.0.34",
    "inotify_simple==2.0.1",
)
#: Interpreter flags: -I ignores every PYTHON* variable the image sets (PYTHONHOME,
#: PYTHONPATH) and the user's site directory; -B never writes bytecode into the bundle, which
#: may be a read-only mount or part of the template whose digest must not drift.
_PYTHON_FLAGS = ("-I", "-B")
_BUNDLE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class BundleInfo:
    """A built bundle: where it is, its content digest, its Python, its size."""

    path: Path
    sha256: str
    python_version: str
    size_bytes: int


def envd_argv(*, bundle_dir: str = ENVD_BUNDLE_DIR_IN_SANDBOX) -> list[str]:
    """The argv that starts envd from the bundle; append envd's own options.

    The first element is an ELF executable, so the runtime can exec it in an image with no
    shell. ``<bundle_dir>/bin/envd`` is the same thing as a script for humans.
    """
    return [f"{bundle_dir}/bin/python3", *_PYTHON_FLAGS, "-m", "hutch.envd"]


def bundled_python_argv(*, bundle_dir: str = ENVD_BUNDLE_DIR_IN_SANDBOX) -> list[str]:
    """The bundle's interpreter with envd's flags; append a script (the entrypoint wrapper)."""
    return [f"{bundle_dir}/bin/python3", *_PYTHON_FLAGS]


def build_envd_bundle(
    out_dir: Path | str,
    *,
    python: Path | str | None = None,
    source: Path | str | None = None,
    requirements: Sequence[str] = ENVD_REQUIREMENTS,
) -> BundleInfo:
    """Build the bundle into ``out_dir`` (replacing it) and return what was built.

    ``python`` is the interpreter to bundle, whose environment must have ``requirements``
    installed (default: the running one). ``source`` is the ``hutch`` package directory whose
    envd subset ships (default: this installation's). The build happens in a temporary
    directory beside ``out_dir`` and is renamed into place at the end; if any step fails,
    :class:`EnvdBundleError` says which and nothing is left at ``out_dir``.
    """
    out = Path(out_dir).absolute()
    python_path = Path(python) if python is not None else Path(sys.executable)
    source_dir = Path(source) if source is not None else Path(__file__).resolve().parents[1]
    if not (source_dir / "__init__.py").is_file():
        raise EnvdBundleError(f"{source_dir} is not a python package directory")
    if not python_path.exists():
        raise EnvdBundleError(f"python {python_path} does not exist")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        info = _build_into(
            staging, python=python_path, source=source_dir, requirements=requirements
        )
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BundleInfo(
        path=out, sha256=info.sha256, python_version=info.python_version, size_bytes=info.size_bytes
    )


def _build_into(
    root: Path, *, python: Path, source: Path, requirements: Sequence[str]
) -> BundleInfo:
    probe = tools.probe_python(python, requirements=requirements)
    _check_probe(probe, requirements)
    pyver = probe["version_short"]
    stdlib_dir = root / "lib" / f"python{pyver}"
    site_packages = stdlib_dir / "site-packages"

    interpreter = root / "bin" / "python3"
    interpreter.parent.mkdir(parents=True)
    shutil.copy2(probe["executable"], interpreter)
    lib_dynload = Path(probe["lib_dynload"]) if probe["lib_dynload"] else None
    files.copy_stdlib(Path(probe["stdlib"]), stdlib_dir, lib_dynload=lib_dynload)
    site_packages.mkdir(parents=True, exist_ok=True)
    distributions = {}
    for dist in sorted(probe["distributions"].values(), key=lambda d: d["name"].lower()):
        files.copy_distribution(dist["files"], site_packages)
        distributions[dist["name"]] = dist["version"]
    hutch_parts = files.copy_hutch_subset(source, site_packages)

    loader_name = _bundle_libraries(root, interpreter=interpreter, stdlib_dir=stdlib_dir)
    _write_launcher(root)
    metadata = {
        "format": _BUNDLE_FORMAT,
        "python_version": probe["version"],
        "dir_in_sandbox": ENVD_BUNDLE_DIR_IN_SANDBOX,
        "loader": f"lib/{loader_name}",
        "argv": envd_argv(),
        "distributions": distributions,
        "hutch": sorted(hutch_parts),
    }
    (root / "bundle.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    files.normalize_modes(root)
    _compile_bytecode(root, stdlib_dir=stdlib_dir)
    files.normalize_modes(root)
    try:
        digest = files.content_digest(root)
    except (OSError, ValueError) as exc:
        raise EnvdBundleError(f"cannot compute the bundle's sha256: {exc}") from exc
    files.write_digest(root, digest)
    return BundleInfo(
        path=root, sha256=digest, python_version=probe["version"], size_bytes=files.tree_size(root)
    )


def _check_probe(probe: dict[str, Any], requirements: Sequence[str]) -> None:
    if probe.get("implementation") != "cpython":
        raise EnvdBundleError(f"only CPython can be bundled, not {probe.get('implementation')}")
    if probe.get("machine") != "x86_64":
        # The loader name and the ELF handling assume x86-64 glibc; say so rather than
        # produce a bundle that cannot start.
        raise EnvdBundleError(f"only x86_64 is supported, not {probe.get('machine')}")
    if probe["missing"]:
        raise EnvdBundleError(f"not installed for that python: {', '.join(probe['missing'])}")
    installed = {name.replace("_", "-").lower(): d for name, d in probe["distributions"].items()}
    for req in requirements:
        name, _, pinned = req.partition("==")
        dist = installed.get(name.strip().replace("_", "-").replace(".", "-").lower())
        if dist is None or (pinned and dist["version"] != pinned.strip()):
            found = dist["version"] if dist else "nothing"
            raise EnvdBundleError(f"{req} is pinned, but that python has {found}")


def _bundle_libraries(root: Path, *, interpreter: Path, stdlib_dir: Path) -> str:
    """Copy the loader and the ldd closure into ``lib/`` and point every ELF file at them."""
    lib = root / "lib"
    extensions = sorted(p for p in stdlib_dir.rglob("*.so*") if tools.is_elf(p))
    closure = tools.library_closure([interpreter, *extensions])
    if closure.loader is None:
        raise EnvdBundleError(f"{interpreter} names no dynamic loader (is it static or musl?)")
    loader = lib / closure.loader.name
    shutil.copy2(closure.loader.resolve(), loader)
    copied = []
    for soname, path in sorted(closure.libraries.items()):
        target = lib / soname
        shutil.copy2(path.resolve(), target)
        copied.append(target)
    # The loader and libc are left as Debian built them; everything else loses its debug
    # sections and static symbols (a source-built libpython carries 17 MB of them).
    to_strip = [interpreter, *extensions]
    to_strip += [p for p in copied if not p.name.startswith(("libc.so", "ld-linux"))]
    tools.strip_symbols(to_strip)
    tools.set_interpreter(
        interpreter, interpreter=f"{ENVD_BUNDLE_DIR_IN_SANDBOX}/lib/{loader.name}"
    )
    # $ORIGIN of the *main program* is read from /proc/self/exe, which a sandbox without /proc
    # lacks; the absolute path is the fallback there (PT_INTERP is absolute anyway).
    tools.set_rpath(interpreter, rpath=f"$ORIGIN/../lib:{ENVD_BUNDLE_DIR_IN_SANDBOX}/lib")
    for elf in [*copied, *extensions]:
        if elf.name.startswith(("libc.so", "ld-linux")):
            continue
        up = "/".join([".."] * len(elf.parent.relative_to(lib).parts))
        tools.set_rpath(elf, rpath="$ORIGIN" + (f"/{up}" if up else ""))
    return loader.name


def _write_launcher(root: Path) -> None:
    # The kernel itself interprets "#!", so this works in an image without any shell. Linux
    # passes everything after the interpreter as *one* argument: hence "-IB", not "-I -B".
    flags = "-" + "".join(flag.lstrip("-") for flag in _PYTHON_FLAGS)
    launcher = root / "bin" / "envd"
    launcher.write_text(
        f"#!{ENVD_BUNDLE_DIR_IN_SANDBOX}/bin/python3 {flags}\n"
        '"""Start envd from its bundle: the same as `python3 -I -B -m hutch.envd ARGS`."""\n'
        "import runpy\n\n"
        'runpy.run_module("hutch.envd", run_name="__main__", alter_sys=True)\n'
    )
    launcher.chmod(0o755)


def _compile_bytecode(root: Path, *, stdlib_dir: Path) -> None:
    """Precompile every module with unchecked hashes: fast starts and a stable digest.

    Unchecked-hash ``.pyc`` files hold no timestamp and are never compared with their
    source at import; the names inside them are the paths in the sandbox, not the temporary
    build directory, so the bytes do not depend on where the build ran. Compiling with the
    bundle's own interpreter also proves that it starts.
    """
    tools.run_bundled_python(
        root,
        [
            # Not -I: it would also ignore PYTHONHASHSEED. The environment is fixed by
            # run_bundled_python instead, and -s leaves out the user's site directory.
            "-s",
            "-m",
            "compileall",
            "-q",
            "-f",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(root),
            "-p",
            ENVD_BUNDLE_DIR_IN_SANDBOX,
            str(stdlib_dir),
        ],
        what="precompiling the bundle's python files",
    )


def _replace_dir(new: Path, out: Path) -> None:
    """Put ``new`` at ``out``; an existing ``out`` is moved aside first, then removed."""
    aside = None
    if out.exists() or out.is_symlink():
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(aside / "old")
    new.rename(out)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hutch.node.envd_bundle build --out DIR [--python P] [--source DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m hutch.node.envd_bundle", description=(__doc__ or "").splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the bundle into DIR (replacing it)")
    build.add_argument("--out", required=True, type=Path, help="directory to create")
    build.add_argument("--python", type=Path, default=None, help="interpreter to bundle")
    build.add_argument("--source", type=Path, default=None, help="the hutch package directory")
    args = parser.parse_args(argv)
    try:
        info = build_envd_bundle(args.out, python=args.python, source=args.source)
    except EnvdBundleError as exc:
        print(f"envd bundle: {exc.message}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "path": str(info.path),
                "sha256": info.sha256,
                "python_version": info.python_version,
                "size_bytes": info.size_bytes,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
