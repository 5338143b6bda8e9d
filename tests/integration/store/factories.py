"""Builders for store test data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hutch.api.models import NewSandbox, SandboxState
from hutch.shared.ids import TeamID, TemplateID

#: A fixed instant: store tests never read the wall clock to decide anything.
T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def new_sandbox(team_id: TeamID, **overrides: Any) -> NewSandbox:
    """A running sandbox spec started at ``T0`` with a 300 s timeout, unless overridden."""
    started_at = overrides.pop("started_at", T0)
    values: dict[str, Any] = {
        "team_id": team_id,
        "template_id": TemplateID("base0000000000000000"),
        "alias": "base",
        "state": SandboxState.RUNNING,
        "started_at": started_at,
        "end_at": started_at + timedelta(seconds=300),
        "envd_version": "0.6.13",
        "cpu_count": 2,
        "memory_mb": 512,
        "disk_mb": 1024,
    }
    values.update(overrides)
    return NewSandbox(**values)
