"""Placeholder until the watcher manager lands (being written now)."""


class WatcherManager:
    async def close(self) -> None:
        return None
