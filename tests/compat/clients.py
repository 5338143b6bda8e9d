"""The released E2B clients of the compatibility matrix, each pinned, and their installs.

* Python ``e2b``: every version in ``PYTHON_SDKS``. The one in ``.venv`` (pyproject's test
  pin) runs with ``.venv``'s interpreter; each other gets a virtual environment of its own
  under ``CACHE`` with hutch's dependencies and that ``e2b``, hutch itself coming from
  this checkout through ``PYTHONPATH`` (so one cached environment serves every worktree).
* npm clients: one directory each under ``tests/compat/js/clients/`` with a committed
  ``package.json`` and ``package-lock.json``, installed with ``npm ci`` into ``CACHE``,
  keyed by the lock file's digest.

``python -m tests.compat.clients`` installs whatever is missing (``test.sh`` runs it, so
CI on a fresh machine has every client before pytest starts); the matrix
(``test_matrix.py``) calls the same functions, which cost nothing once installed.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path("/var/tmp/hutch-test-cache")
JS_DIR = Path(__file__).parent / "js"


def _pinned_dev_sdk() -> str:
    """The ``e2b`` of pyproject's ``test`` extra (``.venv``'s)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (pin,) = [d for d in project["optional-dependencies"]["test"] if d.startswith("e2b==")]
    return pin.removeprefix("e2b==")


#: Python ``e2b`` releases the matrix runs, oldest first: the oldest 2.x line hutch
#: supports, and the newest 2.x, which is pyproject's test pin (the one ``.venv`` has).
PYTHON_SDKS = ("2.45.1", _pinned_dev_sdk())

#: Node's oldest release the pinned npm clients accept (their ``engines``).
NODE_MIN = (20, 18, 1)

#: hutch's test dependencies a compat environment needs beside the runtime ones (not the
#: linter, nor moto: the compat subset uses neither).
_TEST_DEPS = ("pytest", "pytest-asyncio", "pytest-timeout")
#: Runtime dependencies left to each ``e2b`` release's own pins: envd's Connect and
#: protobuf libraries, which every SDK release pins to its own range (2.45.1 wants
#: connectrpc<0.12 and protobuf-py<0.2). The e2e harness never imports envd.
_SDK_OWNED = ("connectrpc", "protobuf-py")


@dataclass(frozen=True)
class NpmClient:
    """One pinned npm client: ``kind`` is ``sdk`` (the ``e2b`` package) or ``cli``."""

    dir_name: str
    kind: str
    package: str
    version: str

    @property
    def source(self) -> Path:
        return JS_DIR / "clients" / self.dir_name

    @property
    def label(self) -> str:
        return f"{'JS e2b' if self.kind == 'sdk' else self.package} {self.version}"


def npm_clients() -> list[NpmClient]:
    """Every client directory under ``js/clients``, from its ``package.json``."""
    out = []
    for pkg in sorted((JS_DIR / "clients").glob("*/package.json")):
        ((name, version),) = json.loads(pkg.read_text())["dependencies"].items()
        kind = "cli" if name == "@e2b/cli" else "sdk"
        out.append(NpmClient(pkg.parent.name, kind, name, version))
    return out


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def _locked(name: str):  # type: ignore[no-untyped-def]
    """An exclusive lock on ``CACHE/.name.lock`` (two worktrees may install at once)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    handle = open(CACHE / f".{name}.lock", "w")  # noqa: SIM115 - closed by the caller's with
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def _run(cmd: list[str], **kw: object) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")


def dev_sdk_version() -> str:
    """The ``e2b`` this interpreter (``.venv``) has."""
    return importlib.metadata.version("e2b")


def _python_deps() -> list[str]:
    def name(dep: str) -> str:
        return re.split(r"[=<>\[ ;]", dep, maxsplit=1)[0]

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = [d for d in project["dependencies"] if name(d) not in _SDK_OWNED]
    tests = [d for d in project["optional-dependencies"]["test"] if name(d) in _TEST_DEPS]
    return [*runtime, *tests]


def python_for(version: str) -> Path:
    """The interpreter that runs the compat subset with ``e2b==version`` (installed when
    missing); ``.venv``'s own for the version it has."""
    if version == dev_sdk_version():
        return Path(sys.executable)
    deps = [*_python_deps(), f"e2b=={version}"]
    key = _digest(sys.version.encode(), *(d.encode() for d in deps))
    target = CACHE / f"compat-py-e2b-{version}-{key}"
    python = target / "bin" / "python"
    with _locked("compat-py"):
        if not (target / ".complete").is_file():
            tmp = CACHE / f".tmp-{target.name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(tmp)])
            pip = [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q"]
            _run([*pip, "--disable-pip-version-check", *deps])
            (tmp / ".complete").write_text("\n".join(deps) + "\n")
            shutil.rmtree(target, ignore_errors=True)
            os.rename(tmp, target)
    return python


def node_version() -> tuple[int, ...] | None:
    """``node --version`` as numbers, or None without node."""
    node = shutil.which("node")
    if node is None:
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    return tuple(int(x) for x in re.findall(r"\d+", out)[:3])


def node_modules_for(client: NpmClient) -> Path:
    """``node_modules`` of ``client``, installed from its lock file when missing."""
    return node_modules_at(client.source, name=client.dir_name, label=client.label)


#: npm packages of the e2e tests (not matrix clients), each a directory with a committed
#: ``package.json`` and ``package-lock.json``: the JS code-interpreter SDK; the JS SDK with
#: the MCP TypeScript SDK (test_mcp_js.py).
#: The JS code-interpreter SDK's (also a column of the matrix).
INTERPRETER_NPM_DIR = REPO / "tests" / "e2e" / "js" / "code-interpreter"
E2E_NPM_DIRS = (
    INTERPRETER_NPM_DIR,
    REPO / "tests" / "e2e" / "js" / "mcp",
)


def python_interpreter_label() -> str:
    """The matrix column of ``.venv``'s ``e2b-code-interpreter`` (pyproject's test pin)."""
    return f"Python e2b-code-interpreter {importlib.metadata.version('e2b-code-interpreter')}"


def js_interpreter_label() -> str:
    """The matrix column of the e2e tests' pinned ``@e2b/code-interpreter``."""
    pkg = json.loads((INTERPRETER_NPM_DIR / "package.json").read_text())
    return f"JS @e2b/code-interpreter {pkg['dependencies']['@e2b/code-interpreter']}"


def node_modules_at(source: Path, *, name: str, label: str) -> Path:
    """``node_modules`` of the npm project in ``source``, installed with ``npm ci`` into
    ``CACHE`` (keyed by its lock file) when missing."""
    lock = (source / "package-lock.json").read_bytes()
    pkg = (source / "package.json").read_bytes()
    target = CACHE / f"compat-npm-{name}-{_digest(pkg, lock)}"
    with _locked("compat-npm"):
        if not (target / ".complete").is_file():
            tmp = CACHE / f".tmp-{target.name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            shutil.copy(source / "package.json", tmp)
            shutil.copy(source / "package-lock.json", tmp)
            npm = shutil.which("npm")
            if npm is None:
                raise RuntimeError("npm is not installed (test.sh installs it)")
            _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=tmp)
            (tmp / ".complete").write_text(label + "\n")
            shutil.rmtree(target, ignore_errors=True)
            os.rename(tmp, target)
    return target / "node_modules"


def main() -> int:
    """Install every client of the matrix that is missing."""
    for version in PYTHON_SDKS:
        print(f"compat: Python e2b {version}: {python_for(version)}", flush=True)
    have = node_version()
    if have is None or have < NODE_MIN:
        need = ".".join(map(str, NODE_MIN))
        print(f"compat: the npm clients need node >= {need}; found {have}", file=sys.stderr)
        return 1
    for client in npm_clients():
        print(f"compat: {client.label}: {node_modules_for(client)}", flush=True)
    for source in E2E_NPM_DIRS:
        modules = node_modules_at(source, name=f"e2e-{source.name}", label=source.name)
        print(f"e2e: {source.name}: {modules}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
