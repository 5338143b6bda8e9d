"""The one logging setup of every role (``hutch serve``, ``hutch node``, ...): structlog's
``ProcessorFormatter`` over the standard library, so every ``logging.getLogger(...)`` call
in the code base stays as it is and still gets the request's context.

* :func:`configure_logging` is called once, by a role's entry point: JSON lines
  (``format="json"``, ``HUTCH_LOG_FORMAT=json``: what a log shipper wants) or readable
  ``key=value`` lines (``"console"``, the default; colours only on a terminal).
* :func:`bind` puts ``sandbox_id``, ``team_id``, ``node_id``, ``template`` or
  ``request_id`` into the current context (contextvars): every later line of the same
  request, in any module, carries them. :func:`request_scope` opens a fresh context per
  request (transport middleware only) and :func:`bound` reads what a request bound, for
  its access line.
* The request id crosses the roles as :data:`REQUEST_ID_HEADER` (api → node wire, and
  whatever the SDK sends to the api or the proxy), so one grep follows one sandbox.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import secrets
import sys
from collections.abc import Iterator, Mapping
from typing import Any, Final, Literal

import structlog

REQUEST_ID_HEADER: Final = "X-Request-Id"
#: Context keys that are bound per request (see :func:`bind`).
CONTEXT_KEYS: Final = ("request_id", "sandbox_id", "team_id", "node_id", "template")

LogFormat = Literal["console", "json"]

#: What a request bound so far: a mutable dict per request, so that the transport's access
#: line (outside the handler's context copy) sees what the handler bound.
_request_fields: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "hutch_request_fields", default=None
)

#: An incoming id is kept when it is printable and short; anything else gets a fresh one
#: (a header must not inject newlines or megabytes into every log line).
_VALID_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


def new_request_id() -> str:
    """A fresh request id (16 random bytes, hex)."""
    return secrets.token_hex(16)


def request_id_from(value: str | bytes | None) -> str:
    """The incoming ``X-Request-Id`` when it is usable, else a fresh one."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if value and _VALID_ID.match(value):
        return value
    return new_request_id()


def bind(**fields: object) -> None:
    """Bind ``fields`` (``None`` values are skipped) for the rest of this context."""
    kept = {k: str(v) for k, v in fields.items() if v is not None}
    if not kept:
        return
    structlog.contextvars.bind_contextvars(**kept)
    current = _request_fields.get()
    if current is not None:
        current.update(kept)


def bound() -> dict[str, Any]:
    """What this request bound so far (empty outside a :func:`request_scope`)."""
    current = _request_fields.get()
    return dict(current) if current is not None else {}


def current_request_id() -> str | None:
    """The request id bound in this context, if any."""
    value = structlog.contextvars.get_contextvars().get("request_id")
    return str(value) if value is not None else None


@contextlib.contextmanager
def request_scope(request_id: str, **fields: object) -> Iterator[dict[str, Any]]:
    """A fresh logging context for one request: ``request_id`` and ``fields`` bound, the
    dict :func:`bind` fills yielded; the previous context is restored after."""
    saved = structlog.contextvars.get_contextvars()
    structlog.contextvars.clear_contextvars()
    fields_token = _request_fields.set({})
    try:
        bind(request_id=request_id, **fields)
        yield _request_fields.get() or {}
    finally:
        _request_fields.reset(fields_token)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**saved)


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(
    *,
    format: LogFormat = "console",
    level: str = "INFO",
    quiet: Mapping[str, str] | None = None,
    stream: Any = None,
) -> None:
    """Configure the root logger once for this process (see the module docstring).

    ``quiet`` raises the level of chatty libraries (default: httpx, httpcore, alembic at
    WARNING: one line per envd request from the node's client would drown the rest).
    """
    out = stream if stream is not None else sys.stderr
    tty = bool(getattr(out, "isatty", lambda: False)())
    renderer: Any
    if format == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False, ensure_ascii=False)
        extra: list[Any] = [structlog.processors.format_exc_info]
    else:
        # Plain tracebacks: rich's would print every frame's locals (tokens among them).
        renderer = structlog.dev.ConsoleRenderer(
            colors=tty,
            pad_event_to=0,
            sort_keys=False,
            exception_formatter=structlog.dev.plain_traceback,
        )
        extra = []
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *extra,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name, lib_level in (
        quiet or {"httpx": "WARNING", "httpcore": "WARNING", "alembic": "WARNING"}
    ).items():
        logging.getLogger(name).setLevel(lib_level)
    # structlog's own loggers (if a module uses them) go through the same handler.
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
