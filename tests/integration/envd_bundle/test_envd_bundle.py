"""The envd bundle, for real: built from this checkout, run by chroot in images without Python.

Readiness is a line the server prints after binding, never a sleep, and no assertion is
about elapsed time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hutch.node.envd_bundle import BundleInfo, EnvdBundleError, build_envd_bundle, envd_argv
from hutch.node.envd_bundle_files import content_digest
from hutch.shared.paths import ENVD_BUNDLE_DIR_IN_SANDBOX, ENVD_PORT
from tests.conftest import machine_lacks

pytestmark = pytest.mark.root

PYTHON = f"{ENVD_BUNDLE_DIR_IN_SANDBOX}/bin/python3"
#: What the image might set to lure an interpreter away from its own files. DT_RPATH and -I
#: must make all of it irrelevant; /poison holds garbage libraries of the bundle's sonames.
POISONED_ENV = {
    "PATH": os.environ.get("PATH", os.defpath),  # finds chroot and ip on the host
    "PYTHONHOME": "/poison",
    "PYTHONPATH": "/poison",
    "PYTHONSTARTUP": "/poison/startup.py",
    "LD_LIBRARY_PATH": "/poison:/lib",
}
IMPORTS = "import asyncio, uvicorn, starlette, multipart, connectrpc, protobuf, inotify_simple"

CHECK_SCRIPT = textwrap.dedent(
    f"""
    import sys
    {IMPORTS}
    import hutch.shared.proto.process.process_connect  # connectrpc's client half: pyqwest
    with inotify_simple.INotify() as ino:  # ctypes into the bundled libc
        ino.add_watch("/", inotify_simple.flags.CREATE)
    outside = [p for p in sys.path if not p.startswith("{ENVD_BUNDLE_DIR_IN_SANDBOX}/")]
    assert not outside, outside
    assert sys.prefix == "{ENVD_BUNDLE_DIR_IN_SANDBOX}", sys.prefix
    assert sys.flags.isolated and sys.dont_write_bytecode
    print("OK", sys.version.split()[0])
    """
)

#: A stand-in for envd with envd's whole dependency set, until `-m hutch.envd` is tested too.
SERVE_SCRIPT = textwrap.dedent(
    f"""
    import socket
    {IMPORTS}
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def health(request):
        return Response(status_code=204)

    sock = socket.socket()
    sock.bind(("127.0.0.1", {ENVD_PORT}))
    sock.listen(128)
    print("READY", flush=True)  # connections wait in the backlog until uvicorn accepts
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/health", health)]),
                                           log_level="warning", lifespan="off"))
    asyncio.run(server.serve(sockets=[sock]))
    """
)

CLIENT_SCRIPT = textwrap.dedent(
    f"""
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:{ENVD_PORT}/health", timeout=30) as r:
        print(r.status)
    """
)


def _poison(rootfs: Path) -> None:
    poison = rootfs / "poison"
    if poison.exists():
        return
    poison.mkdir()
    for soname in ("libc.so.6", "libpython3.11.so.1.0", "libssl.so.3", "libz.so.1", "os.py"):
        (poison / soname).write_text("garbage\n")
    (poison / "startup.py").write_text("raise SystemExit('PYTHONSTARTUP was read')\n")


def _in_rootfs(rootfs: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    _poison(rootfs)
    return subprocess.run(
        ["chroot", str(rootfs), *argv],
        env=POISONED_ENV,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@contextmanager
def _serving(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    """Run a server until it prints READY (or exits); stop it by its own PID afterwards."""
    proc = subprocess.Popen(
        argv,
        env=POISONED_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "READY":
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"server did not start: {line!r} {err[-3000:]}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def _get_health(netns: str, *, retry: bool = False) -> str:
    """GET /health from inside ``netns``; with ``retry``, a refused connection is "" ."""
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-I", "-c", CLIENT_SCRIPT],
        capture_output=True,
        text=True,
        check=False,
    )
    if retry and "Connection refused" in done.stderr:
        return ""
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_bundle_imports_envd_dependencies_in_rootfs(rootfs: Path) -> None:
    done = _in_rootfs(rootfs, [PYTHON, "-I", "-B", "-c", CHECK_SCRIPT])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK 3.")


def test_bundle_serves_http_in_rootfs(rootfs: Path, netns: str) -> None:
    argv = ["ip", "netns", "exec", netns, "chroot", str(rootfs), PYTHON, "-I", "-B", "-c"]
    _poison(rootfs)
    with _serving([*argv, SERVE_SCRIPT]):
        assert _get_health(netns) == "204"


def test_bundle_launcher_starts_envd_without_a_shell(bundle: BundleInfo, rootfs: Path) -> None:
    # bin/envd is a "#!" script: the kernel runs it, so it works where no /bin/sh exists.
    done = _in_rootfs(rootfs, [f"{ENVD_BUNDLE_DIR_IN_SANDBOX}/bin/envd", "--help"])
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_bundle_runs_real_envd(bundle: BundleInfo, rootfs: Path, netns: str) -> None:
    # envd needs a /tmp and a /proc, which the runtime gives every sandbox: give them here
    # too, so the image with nothing at all (no libc, no shell) runs the real envd as well.
    (rootfs / "proc").mkdir(exist_ok=True)
    (rootfs / "tmp").mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    # envd itself, started the way the runtime starts it (envd_argv). --mount-proc mounts a
    # /proc in the mount namespace `ip netns exec` made, which ends with the process.
    argv = [
        *("ip", "netns", "exec", netns, "unshare", f"--mount-proc={rootfs}/proc"),
        *("chroot", str(rootfs), *envd_argv()),
        *("--host", "127.0.0.1", "--port", str(ENVD_PORT), "--state-dir", "/tmp/envd-state"),
    ]
    _poison(rootfs)
    proc = subprocess.Popen(
        argv,
        env=POISONED_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # envd prints nothing when ready, so ask until it answers; the server's exit ends
        # the wait too. Only pytest's timeout bounds this: it is no assertion about time.
        status = ""
        while proc.poll() is None and status != "204":
            status = _get_health(netns, retry=True)
        assert status == "204", proc.communicate()[1][-3000:]
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        proc.stderr.close()  # type: ignore[union-attr]


def test_bundle_metadata_names_the_argv_and_contents(bundle: BundleInfo) -> None:
    meta = json.loads((bundle.path / "bundle.json").read_text())
    assert meta["argv"] == envd_argv()
    assert meta["python_version"] == bundle.python_version
    assert meta["distributions"]["uvicorn"] == "0.54.0"
    site = bundle.path / "lib" / "python3.11" / "site-packages"
    assert sorted(p.name for p in (site / "hutch").iterdir() if p.name != "__pycache__") == sorted(
        meta["hutch"]
    )
    stdlib = bundle.path / "lib" / "python3.11"
    for absent in ("test", "idlelib", "tkinter", "ensurepip", "lib2to3", "turtledemo"):
        assert not (stdlib / absent).exists(), absent
    sources = [
        p for p in bundle.path.rglob("*.py") if "bin" not in p.relative_to(bundle.path).parts
    ]
    missing = [p for p in sources if not list(p.parent.glob(f"__pycache__/{p.stem}.cpython-*.pyc"))]
    assert not missing, missing[:5]


def test_bundle_digest_is_stable_and_follows_the_source(
    bundle: BundleInfo, hutch_source: Path, tmp_path: Path
) -> None:
    assert (bundle.path / "SHA256").read_text().strip() == bundle.sha256
    assert content_digest(bundle.path) == bundle.sha256
    again = build_envd_bundle(tmp_path / "again", source=hutch_source)
    assert again.sha256 == bundle.sha256

    source = tmp_path / "src" / "hutch"
    shutil.copytree(hutch_source, source)
    changed = build_envd_bundle(tmp_path / "changed", source=source)
    assert changed.sha256 == bundle.sha256  # same files, another place: same bundle
    (source / "shared" / "paths.py").write_text(
        (source / "shared" / "paths.py").read_text() + "\n# changed\n"
    )
    changed = build_envd_bundle(tmp_path / "changed", source=source)  # replaces the old one
    assert changed.sha256 != bundle.sha256
    assert (tmp_path / "changed" / "SHA256").read_text().strip() == changed.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "changed", "src"]


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"python": "/nonexistent/python3"}, "does not exist"),
        ({"requirements": ("uvicorn==0.0.1",)}, "is pinned"),
        ({"requirements": ("no-such-distribution-hutch==1",)}, "not installed"),
    ],
)
def test_bundle_failed_build_leaves_nothing(
    tmp_path: Path, options: dict[str, object], reason: str
) -> None:
    with pytest.raises(EnvdBundleError, match=reason):
        build_envd_bundle(tmp_path / "out", **options)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_installed_bundle_records_its_own_digest() -> None:
    """install.sh's bundle: the SHA256 it carries is the digest of what is really there.

    Template fingerprints and injected copies rely on it; a stamp written into the bundle
    after sealing once made the two disagree.
    """
    installed = Path(os.environ.get("HUTCH_HOME", "/var/lib/hutch")) / "envd"
    if not (installed / "SHA256").is_file():
        machine_lacks(f"no installed envd bundle at {installed} (run ./install.sh)")
    assert (installed / "SHA256").read_text().strip() == content_digest(installed)
