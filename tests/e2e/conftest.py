"""Fixtures for the end-to-end tests: one real ``hutch serve`` per session, driven by the
official ``e2b`` SDK through ``E2B_API_URL`` / ``E2B_SANDBOX_URL`` / ``E2B_API_KEY``.

The envd bundle comes from the node tests' cache (``/var/tmp/hutch-test-cache``); the
busybox template is built into the session's home (milliseconds); the ``base`` template
installed under ``/var/lib/hutch`` is linked in when present (``test_base_template.py``).
The finalizer stops serve by its pid, destroys whatever sandboxes are left, removes the
bridge, and requires that nothing leaked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hutch.node.templates.busybox import build_busybox
from tests.conftest import require_for_dir

from .serveproc import Serve, nodehelpers

#: Where ``install.sh`` (which ``test.sh`` runs first) builds the templates.
INSTALLED_TEMPLATES = Path("/var/lib/hutch/templates")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.root)
    require_for_dir(items, here, nodehelpers.missing_system())


@pytest.fixture(scope="session")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    home = tmp_path_factory.mktemp("serve-home")
    build_busybox(home / "templates")
    if (INSTALLED_TEMPLATES / "base" / "template.json").is_file():
        # install.sh's debootstrap result (minutes to build): shared read-only, as an
        # overlay lower layer always is.
        (home / "templates" / "base").symlink_to(INSTALLED_TEMPLATES / "base")
    server = Serve(home=home, envd_bundle=nodehelpers.cached_envd_bundle())
    key = server.hutch("keys", "create").strip()
    saved = {k: os.environ.get(k) for k in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")}
    os.environ.update(
        E2B_API_URL=server.api_url, E2B_SANDBOX_URL=server.sandbox_url, E2B_API_KEY=key
    )
    try:
        server.start()
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if server.proc is not None:
            server.stop()
        server.destroy_everything()
    leaks = server.leaks()
    assert leaks.total() == 0, leaks
