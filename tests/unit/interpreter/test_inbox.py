"""The per-execution inbox bounds buffered stream text and keeps control messages."""

from __future__ import annotations

from hutch.interpreter.kernel import Inbox


def stream(text: str) -> dict:
    return {"msg_type": "stream", "content": {"name": "stdout", "text": text}}


async def test_inbox_drops_stream_text_beyond_its_limit_and_counts_it() -> None:
    inbox = Inbox(limit=10)
    inbox.push(stream("a" * 6))
    inbox.push(stream("b" * 6))  # would hold 12 > 10: dropped
    inbox.push({"msg_type": "status", "content": {"execution_state": "idle"}})
    assert inbox.dropped == 6
    assert (await inbox.get())["content"]["text"] == "a" * 6
    inbox.push(stream("c" * 10))  # room again once read
    assert (await inbox.get())["msg_type"] == "status"
    assert (await inbox.get())["content"]["text"] == "c" * 10
    assert inbox.buffered == 0 and inbox.dropped == 6


async def test_inbox_none_means_the_kernel_went_away() -> None:
    inbox = Inbox(limit=1)
    inbox.push(None)
    assert await inbox.get() is None
