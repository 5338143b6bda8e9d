"""Jupyter messages of one execution -> stream items (hutch.interpreter.translate)."""

from __future__ import annotations

from hutch.interpreter.translate import ExecutionTranslator


def msg(kind: str, **content) -> dict:
    return {
        "msg_type": kind,
        "header": {"msg_type": kind, "date": "2026-01-01T00:00:00Z"},
        "content": content,
    }


def feed_all(messages: list[dict]) -> tuple[ExecutionTranslator, list[dict]]:
    t = ExecutionTranslator()
    out: list[dict] = []
    for m in messages:
        out += t.feed(m)
    return t, out


def test_a_successful_cell() -> None:
    t, out = feed_all(
        [
            msg("status", execution_state="busy"),
            msg("execute_input", code="1", execution_count=3),
            msg("stream", name="stdout", text="hi\n"),
            msg("display_data", data={"image/png": "AAA", "text/plain": "<Figure>"}, metadata={}),
            msg("execute_result", data={"text/plain": "1"}, execution_count=3),
            msg("execute_reply", status="ok", execution_count=3),
            msg("status", execution_state="idle"),
        ]
    )
    assert t.done
    assert [o["type"] for o in out] == ["number_of_executions", "stdout", "result", "result"]
    assert out[0]["execution_count"] == 3
    assert out[1]["timestamp"] == "2026-01-01T00:00:00Z"
    assert out[2]["png"] == "AAA" and out[2]["is_main_result"] is False
    assert out[3]["text"] == "1" and out[3]["is_main_result"] is True


def test_not_done_until_both_idle_and_reply() -> None:
    t = ExecutionTranslator()
    t.feed(msg("status", execution_state="idle"))
    assert not t.done
    t.feed(msg("execute_reply", status="ok"))
    assert t.done


def test_an_error_is_reported_once_from_iopub_or_reply() -> None:
    err = {"ename": "KeyError", "evalue": "'k'", "traceback": ["t1", "t2"]}
    _, out = feed_all([msg("error", **err), msg("execute_reply", status="error", **err)])
    assert out == [{"type": "error", "name": "KeyError", "value": "'k'", "traceback": "t1\nt2"}]
    _, out = feed_all([msg("execute_reply", status="error", ename="E", evalue="v", traceback=[])])
    assert out == [{"type": "error", "name": "E", "value": "v", "traceback": ""}]


def test_aborted_reply_is_an_error() -> None:
    _, out = feed_all([msg("execute_reply", status="aborted")])
    assert out[0]["name"] == "ExecutionAborted"


def test_unknown_and_silent_messages_give_nothing() -> None:
    _, out = feed_all(
        [msg("clear_output", wait=False), msg("comm_open"), msg("status", execution_state="busy")]
    )
    assert out == []
