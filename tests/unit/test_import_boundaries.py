"""Who may import whom (ARCHITECTURE.md): the roles never import each other; only
``hutch.serve`` joins them. Read from the source, so a new import fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src" / "hutch"
ROLES = ("api", "node", "proxy", "envd")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("role", ROLES)
def test_import_boundaries_roles_import_no_other_role(role: str) -> None:
    forbidden = tuple(f"hutch.{other}" for other in (*ROLES, "serve", "cli") if other != role)
    bad = [
        f"{path.relative_to(SRC)}: {name}"
        for path in sorted((SRC / role).rglob("*.py"))
        for name in _imports(path)
        if name.startswith(forbidden) and name.split(".")[:2] != ["hutch", role]
    ]
    assert bad == []


def test_import_boundaries_interpreter_is_self_contained() -> None:
    # It ships into the code-interpreter template alone (docs/interpreter.md).
    bad = [
        f"{path.relative_to(SRC)}: {name}"
        for path in sorted((SRC / "interpreter").rglob("*.py"))
        for name in _imports(path)
        if name.startswith("hutch") and not name.startswith("hutch.interpreter")
    ]
    assert bad == []


def test_import_boundaries_mcpgateway_is_self_contained() -> None:
    # It ships into the mcp-gateway template alone (docs/mcp.md).
    bad = [
        f"{path.relative_to(SRC)}: {name}"
        for path in sorted((SRC / "mcpgateway").rglob("*.py"))
        for name in _imports(path)
        if name.startswith("hutch") and not name.startswith("hutch.mcpgateway")
    ]
    assert bad == []


def test_import_boundaries_dashboard_imports_only_api_and_shared() -> None:
    # A front-end of the api (docs/dashboard.md): sandboxes only over HTTP, through the proxy.
    bad = [
        f"{path.relative_to(SRC)}: {name}"
        for path in sorted((SRC / "dashboard").rglob("*.py"))
        for name in _imports(path)
        if name.startswith("hutch") and name.split(".")[1] not in ("dashboard", "api", "shared")
    ]
    assert bad == []


def test_import_boundaries_no_role_imports_the_dashboard() -> None:
    bad = [
        f"{path.relative_to(SRC)}: {name}"
        for role in (*ROLES, "cli")
        for path in sorted((SRC / role).rglob("*.py"))
        for name in _imports(path)
        if name.startswith("hutch.dashboard")
    ]
    assert bad == []
