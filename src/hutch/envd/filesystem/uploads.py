"""Placeholder until the multipart upload manager lands (being written now)."""

from hutch.envd.settings import EnvdSettings


class UploadManager:
    def __init__(self, *, settings: EnvdSettings) -> None:
        self._settings = settings

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
