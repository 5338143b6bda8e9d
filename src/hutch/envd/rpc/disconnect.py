"""Telling long-lived streams at once that their HTTP client went away.

connectrpc notices a disconnect only when a handler yields its next message, so a quiet
stream (an idle watch, a silent command) would keep its resources, and uvicorn's graceful
shutdown, until the next keepalive (50-90 s). ``DisconnectWatch`` wraps a Connect ASGI app,
sees ``http.disconnect`` pass through ``receive`` and fires the request's ``ClientDisconnect``,
which handlers find with ``current_disconnect()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar


class ClientDisconnect:
    """Fires once when the current request's client goes away: an event plus callbacks."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._callbacks: list[Callable[[], None]] = []

    @property
    def happened(self) -> bool:
        return self.event.is_set()

    def on_disconnect(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the client goes away (at once if it already has)."""
        if self.happened:
            callback()
        else:
            self._callbacks.append(callback)

    def fire(self) -> None:
        if self.happened:
            return
        self.event.set()
        for callback in self._callbacks:
            callback()


_current: ContextVar[ClientDisconnect | None] = ContextVar("hutch_envd_disconnect", default=None)


def current_disconnect() -> ClientDisconnect | None:
    """The ``ClientDisconnect`` of the request being handled (None outside ``DisconnectWatch``)."""
    return _current.get()


class DisconnectWatch:
    """ASGI wrapper that fires the request's ``ClientDisconnect`` on ``http.disconnect``."""

    def __init__(self, app: Callable) -> None:
        self._app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self._app(scope, receive, send)
        disconnect = ClientDisconnect()

        async def watched_receive() -> dict:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnect.fire()
            return message

        token = _current.set(disconnect)
        try:
            return await self._app(scope, watched_receive, send)
        finally:
            _current.reset(token)
