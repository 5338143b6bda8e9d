"""Fixtures for the end-to-end tests: one real ``hutch serve`` per session, driven by the
official ``e2b`` SDK through ``E2B_API_URL`` / ``E2B_SANDBOX_URL`` / ``E2B_API_KEY``.

The envd bundle comes from the node tests' cache (``/var/tmp/hutch-test-cache``); the
busybox template is built into the session's home (milliseconds); the ``base`` and
``code-interpreter-v1`` templates installed under ``/var/lib/hutch`` are linked in when
present (``test_base_template.py``, ``test_interpreter.py``; a step-built one with its
sealed artifact).
The finalizer stops serve by its pid, destroys whatever sandboxes are left, removes the
bridge, and requires that nothing leaked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_for_dir

from .serveproc import ATTACH_ENV, Serve, nodehelpers, seed_templates


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.root)
    require_for_dir(items, here, nodehelpers.missing_system())


@pytest.fixture(scope="session")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    if spec := os.environ.get(ATTACH_ENV):
        # The compatibility matrix's run of this subset with another client release: its
        # runner started the serve, owns it and checks it for leaks.
        yield Serve.attached(spec)
        return
    home = tmp_path_factory.mktemp("serve-home")
    seed_templates(home)
    server = Serve(home=home, envd_bundle=nodehelpers.cached_envd_bundle())
    key = server.hutch("keys", "create").strip()
    saved = {k: os.environ.get(k) for k in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")}
    os.environ.update(
        E2B_API_URL=server.api_url, E2B_SANDBOX_URL=server.sandbox_url, E2B_API_KEY=key
    )
    try:
        with server.running():
            yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
