"""MIME mapping and line encoding of the ``/execute`` stream (hutch.interpreter.wire)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hutch.interpreter import wire


def test_result_maps_every_mime_type_to_its_sdk_field() -> None:
    bundle = {mime: f"v-{field}" for mime, field in wire.MIME_FIELDS.items()}
    bundle["application/json"] = {"a": 1}
    bundle["e2b/data"] = {"col": [1]}
    bundle["e2b/chart"] = {"type": "line"}
    item = wire.result(bundle, is_main_result=True)
    assert item["type"] == "result" and item["is_main_result"] is True
    for mime, field in wire.MIME_FIELDS.items():
        assert item[field] == bundle[mime], field
    assert item["extra"] == {}


def test_result_keeps_unknown_mime_types_in_extra_and_omits_absent_fields() -> None:
    item = wire.result(
        {"text/plain": "x", "application/vnd.custom": {"k": 1}}, is_main_result=False
    )
    assert item == {
        "type": "result",
        "text": "x",
        "extra": {"application/vnd.custom": {"k": 1}},
        "is_main_result": False,
    }


def test_result_text_loses_the_quotes_of_a_string_repr() -> None:
    assert wire.result({"text/plain": "'abc'"}, is_main_result=True)["text"] == "abc"
    assert wire.result({"text/plain": '"abc"'}, is_main_result=True)["text"] == "abc"
    assert wire.result({"text/plain": "'a\""}, is_main_result=True)["text"] == "'a\""
    assert wire.result({"text/plain": "'"}, is_main_result=True)["text"] == "'"


def test_empty_chart_is_left_out() -> None:
    assert "chart" not in wire.result({"image/png": "x", "e2b/chart": {}}, is_main_result=False)


def test_stream_splits_long_text_and_keeps_the_timestamp() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    text = "a" * (wire.MAX_STREAM_CHUNK * 2 + 5)
    items = wire.stream("stdout", text, when)
    assert [len(i["text"]) for i in items] == [wire.MAX_STREAM_CHUNK, wire.MAX_STREAM_CHUNK, 5]
    assert "".join(i["text"] for i in items) == text
    assert {i["timestamp"] for i in items} == {"2026-01-02T03:04:05+00:00"}
    assert wire.stream("stderr", "e", None) == [{"type": "stderr", "text": "e", "timestamp": None}]


def test_error_joins_traceback_lines() -> None:
    assert wire.error("E", "v", ["a", "b"]) == {
        "type": "error",
        "name": "E",
        "value": "v",
        "traceback": "a\nb",
    }


def test_encode_is_one_utf8_json_line_even_with_lone_surrogates() -> None:
    line = wire.encode({"type": "stdout", "text": "bad \udcff ok é"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line.decode("utf-8")) == {"type": "stdout", "text": "bad \ufffd ok é"}
