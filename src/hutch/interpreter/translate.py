"""One execution's Jupyter messages -> ``/execute`` stream items (pure, no I/O).

A kernel answers an ``execute_request`` with iopub messages (``status: busy``,
``execute_input``, ``stream``, ``display_data``, ``execute_result``, ``error``,
``status: idle``) and one shell ``execute_reply``. The execution is over when both the
idle status and the reply have arrived.
"""

from __future__ import annotations

from typing import Any

from hutch.interpreter import wire


class ExecutionTranslator:
    """Feed it the messages whose parent is one execute request; it says what to send."""

    def __init__(self) -> None:
        self.idle = False
        self.replied = False
        self.errored = False

    @property
    def done(self) -> bool:
        return self.idle and self.replied

    def feed(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
        kind = msg.get("msg_type") or msg.get("header", {}).get("msg_type")
        content = msg.get("content") or {}
        if kind == "stream":
            ts = msg.get("header", {}).get("date")
            return wire.stream(content.get("name", "stdout"), content.get("text", ""), ts)
        if kind == "execute_result":
            return [wire.result(dict(content.get("data") or {}), is_main_result=True)]
        if kind in ("display_data", "update_display_data"):
            return [wire.result(dict(content.get("data") or {}), is_main_result=False)]
        if kind == "execute_input":
            count = content.get("execution_count")
            return [wire.number_of_executions(count)] if isinstance(count, int) else []
        if kind == "error":
            return self._error(content)
        if kind == "status":
            if content.get("execution_state") == "idle":
                self.idle = True
            return []
        if kind == "execute_reply":
            self.replied = True
            status = content.get("status")
            if status == "error":
                return self._error(content)
            if status == "aborted" or status == "abort":
                return [wire.error("ExecutionAborted", "Execution was aborted", "")]
            return []
        return []

    def _error(self, content: dict[str, Any]) -> list[dict[str, Any]]:
        if self.errored:
            return []
        self.errored = True
        return [
            wire.error(
                str(content.get("ename", "")),
                str(content.get("evalue", "")),
                content.get("traceback") or [],
            )
        ]
