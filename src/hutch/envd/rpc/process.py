"""Placeholder until the process service lands (being written now)."""

from hutch.envd.context import Envd


class ProcessService:
    def __init__(self, envd: Envd) -> None:
        self._envd = envd
