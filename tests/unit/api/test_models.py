from __future__ import annotations

from hutch.api.models import (
    NODE_BUSY_STATES,
    TERMINAL_STATES,
    SandboxState,
    SandboxStateConflictError,
)
from hutch.shared.errors import ConflictError, http_status
from hutch.shared.ids import SandboxID


def test_models_states_are_strings_on_the_wire() -> None:
    assert SandboxState("running") is SandboxState.RUNNING
    assert f"{SandboxState.PAUSED}" == "paused"


def test_models_state_sets() -> None:
    assert SandboxState.PAUSED not in NODE_BUSY_STATES
    assert SandboxState.KILLED not in NODE_BUSY_STATES
    assert {SandboxState.KILLING, SandboxState.KILLED} == TERMINAL_STATES


def test_models_state_conflict_names_the_actual_state() -> None:
    err = SandboxStateConflictError(SandboxID("i1"), SandboxState.PAUSED, wanted="running")
    assert isinstance(err, ConflictError)
    assert http_status(err) == 409
    assert err.state is SandboxState.PAUSED
    assert "paused" in err.public_message and "i1" in err.public_message
