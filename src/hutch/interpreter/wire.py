"""The ``/execute`` stream's items, as the E2B code-interpreter SDKs parse them.

Pure functions from Jupyter message content to the JSON objects the server writes, one
per line. ``result`` items map MIME types to the SDK's fields; anything else goes to
``extra``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

#: Jupyter MIME type -> the SDK's ``Result`` field.
MIME_FIELDS: dict[str, str] = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "e2b/data": "data",
    "e2b/chart": "chart",
}

#: Stream text longer than this is sent as several ``stdout``/``stderr`` items, so no
#: single line of the response (nor the SDK's line buffer) grows without bound.
MAX_STREAM_CHUNK = 256 * 1024


def timestamp(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return value if isinstance(value, str) else None


def stream(name: str, text: str, ts: Any) -> list[dict[str, Any]]:
    """``stdout``/``stderr`` items for one Jupyter stream message (split when long)."""
    kind = "stderr" if name == "stderr" else "stdout"
    when = timestamp(ts)
    if len(text) <= MAX_STREAM_CHUNK:
        return [{"type": kind, "text": text, "timestamp": when}]
    return [
        {"type": kind, "text": text[i : i + MAX_STREAM_CHUNK], "timestamp": when}
        for i in range(0, len(text), MAX_STREAM_CHUNK)
    ]


def _unquote(text: str) -> str:
    # E2B's server strips the quotes of a string's repr ('abc' -> abc); clients rely on it.
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def result(bundle: dict[str, Any], *, is_main_result: bool) -> dict[str, Any]:
    """A ``result`` item from a display bundle (``execute_result`` or ``display_data``)."""
    item: dict[str, Any] = {"type": "result"}
    extra: dict[str, Any] = {}
    for mime, value in bundle.items():
        name = MIME_FIELDS.get(mime)
        if name is None:
            extra[mime] = value
        elif name == "text" and isinstance(value, str):
            item["text"] = _unquote(value)
        elif name == "chart" and not value:
            continue  # a figure the extractor could not read: png only
        else:
            item[name] = value
    item["extra"] = extra
    item["is_main_result"] = is_main_result
    return item


def error(name: str, value: str, traceback: str | list[str]) -> dict[str, Any]:
    if isinstance(traceback, list):
        traceback = "\n".join(traceback)
    return {"type": "error", "name": name, "value": value, "traceback": traceback}


def number_of_executions(count: int) -> dict[str, Any]:
    return {"type": "number_of_executions", "execution_count": count}


KEEPALIVE: dict[str, Any] = {"type": "keepalive"}
END_OF_EXECUTION: dict[str, Any] = {"type": "end_of_execution"}


def encode(item: dict[str, Any]) -> bytes:
    """One response line. Lone surrogates (undecodable bytes a kernel passed through)
    become U+FFFD, so every line is valid UTF-8 JSON."""
    text = json.dumps(item, ensure_ascii=False, default=str)
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        clean = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return clean.encode("utf-8") + b"\n"
