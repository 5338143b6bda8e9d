from __future__ import annotations

from pathlib import Path

import pytest

from hutch.api.store.engine import create_engine, default_database_url
from hutch.api.store.migrations import EXPECTED_HEAD, code_heads


def test_store_engine_default_url_is_sqlite_under_home(tmp_path: Path) -> None:
    assert default_database_url(tmp_path) == f"sqlite+aiosqlite:///{tmp_path}/hutch.db"


def test_store_engine_plain_urls_get_async_drivers(tmp_path: Path) -> None:
    assert create_engine(f"sqlite:///{tmp_path}/x.db").url.drivername == "sqlite+aiosqlite"
    pg = create_engine("postgresql://u:p@localhost/db")
    assert pg.url.drivername == "postgresql+asyncpg"


def test_store_engine_refuses_in_memory_sqlite() -> None:
    with pytest.raises(ValueError, match="in-memory"):
        create_engine("sqlite+aiosqlite:///:memory:")


def test_store_engine_expected_head_is_the_scripts_head() -> None:
    # Adding a migration without moving EXPECTED_HEAD (or the reverse) fails here.
    assert code_heads() == (EXPECTED_HEAD,)
