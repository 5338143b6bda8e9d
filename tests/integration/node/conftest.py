"""Fixtures for the node tests: real runc sandboxes with real overlayfs, netns and envd.

The envd bundle is built once and cached under /var/tmp/hutch-test-cache (keyed by a
digest of its inputs); the busybox template is built per session (milliseconds). Each test
gets its own manager on the ``hsmtest0`` bridge; the finalizer kills whatever is left and
removes the bridge, and every test asserts that nothing leaked.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nodehelpers import (
    cached_envd_bundle,
    cgroup_parents,
    count_leaks,
    missing_system,
    node_settings,
)

from hutch.node.app import Node, build_node
from hutch.node.settings import NodeSettings
from hutch.node.templates.busybox import build_busybox
from tests.conftest import require_for_dir


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    require_for_dir(items, Path(__file__).parent, missing_system())


@pytest.fixture(scope="session")
def envd_bundle_dir() -> Path:
    return cached_envd_bundle()


@pytest.fixture(scope="session")
def node_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with the busybox template published (and a broken one for failure tests)."""
    home = tmp_path_factory.mktemp("node-home")
    build_busybox(home / "templates")
    build_busybox(home / "templates", name="badinit")
    meta = home / "templates/badinit/template.json"
    meta.write_text(
        meta.read_text().replace('"default_user": "user"', '"default_user": "nobody-here"')
    )
    yield home
    for parent in cgroup_parents():  # runc leaves the (empty) parent it created
        with contextlib.suppress(OSError):
            parent.rmdir()


@pytest.fixture
def settings(node_home: Path, envd_bundle_dir: Path) -> NodeSettings:
    return node_settings(node_home, envd_bundle_dir)


@pytest.fixture
async def node(settings: NodeSettings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Node]:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    built = build_node(settings, build_bundle=False)
    await built.manager.start()
    try:
        yield built
    finally:
        try:
            await built.manager.reconcile([])
            leaks = await count_leaks(settings, built.manager._runtime)
        finally:
            await built.networks.remove_bridge()
            await built.aclose()
        assert leaks.total() == 0, leaks
    shutil.rmtree(settings.sandboxes_dir, ignore_errors=True)
