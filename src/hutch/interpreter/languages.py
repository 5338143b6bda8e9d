"""Which languages have a kernel here, how to start each, and the snippets each needs
(change directory, set and restore env vars) written in that language.

Python runs hutch's own ipykernel command line (our display formatters and chart
extraction loaded at start); bash runs ``bash_kernel`` when it is installed; any other
language runs a Jupyter kernelspec whose ``language`` matches (IRkernel for R,
a JavaScript kernel, ...), found with ``jupyter_client``'s kernelspec lookup.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hutch.interpreter.errors import BadRequest, LanguageNotInstalled

STARTUP = Path(__file__).parent / "kernel_ext" / "startup.py"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
ALIASES = {
    "js": "javascript",
    "ts": "typescript",
    "py": "python",
    "python3": "python",
    "sh": "bash",
}


def normalize(language: str | None) -> str:
    if language is None:
        return "python"
    if not isinstance(language, str):
        raise BadRequest("language must be a string")
    name = language.strip().lower() or "python"
    return ALIASES.get(name, name)


@dataclass(frozen=True)
class KernelCommand:
    language: str
    argv: list[str]  # with "{connection_file}" where the kernel's connection file goes


#: ipykernel's launcher, but with its debugger (debugpy, ~10 MiB and a socket) left out:
#: no SDK speaks the Jupyter debug protocol. ``import debugpy`` still works in cells.
LAUNCH_PYTHON_KERNEL = (
    "import sys\n"
    "if sys.path and sys.path[0] == '': del sys.path[0]\n"
    "sys.modules['debugpy'] = None\n"
    "import ipykernel.debugger\n"
    "del sys.modules['debugpy']\n"
    "from ipykernel import kernelapp\n"
    "kernelapp.launch_new_instance()\n"
)


def _python_kernel(python: str) -> KernelCommand:
    return KernelCommand(
        "python",
        [
            python,
            "-c",
            LAUNCH_PYTHON_KERNEL,
            "-f",
            "{connection_file}",
            f"--IPKernelApp.exec_files={STARTUP}",
            "--InteractiveShell.colors=nocolor",
            "--HistoryManager.enabled=False",
            "--PlainTextFormatter.max_seq_length=0",
            "--IPKernelApp.quiet=True",
        ],
    )


def _has_module(python: str, module: str) -> bool:
    if python == _self_python():
        return importlib.util.find_spec(module) is not None
    probe = f"import importlib.util,sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", probe], check=False).returncode == 0


def _self_python() -> str:
    import sys

    return sys.executable


def _kernelspecs() -> dict[str, list[str]]:
    """language -> argv of each installed Jupyter kernelspec (bar python, ours)."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager
    except ImportError:  # pragma: no cover - jupyter_client is a requirement
        return {}
    found: dict[str, list[str]] = {}
    for spec in KernelSpecManager().get_all_specs().values():
        info = spec.get("spec", {})
        lang = normalize(info.get("language", ""))
        if lang != "python" and info.get("argv") and lang not in found:
            found[lang] = list(info["argv"])
    return found


class Languages:
    """The kernels this server can start, discovered once at start."""

    def __init__(self, python: str) -> None:
        self.commands: dict[str, KernelCommand] = {"python": _python_kernel(python)}
        if shutil.which("bash") and _has_module(python, "bash_kernel"):
            self.commands["bash"] = KernelCommand(
                "bash", [python, "-m", "bash_kernel", "-f", "{connection_file}"]
            )
        for lang, argv in _kernelspecs().items():
            self.commands.setdefault(lang, KernelCommand(lang, argv))

    @property
    def installed(self) -> list[str]:
        return sorted(self.commands)

    def command(self, language: str) -> KernelCommand:
        cmd = self.commands.get(language)
        if cmd is None:
            raise LanguageNotInstalled(
                f"language {language!r} is not installed in this sandbox; "
                f"installed: {', '.join(self.installed)}"
            )
        return cmd


# --- snippets, one per language -------------------------------------------------------


def check_env_vars(env: object) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise BadRequest("env_vars must be an object of strings")
    for k, v in env.items():
        if not isinstance(k, str) or not ENV_NAME.match(k):
            raise BadRequest(f"env var name {k!r} is not valid (letters, digits, _)")
        if not isinstance(v, str):
            raise BadRequest(f"env var {k!r} must be a string")
    return env


def chdir(language: str, path: str) -> str | None:
    if language == "python":
        return f"import os as __hutch_os; __hutch_os.chdir({path!r}); del __hutch_os"
    if language == "bash":
        return f"cd {shlex.quote(path)}"
    if language in ("javascript", "typescript"):
        return f"process.chdir({json.dumps(path)})"
    if language == "r":
        return f"setwd({json.dumps(path)})"
    return None


def set_env(language: str, env: dict[str, str]) -> str | None:
    """Code that sets ``env`` and remembers the values it replaced (see ``restore_env``)."""
    if not env:
        return None
    if language == "python":
        return (
            "import os as __hutch_os\n"
            f"__hutch_saved_env = {{k: __hutch_os.environ.get(k) for k in {sorted(env)!r}}}\n"
            f"__hutch_os.environ.update({env!r})\n"
            "del __hutch_os"
        )
    if language == "bash":
        lines = []
        for k, v in env.items():
            lines.append(
                f'if [ -n "${{{k}+x}}" ]; then __hutch_had_{k}=1; __hutch_old_{k}="${k}"; '
                f"else __hutch_had_{k}=0; fi; export {k}={shlex.quote(v)}"
            )
        return "\n".join(lines)
    if language in ("javascript", "typescript"):
        return (
            f"globalThis.__hutchSavedEnv = Object.fromEntries({json.dumps(sorted(env))}"
            ".map(k => [k, process.env[k]]));"
            f"Object.assign(process.env, {json.dumps(env)});"
        )
    if language == "r":
        return "\n".join(
            f".hutch_old_{k} <- Sys.getenv({json.dumps(k)}, unset = NA); "
            f"Sys.setenv({k} = {json.dumps(v)})"
            for k, v in env.items()
        )
    return None


def restore_env(language: str, env: dict[str, str]) -> str | None:
    """Code that puts back what ``set_env`` replaced (unset what was unset)."""
    if not env:
        return None
    if language == "python":
        return (
            "import os as __hutch_os\n"
            "for __k, __v in __hutch_saved_env.items():\n"
            "    if __v is None: __hutch_os.environ.pop(__k, None)\n"
            "    else: __hutch_os.environ[__k] = __v\n"
            "del __hutch_os, __hutch_saved_env, __k, __v"
        )
    if language == "bash":
        return "\n".join(
            f'if [ "$__hutch_had_{k}" = 1 ]; then export {k}="$__hutch_old_{k}"; '
            f"else unset {k}; fi; unset __hutch_had_{k} __hutch_old_{k}"
            for k in env
        )
    if language in ("javascript", "typescript"):
        return (
            "for (const [k, v] of Object.entries(globalThis.__hutchSavedEnv)) "
            "{ if (v === undefined) delete process.env[k]; else process.env[k] = v; }"
        )
    if language == "r":
        return "\n".join(
            f"if (is.na(.hutch_old_{k})) Sys.unsetenv({json.dumps(k)}) "
            f"else Sys.setenv({k} = .hutch_old_{k}); rm(.hutch_old_{k})"
            for k in env
        )
    return None


def apply_env(language: str, env: dict[str, str]) -> str | None:
    """Code that sets ``env`` for good (the sandbox's env vars, once per kernel)."""
    if not env:
        return None
    if language == "python":
        return f"import os as __hutch_os; __hutch_os.environ.update({env!r}); del __hutch_os"
    if language == "bash":
        return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
    if language in ("javascript", "typescript"):
        return f"Object.assign(process.env, {json.dumps(env)});"
    if language == "r":
        return "\n".join(f"Sys.setenv({k} = {json.dumps(v)})" for k, v in env.items())
    return None
