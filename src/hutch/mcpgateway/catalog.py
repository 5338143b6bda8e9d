"""The servers ``mcp-gateway`` knows by name: the keys of the SDK's ``McpServer`` type.

Each catalog entry is a reference MCP server, a stdio program installed from npm (into
``<servers>/npm``) or PyPI (into ``<servers>/venv``), pinned. ``mcp-gateway pull NAME``
installs one (the SDK's ``Template.add_mcp_server``); the ``mcp-gateway`` template has them
all pulled at build time. A config names an entry with its arguments (``filesystem``:
``{"paths": [...]}``); anything else in the config is either a ``github/<owner>/<repo>``
entry (``runCmd``, ``installCmd``, ``envs``, docs/mcp.md) or an error naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hutch.mcpgateway.errors import ConfigError


@dataclass(frozen=True)
class Package:
    """One catalog server's package."""

    registry: str  # "npm" | "pypi"
    name: str
    version: str
    #: The executable the package installs.
    bin: str
    #: What it needs beyond the sandbox itself (docs/mcp.md's table).
    needs: str = "nothing"

    @property
    def spec(self) -> str:
        sep = "@" if self.registry == "npm" else "=="
        return f"{self.name}{sep}{self.version}"

    def executable(self, servers_dir: Path) -> Path:
        if self.registry == "npm":
            return servers_dir / "npm" / "node_modules" / ".bin" / self.bin
        return servers_dir / "venv" / "bin" / self.bin


@dataclass(frozen=True)
class ServerSpec:
    """How to run one configured MCP server over stdio."""

    #: The config key (``filesystem``, ``github/owner/repo``).
    name: str
    #: What its tools and prompts are prefixed with (``<prefix>__<name>``).
    prefix: str
    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    #: A shell command to run before the server when it is not installed yet, in ``cwd``.
    install: str | None = None
    #: The catalog package, for catalog entries.
    package: Package | None = None


_NPM = "npm"
_PYPI = "pypi"
_NPM_VERSION = "2026.8.31"

CATALOG: Final[dict[str, Package]] = {
    "filesystem": Package(
        _NPM, "@modelcontextprotocol/server-filesystem", _NPM_VERSION, "mcp-server-filesystem"
    ),
    "memory": Package(
        _NPM, "@modelcontextprotocol/server-memory", _NPM_VERSION, "mcp-server-memory"
    ),
    "sequentialthinking": Package(
        _NPM,
        "@modelcontextprotocol/server-sequential-thinking",
        _NPM_VERSION,
        "mcp-server-sequential-thinking",
    ),
    "everything": Package(
        _NPM, "@modelcontextprotocol/server-everything", _NPM_VERSION, "mcp-server-everything"
    ),
    "time": Package(_PYPI, "mcp-server-time", "2026.10.19", "mcp-server-time"),
    "git": Package(_PYPI, "mcp-server-git", "2026.10.19", "mcp-server-git"),
    "fetch": Package(_PYPI, "mcp-server-fetch", "2026.10.24", "mcp-server-fetch", needs="network"),
}

_GITHUB: Final = re.compile(r"^github/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)$")
_ENV_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PREFIX_SEPARATOR: Final = "__"


def prefix_of(name: str) -> str:
    """The namespace of a server's tools and prompts: its config key with every character
    outside ``[A-Za-z0-9-]`` as ``_`` (``github/a/b`` → ``github_a_b``), so that a
    namespaced name stays in MCP's ``[A-Za-z0-9_-]`` tool-name alphabet."""
    return re.sub(r"[^A-Za-z0-9-]", "_", name)


def _paths(name: str, value: Mapping[str, Any], *, required: bool) -> list[str]:
    paths = value.get("paths")
    if paths is None and not required:
        return []
    if (
        not isinstance(paths, list)
        or not paths
        or not all(isinstance(p, str) and p.startswith("/") for p in paths)
    ):
        raise ConfigError(f"{name}: paths must be a non-empty list of absolute paths")
    return paths


def _no_args(name: str, value: Mapping[str, Any]) -> list[str]:
    if value:
        raise ConfigError(f"{name}: takes no arguments (got {', '.join(sorted(value))})")
    return []


def _filesystem(name: str, value: Mapping[str, Any], state: Path) -> tuple[list[str], dict]:
    _check_keys(name, value, {"paths"})
    return _paths(name, value, required=True), {}


def _git(name: str, value: Mapping[str, Any], state: Path) -> tuple[list[str], dict]:
    _check_keys(name, value, {"paths"})
    paths = _paths(name, value, required=False)
    # mcp-server-git takes one --repository; with several, each tool call names its repo.
    return (["--repository", paths[0]] if len(paths) == 1 else []), {}


def _memory(name: str, value: Mapping[str, Any], state: Path) -> tuple[list[str], dict]:
    _no_args(name, value)
    return [], {"MEMORY_FILE_PATH": str(state / "memory.jsonl")}


def _plain(name: str, value: Mapping[str, Any], state: Path) -> tuple[list[str], dict]:
    return _no_args(name, value), {}


def _everything(name: str, value: Mapping[str, Any], state: Path) -> tuple[list[str], dict]:
    return [*_no_args(name, value), "stdio"], {}


_ARGS: Final[dict[str, Callable[[str, Mapping[str, Any], Path], tuple[list[str], dict]]]] = {
    "filesystem": _filesystem,
    "git": _git,
    "memory": _memory,
    "sequentialthinking": _plain,
    "everything": _everything,
    "time": _plain,
    "fetch": _plain,
}


def _check_keys(name: str, value: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"{name}: unknown argument {', '.join(unknown)}")


def parse_config(config: object, *, servers_dir: Path, state_dir: Path) -> list[ServerSpec]:
    """The servers ``config`` (the ``--config`` JSON, decoded) asks for, in its order.

    Raises:
        ConfigError: not an object, an unknown key, or a bad argument (naming the server).
    """
    if not isinstance(config, dict):
        raise ConfigError("the config must be a JSON object of MCP servers")
    specs: list[ServerSpec] = []
    for name, value in config.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: its value must be a JSON object")
        if name in CATALOG:
            package = CATALOG[name]
            args, env = _ARGS[name](name, value, state_dir)
            specs.append(
                ServerSpec(
                    name=name,
                    prefix=prefix_of(name),
                    command=str(package.executable(servers_dir)),
                    args=tuple(args),
                    env=env,
                    package=package,
                )
            )
        elif match := _GITHUB.match(name):
            specs.append(_github(name, match[1], match[2], value, servers_dir))
        else:
            raise ConfigError(
                f"{name}: not an MCP server this gateway knows (catalog: "
                f"{', '.join(sorted(CATALOG))}; or github/<owner>/<repo> with runCmd)"
            )
    if not specs:
        raise ConfigError("the config names no MCP server")
    prefixes = [s.prefix for s in specs]
    for p in prefixes:
        if prefixes.count(p) > 1:
            clash = [s.name for s in specs if s.prefix == p]
            raise ConfigError(f"{' and '.join(clash)}: both would be namespaced {p!r}")
    return specs


def _github(
    name: str, owner: str, repo: str, value: Mapping[str, Any], servers_dir: Path
) -> ServerSpec:
    _check_keys(name, value, {"runCmd", "installCmd", "envs"})
    run = value.get("runCmd")
    if not isinstance(run, str) or not run.strip():
        raise ConfigError(f"{name}: runCmd must be a non-empty command")
    install = value.get("installCmd")
    if install is not None and not isinstance(install, str):
        raise ConfigError(f"{name}: installCmd must be a command")
    envs = value.get("envs") or {}
    if not isinstance(envs, dict) or not all(
        isinstance(k, str) and _ENV_NAME.match(k) and isinstance(v, str) for k, v in envs.items()
    ):
        raise ConfigError(f"{name}: envs must map variable names to strings")
    checkout = servers_dir / "github" / owner / repo
    # The checkout is kept: a template that cloned it already (docs/mcp.md) needs no network.
    clone = (
        f"test -d {_q(checkout)}/.git || git clone --depth 1 "
        f"https://github.com/{owner}/{repo}.git {_q(checkout)}"
    )
    setup = f"{clone} && cd {_q(checkout)}" + (f" && {install}" if install else "")
    return ServerSpec(
        name=name,
        prefix=prefix_of(name),
        command="/bin/sh",
        args=("-c", run),
        env=envs,
        cwd=checkout,
        install=setup,
    )


def _q(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def install_script(packages: list[Package], *, servers_dir: Path, python: str) -> str:
    """A shell script that installs ``packages`` under ``servers_dir`` (npm and a venv)."""
    npm = [p.spec for p in packages if p.registry == _NPM]
    pypi = [p.spec for p in packages if p.registry == _PYPI]
    lines = ["set -eu"]
    if npm:
        prefix = servers_dir / "npm"
        lines += [
            f"mkdir -p {_q(prefix)}",
            f"npm install --prefix {_q(prefix)} --no-audit --no-fund --omit=dev "
            f"--loglevel=error {' '.join(npm)}",
        ]
    if pypi:
        venv = servers_dir / "venv"
        lines += [
            f"test -x {_q(venv)}/bin/pip || {python} -m venv {_q(venv)}",
            f"PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 {_q(venv)}/bin/pip install -q "
            + " ".join(pypi),
        ]
    return "\n".join(lines)
