"""The ``mcp-gateway`` template: E2B's default for ``Sandbox.create(mcp={...})``, from ``base``.

The SDK creates from it and runs ``mcp-gateway --config '<json>'`` as root
(docs/mcp.md). Built with the step builder in a build sandbox (``local_build.py``), as
``code-interpreter-v1`` is (ADR 0018), from Debian, npm and PyPI packages:

1. ``RUN`` as root, one script of three parts (one step, so one seal of the tree: each
   step's seal copies the whole tree, so fewer steps keep the cold build, which CI pays on
   every run, and the step cache on disk small):

   * the host's own CA certificates trusted as on the host (pip and npm pointed at the
     system store), then Debian's ``nodejs``, ``npm``, ``git`` and ``python3-venv``;
   * the catalog's servers, pinned (``hutch/mcpgateway/catalog.py``): the npm ones under
     ``/opt/mcp-gateway/servers/npm``, the PyPI ones in the venv
     ``/opt/mcp-gateway/servers/venv`` (the script is made from the catalog);
   * the gateway's own venv, ``/opt/mcp-gateway/venv``, with its pinned
     ``requirements.txt`` (the ``mcp`` SDK), and ``/usr/local/bin/mcp-gateway``.
2. ``COPY`` the gateway's source (``hutch/mcpgateway``) to ``/opt/mcp-gateway/src``.

No start command: the gateway is started by the SDK's command, with the caller's token.
A definition, source and ``base`` that did not change are not rebuilt (the fingerprint,
as for ``code-interpreter-v1``); a changed gateway source reruns only step 2, a changed
pin or requirement step 1.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Final

from hutch.mcpgateway.catalog import CATALOG, install_script
from hutch.node.templates.artifact import TemplateArtifact, read_artifact
from hutch.node.templates.build import BuildLog, BuildSpec
from hutch.node.templates.image import prune_artifacts, published_chains
from hutch.node.templates.interpreter import (
    KERNEL_PYTHON,
    PIP_VERSION,
    _heredoc,
    host_ca_certificates,
    is_current,
    server_archive,
)
from hutch.shared.errors import NotFoundError

NAME: Final = "mcp-gateway"
CPU_COUNT: Final = 2.0
MEMORY_MB: Final = 1024
PORT: Final = 50005
ROOT: Final = "/opt/mcp-gateway"
SERVERS_DIR: Final = f"{ROOT}/servers"
GATEWAY_VENV: Final = f"{ROOT}/venv"
GATEWAY_SRC: Final = f"{ROOT}/src"
APT_PACKAGES: Final = ("nodejs", "npm", "git", "python3-venv")
SYSTEM_CA_BUNDLE: Final = "/etc/ssl/certs/ca-certificates.crt"


def gateway_package() -> Path:
    """The gateway's source in this install (``hutch/mcpgateway``), read as data only."""
    return Path(__file__).resolve().parents[2] / "mcpgateway"


def system_script(*, cas: list[tuple[str, str]]) -> str:
    """Step 1's first part: CAs and Debian packages, as root."""
    lines = ["set -eu", "export DEBIAN_FRONTEND=noninteractive HOME=/root"]
    if cas:
        lines.append("mkdir -p /usr/local/share/ca-certificates/hutch-host")
        for name, pem in cas:
            lines.append(_heredoc(f"cat > /usr/local/share/ca-certificates/hutch-host/{name}", pem))
    lines += [
        "update-ca-certificates >/dev/null",
        f"printf '[global]\\ncert = {SYSTEM_CA_BUNDLE}\\n' > /etc/pip.conf",
        f"printf 'cafile={SYSTEM_CA_BUNDLE}\\nfund=false\\naudit=false\\n"
        "update-notifier=false\\n' > /etc/npmrc",
        "apt-get update -qq",
        f"apt-get install -y -qq --no-install-recommends {' '.join(APT_PACKAGES)} >/dev/null",
        "apt-get clean",
        "rm -rf /var/lib/apt/lists/*",
    ]
    return "\n".join(lines)


def servers_script() -> str:
    """Step 1's second part: every catalog server, pinned, as ``mcp-gateway pull``
    installs them (the
    catalog is the gateway's own, ``hutch/mcpgateway/catalog.py``, read as data)."""
    script = install_script(
        list(CATALOG.values()), servers_dir=Path(SERVERS_DIR), python=KERNEL_PYTHON
    )
    env = (
        "export HOME=/root PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1"
        f" npm_config_cache=/tmp/npm-cache NODE_EXTRA_CA_CERTS={SYSTEM_CA_BUNDLE}"
    )
    return "\n".join([script.split("\n", 1)[0], env, script.split("\n", 1)[1],
                      "rm -rf /tmp/npm-cache"])  # fmt: skip


def gateway_script(*, requirements: str) -> str:
    """Step 1's last part: the gateway's own venv and its command, as root."""
    pip = f"{GATEWAY_VENV}/bin/pip"
    purelib = "'import sysconfig; print(sysconfig.get_path(\"purelib\"))'"
    wrapper = f'#!/bin/sh\nexec {GATEWAY_VENV}/bin/python -m hutch.mcpgateway "$@"\n'
    return "\n".join(
        [
            "set -eu",
            "export HOME=/root PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
            f"{KERNEL_PYTHON} -m venv {GATEWAY_VENV}",
            f"{pip} install -q pip=={PIP_VERSION}",
            _heredoc(f"{pip} install -q -r /dev/stdin", requirements),
            f"site=$({GATEWAY_VENV}/bin/python -c {purelib})",
            f'echo {GATEWAY_SRC} > "$site/hutch-mcpgateway.pth"',
            _heredoc("cat > /usr/local/bin/mcp-gateway", wrapper),
            "chmod 755 /usr/local/bin/mcp-gateway",
            "mkdir -p /etc/mcp-gateway /var/log/mcp-gateway && chmod 700 /etc/mcp-gateway",
        ]
    )


def template_spec(
    templates_dir: Path, *, force: bool = False, package: Path | None = None
) -> BuildSpec:
    """The build of ``mcp-gateway`` from this install's ``base`` and gateway source.

    Raises:
        NotFoundError: the gateway's source or requirements are missing, or ``base`` is
            not built.
    """
    package = package or gateway_package()
    requirements = package / "requirements.txt"
    if not (package / "__main__.py").is_file() or not requirements.is_file():
        raise NotFoundError(
            f"the MCP gateway is not in this install ({package}: __main__.py and requirements.txt)"
        )
    base = read_artifact(templates_dir / "base")
    archive = server_archive(package, top="mcpgateway", src_dir=GATEWAY_SRC)
    files_hash = hashlib.sha256(archive).hexdigest()
    files_dir = templates_dir.parent / "template-files"
    files_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not (files_dir / files_hash).is_file():
        tmp = files_dir / f".tmp-{files_hash}-{os.getpid()}"
        tmp.write_bytes(archive)
        os.replace(tmp, files_dir / files_hash)
    script = "\n".join([
        system_script(cas=host_ca_certificates()),
        servers_script(),
        gateway_script(requirements=requirements.read_text()),
    ])  # fmt: skip
    steps = [
        {"type": "RUN", "args": [script, "root"]},
        {"type": "COPY", "args": ["mcpgateway", f"{GATEWAY_SRC}/hutch/mcpgateway", "root", ""],
         "filesHash": files_hash},
    ]  # fmt: skip
    return BuildSpec(
        name=NAME, base=base, steps=steps, start_cmd=None, ready_cmd=None, force=force,
        cpu_count=CPU_COUNT, memory_mb=MEMORY_MB, files_dir=files_dir,
    )  # fmt: skip


def build_mcp_gateway(
    templates_dir: Path, *, force: bool = False, log: BuildLog | None = None
) -> TemplateArtifact:
    """Build and publish ``mcp-gateway`` unless it is current; return it."""
    from hutch.node.templates.local_build import build_locally

    spec = template_spec(templates_dir, force=force)
    if not force and (current := is_current(templates_dir, spec)) is not None:
        return current
    say = log or (lambda level, message, step: None)
    built = asyncio.run(build_locally(spec, home=templates_dir.parent, log=say))
    prune_artifacts(templates_dir, keep=published_chains(templates_dir))
    return built
