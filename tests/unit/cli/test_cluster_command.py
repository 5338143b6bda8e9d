"""``hutch cluster up``'s ``--api-setting``/``--node-setting``: each names a field of its
role's settings, and the values reach ``cluster.local.up`` as that role's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hutch.cli.main import cli


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def up(home: Path, **kwargs: Any) -> None:
        seen.update(kwargs, home=home)

    monkeypatch.setattr("hutch.cluster.local.up", up)
    monkeypatch.setattr("hutch.cluster.local.status", lambda _home: {"processes": [], "env": {}})
    return seen


def test_cluster_command_settings_reach_every_role(started: dict[str, Any], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [
        "cluster", "up", "--home", str(tmp_path), "--api-setting", "cluster_lease_s=3",
        "--node-setting", "ARTIFACT_S3_BUCKET=hutch", "--node-setting", "artifact_s3_prefix=a/",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert started["api_settings"] == {"cluster_lease_s": "3"}
    assert started["node_settings"] == {"artifact_s3_bucket": "hutch", "artifact_s3_prefix": "a/"}


@pytest.mark.parametrize("option", ["--api-setting", "--node-setting"])
@pytest.mark.parametrize("item", ["no_such_setting=1", "artifact_s3_bucket"])
def test_cluster_command_refuses_a_setting_its_role_lacks(
    started: dict[str, Any], tmp_path: Path, option: str, item: str
) -> None:
    result = CliRunner().invoke(cli, ["cluster", "up", "--home", str(tmp_path), option, item])
    assert result.exit_code == 2 and "want NAME=VALUE naming" in result.output
    assert started == {}
