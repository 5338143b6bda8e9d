"""Placeholder until the process manager lands (being written now)."""

from hutch.envd.state import EnvdState


class ProcessManager:
    def __init__(self, *, state: EnvdState) -> None:
        self._state = state

    async def close(self) -> None:
        return None
