"""The matrix needs what the e2e tests need (root, runc, the node's host tools)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_for_dir
from tests.e2e.serveproc import nodehelpers


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    require_for_dir(items, Path(__file__).parent, nodehelpers.missing_system())
