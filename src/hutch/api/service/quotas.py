"""Per-team quotas (ADR 0015): the settings' defaults, an admin's overrides, the checks.

A quota of 0 is "no limit"; an override of ``None`` is "the default". What the checks
refuse is a :class:`~hutch.shared.errors.QuotaExceededError` (429, E2B's body, the message
naming the quota and its value), except a timeout over ``maxTimeout``, which is E2B's 400.
The running-sandbox quotas are reserved by the store in the create's own transaction
(``store/sandboxes.py``); a quota lowered below current use lets existing sandboxes run on
and refuses new ones until there is room.
"""

from __future__ import annotations

import logging
from typing import Final

from hutch.api.models import QUOTA_FIELDS, TeamQuotas
from hutch.api.service.keys import Caller, KeyService
from hutch.api.store.base import TeamStore
from hutch.shared.errors import InvalidArgumentError, QuotaExceededError
from hutch.shared.ids import TeamID

_audit = logging.getLogger("hutch.audit")

#: Wire name (``PATCH /admin/teams/{id}/quotas``) → field, and the largest value allowed.
WIRE_NAMES: Final = {
    "maxRunningSandboxes": ("max_running_sandboxes", 100_000),
    "maxVcpus": ("max_vcpus", 1_000_000),
    "maxMemoryMB": ("max_memory_mb", 1 << 30),
    "maxTimeout": ("max_timeout_s", 30 * 86_400),
    "maxVolumeBytes": ("max_volume_bytes", 1 << 60),
    "maxPausedSandboxes": ("max_paused_sandboxes", 1_000_000),
    "maxConcurrentBuilds": ("max_concurrent_builds", 10_000),
}


def wire_body(quotas: TeamQuotas) -> dict[str, int | None]:
    """``{maxRunningSandboxes, ...}`` of ``quotas`` (``None`` kept)."""
    return {wire: getattr(quotas, name) for wire, (name, _) in WIRE_NAMES.items()}


def check_changes(body: dict[str, object]) -> dict[str, int | None]:
    """The store's changes from a PATCH body; 400 for an unknown name or a bad value."""
    changes: dict[str, int | None] = {}
    for wire, value in body.items():
        if wire not in WIRE_NAMES:
            raise InvalidArgumentError(f"unknown quota {wire!r}: one of {', '.join(WIRE_NAMES)}")
        name, maximum = WIRE_NAMES[wire]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum
        ):
            raise InvalidArgumentError(
                f"{wire}: {value!r} is not a whole number from 0 (no limit) to {maximum}, "
                "or null (the default)"
            )
        changes[name] = value
    return changes


class QuotaService:
    """Resolves and enforces the team quotas."""

    def __init__(self, *, teams: TeamStore, defaults: TeamQuotas) -> None:
        self._teams = teams
        self._defaults = defaults
        assert set(QUOTA_FIELDS) == {n for n, _ in WIRE_NAMES.values()}

    @property
    def defaults(self) -> TeamQuotas:
        return self._defaults

    async def effective(self, team_id: TeamID) -> TeamQuotas:
        """The team's enforced quotas (overrides on the defaults)."""
        return (await self._teams.get_quotas(team_id)).over(self._defaults)

    async def overrides(self, team_id: TeamID) -> TeamQuotas:
        return await self._teams.get_quotas(team_id)

    async def set(
        self, caller: Caller, *, team_id: TeamID, changes: dict[str, int | None]
    ) -> TeamQuotas:
        """An admin sets some overrides; logged with the key's id."""
        KeyService.require_admin(caller, action="Changing a team's quotas")
        after = await self._teams.set_quotas(team_id, changes)
        _audit.info("admin key %s set quotas of team %s: %s", caller.key.id, team_id, changes)
        return after

    async def check_timeout(self, team_id: TeamID, timeout_s: int) -> TeamQuotas:
        """The team's quotas; E2B's 400 when ``timeout_s`` is over ``maxTimeout``."""
        quotas = await self.effective(team_id)
        limit = quotas.limit("max_timeout_s")
        if limit is not None and timeout_s > limit:
            raise InvalidArgumentError(
                f"Timeout cannot be greater than {limit} seconds: quota maxTimeout of this team"
            )
        return quotas

    async def volume_limit(self, team_id: TeamID) -> int | None:
        """The team's ``maxVolumeBytes`` (``None``: no limit), which the volume store
        reserves against in the create's transaction."""
        return (await self.effective(team_id)).limit("max_volume_bytes")

    async def build_limit(self, team_id: TeamID) -> int | None:
        """The team's ``maxConcurrentBuilds`` (``None``: no limit)."""
        return (await self.effective(team_id)).limit("max_concurrent_builds")


def check_builds(team_id: TeamID, running: int, limit: int | None) -> None:
    """429 when one more build would take the team's ``running`` builds over ``limit``
    (``maxConcurrentBuilds``)."""
    if limit is not None and running + 1 > limit:
        raise QuotaExceededError(
            f"team {team_id}: {running} builds running, quota {limit}",
            public_message="You have reached the maximum number of concurrent template "
            f"builds ({limit}): quota maxConcurrentBuilds of this team",
        )
