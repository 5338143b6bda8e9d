"""Placeholder until the filesystem service lands (being written now)."""

from hutch.envd.context import Envd


class FilesystemService:
    def __init__(self, envd: Envd) -> None:
        self._envd = envd
