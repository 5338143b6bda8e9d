"""The ``code-interpreter-v1`` template: E2B's code interpreter, built from ``base``.

E2B's default name for ``e2b_code_interpreter.Sandbox.create()``, also answering to
``code-interpreter`` (the store row's alias); 2 vCPUs and 2 GiB, like E2B's. Built with the
step builder (``build.py``) in a build sandbox (``local_build.py``), from Debian and PyPI
packages only:

1. ``RUN`` as root: the host's own CA certificates (``/usr/local/share/ca-certificates``,
   e.g. a TLS-inspecting egress proxy's) are trusted in the template as on the host, and
   ``/etc/pip.conf`` points pip at the system store; ``apt-get install python3-venv
   python3-pip``; Debian's ``EXTERNALLY-MANAGED`` marker is removed, so that pip as root
   installs into ``/usr/local`` as in E2B's python image (``pip install``, ``%pip
   install`` and the SDK's ``Template().pip_install()`` then reach the kernel); pip and
   the kernel's packages (``interpreter-kernel.txt``, fully pinned, resolved together with
   the server's ``requirements-kernel.txt``).
2. ``RUN`` as root: the server's own virtual environment, ``/opt/hutch/interpreter/venv``,
   with the server's pinned ``requirements.txt`` (``hutch/interpreter/requirements.txt``),
   apart from the kernel's packages so that nothing a user installs can break it.
3. ``COPY`` the server's source (``hutch/interpreter``, with byte code compiled on this
   host when it runs the template's Python version) to ``/opt/hutch/interpreter/src``.

Start command: the server as root (as E2B's, whose Jupyter runs as root), ``python -m
hutch.interpreter --port 49999`` with ``/usr/bin/python3`` as the kernels' Python, its log
in ``/var/log/hutch-interpreter.log``; ready command: ``GET :49999/health`` answers 2xx.
The default user stays ``user`` in ``/home/user``.

A second build with the same definition, server source and requirements (and the same
``base``) is skipped: :func:`is_current` compares the published fingerprint. A changed
server source rebuilds only step 3 (the per-step cache keeps steps 1 and 2).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import py_compile
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Final

from hutch.node.templates.artifact import (
    TemplateArtifact,
    TemplateNotFoundError,
    read_artifact,
)
from hutch.node.templates.build import BuildLog, BuildSpec, build_fingerprint
from hutch.node.templates.image import prune_artifacts, published_chains
from hutch.shared.errors import NotFoundError

NAME: Final = "code-interpreter-v1"
ALIAS: Final = "code-interpreter"
CPU_COUNT: Final = 2.0
MEMORY_MB: Final = 2048
PORT: Final = 49999
#: The Python the kernels run on (Debian 12's), packages under /usr/local.
KERNEL_PYTHON: Final = "/usr/bin/python3"
KERNEL_PYTHON_VERSION: Final = (3, 11)
SERVER_DIR: Final = "/opt/hutch/interpreter"
SERVER_VENV: Final = f"{SERVER_DIR}/venv"
SERVER_SRC: Final = f"{SERVER_DIR}/src"
SERVER_LOG: Final = "/var/log/hutch-interpreter.log"
PIP_VERSION: Final = "26.3"
APT_PACKAGES: Final = ("python3-venv", "python3-pip")
#: The R kernel: Debian's R with IRkernel (CRAN itself is not used).
R_APT_PACKAGES: Final = ("r-base-core", "r-cran-irkernel")
#: Where the R kernelspec goes (the server's lookup finds them).
KERNELSPEC_PREFIX: Final = "/usr/local"
KERNEL_REQUIREMENTS: Final = Path(__file__).with_name("interpreter-kernel.txt")
HOST_CA_DIR: Final = Path("/usr/local/share/ca-certificates")

START_CMD: Final = (
    f"exec sudo -H sh -c 'exec {SERVER_VENV}/bin/python -m hutch.interpreter --port {PORT}"
    f" --python {KERNEL_PYTHON} >>{SERVER_LOG} 2>&1'"
)
READY_CMD: Final = f"curl -sf -o /dev/null --max-time 2 http://127.0.0.1:{PORT}/health"


def server_package() -> Path:
    """The server's source in this install (``hutch/interpreter``), read as data only."""
    return Path(__file__).resolve().parents[2] / "interpreter"


def host_ca_certificates(ca_dir: Path = HOST_CA_DIR) -> list[tuple[str, str]]:
    """``(file name, PEM)`` of the certificates this host's administrator added."""
    if not ca_dir.is_dir():
        return []
    return [(p.name, p.read_text()) for p in sorted(ca_dir.rglob("*.crt")) if p.is_file()]


def _heredoc(command: str, text: str) -> str:
    return f"{command} <<'HUTCH_EOF'\n{text.rstrip()}\nHUTCH_EOF"


def system_script(*, kernel_requirements: str, cas: list[tuple[str, str]]) -> str:
    """Step 1: CAs, Debian packages, pip and the kernel's packages, as root."""
    lines = [
        "set -eu",
        "export DEBIAN_FRONTEND=noninteractive HOME=/root PIP_NO_CACHE_DIR=1"
        " PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore",
    ]
    if cas:
        lines.append("mkdir -p /usr/local/share/ca-certificates/hutch-host")
        for name, pem in cas:
            lines.append(_heredoc(f"cat > /usr/local/share/ca-certificates/hutch-host/{name}", pem))
    lines += [
        "update-ca-certificates >/dev/null",
        "printf '[global]\\ncert = /etc/ssl/certs/ca-certificates.crt\\n' > /etc/pip.conf",
        "apt-get update -qq",
        f"apt-get install -y -qq --no-install-recommends {' '.join(APT_PACKAGES)} >/dev/null",
        "apt-get clean",
        "rm -rf /var/lib/apt/lists/*",
        "rm -f /usr/lib/python3*/EXTERNALLY-MANAGED",
        f"{KERNEL_PYTHON} -m pip install -q pip=={PIP_VERSION}",
        _heredoc(f"{KERNEL_PYTHON} -m pip install -q -r /dev/stdin", kernel_requirements),
    ]
    return "\n".join(lines)


_PURELIB: Final = "'import sysconfig; print(sysconfig.get_path(\"purelib\"))'"


def r_script() -> str:
    """Step 3: R and IRkernel from Debian, its kernelspec (language ``R``), as root."""
    spec = (
        '{"argv": ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"],'
        ' "display_name": "R", "language": "R", "interrupt_mode": "signal"}'
    )
    kernels = f"{KERNELSPEC_PREFIX}/share/jupyter/kernels"
    return "\n".join(
        [
            "set -eu",
            "export DEBIAN_FRONTEND=noninteractive HOME=/root",
            "apt-get update -qq",
            f"apt-get install -y -qq --no-install-recommends {' '.join(R_APT_PACKAGES)} >/dev/null",
            "apt-get clean",
            "rm -rf /var/lib/apt/lists/*",
            f"mkdir -p {kernels}/ir",
            f"printf '%s\\n' '{spec}' > {kernels}/ir/kernel.json",
            "R --slave -e 'library(IRkernel)'",
        ]
    )


def server_script(*, server_requirements: str) -> str:
    """Step 2: the server's own virtual environment, as root."""
    pip = f"{SERVER_VENV}/bin/pip"
    return "\n".join(
        [
            "set -eu",
            "export HOME=/root PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
            f"{KERNEL_PYTHON} -m venv {SERVER_VENV}",
            f"{pip} install -q pip=={PIP_VERSION}",
            _heredoc(f"{pip} install -q -r /dev/stdin", server_requirements),
            f"site=$({SERVER_VENV}/bin/python -c {_PURELIB})",
            f'echo {SERVER_SRC} > "$site/hutch-interpreter.pth"',
        ]
    )


def server_archive(package: Path, *, top: str = "interpreter", src_dir: str = SERVER_SRC) -> bytes:
    """A reproducible tar of ``package`` as ``<top>/...``, byte code included when this
    host's Python is the template's (hash-checked, so file times do not matter); the byte
    code names its source as installed, ``<src_dir>/hutch/<top>/...``."""
    compile_here = sys.version_info[:2] == KERNEL_PYTHON_VERSION
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=buf, mode="w") as tar:
        files = sorted(
            p for p in package.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )  # fmt: skip
        entries: list[tuple[str, bytes]] = []
        for path in files:
            rel = path.relative_to(package).as_posix()
            entries.append((rel, path.read_bytes()))
            if compile_here and path.suffix == ".py":
                cfile = Path(tmp) / "c.pyc"
                py_compile.compile(
                    str(path), cfile=str(cfile), dfile=f"{src_dir}/hutch/{top}/{rel}",
                    doraise=True, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
                )  # fmt: skip
                tag = sys.implementation.cache_tag
                parent = Path(rel).parent.as_posix()
                pyc = f"{parent}/__pycache__/{path.stem}.{tag}.pyc".lstrip("./")
                entries.append((pyc, cfile.read_bytes()))
        dirs = sorted({p for rel, _ in entries for p in _parents(rel)})
        for d in ["", *dirs]:
            info = tarfile.TarInfo(f"{top}/{d}".rstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for rel, data in sorted(entries):
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def template_spec(
    templates_dir: Path, *, force: bool = False, package: Path | None = None
) -> BuildSpec:
    """The build of ``code-interpreter-v1`` from this install's ``base`` and server source.

    Stores the server's archive under ``<home>/template-files`` (by its hash).

    Raises:
        NotFoundError: the server's source or its requirements are missing, or ``base``
            is not built.
    """
    package = package or server_package()
    requirements = package / "requirements.txt"
    if not (package / "__main__.py").is_file() or not requirements.is_file():
        raise NotFoundError(
            f"the code-interpreter server is not in this install ({package}: __main__.py and "
            "requirements.txt)"
        )
    base = read_artifact(templates_dir / "base")
    archive = server_archive(package)
    files_hash = hashlib.sha256(archive).hexdigest()
    files_dir = templates_dir.parent / "template-files"
    files_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not (files_dir / files_hash).is_file():
        tmp = files_dir / f".tmp-{files_hash}-{os.getpid()}"
        tmp.write_bytes(archive)
        os.replace(tmp, files_dir / files_hash)
    steps = [
        {"type": "RUN", "args": [system_script(
            kernel_requirements=_kernel_requirements(package), cas=host_ca_certificates(),
        ), "root"]},
        {"type": "RUN", "args": [
            server_script(server_requirements=requirements.read_text()), "root",
        ]},
        {"type": "RUN", "args": [r_script(), "root"]},
        {"type": "COPY", "args": ["interpreter", f"{SERVER_SRC}/hutch/interpreter", "root", ""],
         "filesHash": files_hash},
    ]  # fmt: skip
    return BuildSpec(
        name=NAME, base=base, steps=steps, start_cmd=START_CMD, ready_cmd=READY_CMD,
        force=force, cpu_count=CPU_COUNT, memory_mb=MEMORY_MB, files_dir=files_dir,
        alias=ALIAS,
    )  # fmt: skip


def _kernel_requirements(package: Path) -> str:
    """The template's pinned kernel stack, then what the server says its kernels need
    (``requirements-kernel.txt``): one pip resolution, so a pin that disagrees fails the
    build instead of installing two versions."""
    text = KERNEL_REQUIREMENTS.read_text().rstrip() + "\n"
    server_side = package / "requirements-kernel.txt"
    if server_side.is_file():
        text += f"# {server_side.name} of hutch.interpreter\n{server_side.read_text()}"
    return text


def is_current(templates_dir: Path, spec: BuildSpec) -> TemplateArtifact | None:
    """The published template if it was built from exactly ``spec``, else None."""
    try:
        published = read_artifact(templates_dir / spec.name)
    except TemplateNotFoundError:
        return None
    run = published.image
    same = (
        published.build.get("fingerprint") == build_fingerprint(spec)
        and run is not None
        and (run.start_cmd, run.ready_cmd) == (spec.start_cmd, spec.ready_cmd)
        and (published.cpu_count, published.memory_mb) == (spec.cpu_count, spec.memory_mb)
        and published.alias == spec.alias
    )
    return published if same else None


def build_interpreter(
    templates_dir: Path,
    *,
    force: bool = False,
    log: BuildLog | None = None,
) -> TemplateArtifact:
    """Build and publish ``code-interpreter-v1`` unless it is current; return it.

    Intermediate step artifacts of earlier builds that no template uses any more are
    pruned afterwards; the step caches of this build and of every published template's
    last build are kept for the next one.
    """
    from hutch.node.templates.local_build import build_locally

    spec = template_spec(templates_dir, force=force)
    if not force and (current := is_current(templates_dir, spec)) is not None:
        return current
    say = log or (lambda level, message, step: None)
    built = asyncio.run(build_locally(spec, home=templates_dir.parent, log=say))
    prune_artifacts(templates_dir, keep=published_chains(templates_dir))
    return built
