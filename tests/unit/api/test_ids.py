from __future__ import annotations

import re

from hutch.shared.ids import (
    is_valid_sandbox_id,
    new_api_key_id,
    new_sandbox_id,
    new_team_id,
    new_template_id,
    parse_sandbox_id,
)


def test_ids_sandbox_id_has_infra_shape() -> None:
    ids = {new_sandbox_id() for _ in range(1000)}
    assert len(ids) == 1000
    for sandbox_id in ids:
        assert re.fullmatch(r"i[a-z0-9]{20}", sandbox_id)
        assert is_valid_sandbox_id(sandbox_id)


def test_ids_template_team_and_key_ids() -> None:
    assert re.fullmatch(r"[a-z0-9]{20}", new_template_id())
    assert re.fullmatch(r"[0-9a-f-]{36}", new_team_id())
    assert new_api_key_id() != new_api_key_id()


def test_ids_sandbox_id_validation() -> None:
    for bad in ("", "I123", "i-1", "i_1", "i 1", "é", "a" * 65):
        assert not is_valid_sandbox_id(bad)


def test_ids_parse_sandbox_id_accepts_legacy_client_suffix() -> None:
    assert parse_sandbox_id("iabc123") == "iabc123"
    assert parse_sandbox_id("iabc123-6532622b") == "iabc123"
    assert parse_sandbox_id("IABC") is None
    assert parse_sandbox_id("-6532622b") is None
