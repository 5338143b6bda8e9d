"""The api role's Prometheus metrics (docs/observability.md has the whole list).

Every label is bounded: routes are templates (``/sandboxes/{sandbox_id}``), templates are
names (a sandbox started from a template id or a snapshot counts as ``other``), outcomes
are ``ok`` or an error's code from ``shared.errors``; never a sandbox id.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, TypeVar

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hutch.shared import telemetry
from hutch.shared.errors import HutchError

_F = TypeVar("_F", bound=Callable[..., Any])

#: Seconds: from a 5 ms answer to a two-minute cold create or build step.
LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
#: A template that is not a name (an id, a snapshot) is counted under this one.
OTHER_TEMPLATE: Final = "other"

REQUESTS = Counter(
    "hutch_api_requests_total",
    "API requests by route template, method and status.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "hutch_api_request_duration_seconds",
    "API request latency by route template and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
LIFECYCLE = Counter(
    "hutch_sandbox_operations_total",
    "Sandbox lifecycle operations (create, kill, pause, resume) by outcome and template.",
    ["operation", "outcome", "template"],
)
LIFECYCLE_SECONDS = Histogram(
    "hutch_sandbox_operation_duration_seconds",
    "Latency of successful sandbox lifecycle operations.",
    ["operation", "template"],
    buckets=LATENCY_BUCKETS,
)
CREATE_PHASE_SECONDS = Histogram(
    "hutch_sandbox_create_phase_duration_seconds",
    "Time a successful create spent in each phase as the api sees it: checks (template, "
    "quotas, capacity), store (the row), node (the node's create, envd ready included).",
    ["phase"],
    buckets=LATENCY_BUCKETS,
)
NODE_CALL_SECONDS = Histogram(
    "hutch_api_node_call_duration_seconds",
    "Node API calls made by the api, by route template and outcome.",
    ["method", "route", "outcome"],
    buckets=LATENCY_BUCKETS,
)
SANDBOXES = Gauge(
    "hutch_sandboxes",
    "Live sandboxes in the store by team, template and state (sampled).",
    ["team_id", "template", "state"],
)
BUILDS = Counter(
    "hutch_template_builds_total",
    "Template builds (SDK Template.build) and image imports by kind and outcome.",
    ["kind", "outcome"],
)
BUILD_SECONDS = Histogram(
    "hutch_template_build_duration_seconds",
    "Duration of template builds and image imports by kind and outcome.",
    ["kind", "outcome"],
    buckets=(1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
STORE_SECONDS = Histogram(
    "hutch_store_query_duration_seconds",
    "SQL statements by verb (select, insert, update, delete, other).",
    ["verb"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)


def outcome_of(exc: BaseException | None) -> str:
    """``ok``, or the error's bounded reason: its E2B ``error_code`` or its code."""
    if exc is None:
        return "ok"
    if isinstance(exc, HutchError):
        return str(exc.error_code or exc.code.value)
    return "internal"


def template_label(alias: str | None) -> str:
    """A template's label: its alias (a name someone chose) from the store, else ``other``
    (a sandbox of a template id or a snapshot; ids would make the label unbounded)."""
    return alias or OTHER_TEMPLATE


class Operation:
    """One lifecycle operation in flight (see :func:`observed`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.template: str | None = None
        self._last = time.perf_counter()
        self.started = self._last
        self.phases: list[tuple[str, float]] = []

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases.append((phase, now - self._last))
        self._last = now


_operation: contextvars.ContextVar[Operation | None] = contextvars.ContextVar(
    "hutch_operation", default=None
)


def note_template(alias: str | None) -> None:
    """The current operation's template, once the store said which it is (an alias, so a
    caller's unknown name never becomes a label)."""
    op = _operation.get()
    if op is not None:
        op.template = alias


def phase(name: str) -> None:
    """End the current create's phase ``name`` (the time since the previous mark)."""
    op = _operation.get()
    if op is not None:
        op.mark(name)


def _template_of(result: object) -> str | None:
    sandbox = getattr(result, "sandbox", result)  # Resumed carries its Sandbox
    return getattr(sandbox, "alias", None)


def observed(operation: str) -> Callable[[_F], _F]:
    """Count and time an async service method as lifecycle ``operation``: outcome ``ok``
    or the error's reason, template from the returned sandbox (or :func:`note_template`),
    create phases from :func:`phase`. A nested observed call is not counted twice."""

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        async def run(*args: Any, **kwargs: Any) -> Any:
            outer = _operation.get()
            if outer is not None and outer.name == operation:
                return await fn(*args, **kwargs)
            op = Operation(operation)
            token = _operation.set(op)
            # A span per operation too (the reaper's and the proxy's have no request span).
            with telemetry.tracer().start_as_current_span(f"sandbox.{operation}") as span:
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    outcome = outcome_of(exc)
                    span.set_attribute("hutch.outcome", outcome)
                    LIFECYCLE.labels(operation, outcome, template_label(op.template)).inc()
                    raise
                finally:
                    _operation.reset(token)
                label = template_label(_template_of(result) or op.template)
                span.set_attribute("hutch.template", label)
                span.set_attribute("hutch.outcome", "ok")
            LIFECYCLE.labels(operation, "ok", label).inc()
            LIFECYCLE_SECONDS.labels(operation, label).observe(time.perf_counter() - op.started)
            for name, seconds in op.phases:
                CREATE_PHASE_SECONDS.labels(name).observe(seconds)
            return result

        return run  # type: ignore[return-value]

    return wrap


def set_sandbox_gauges(rows: Iterable[tuple[str, str | None, str, int]]) -> None:
    """Replace the sandbox gauges with ``(team_id, template alias, state, count)`` rows."""
    fresh: dict[tuple[str, str, str], int] = {}
    for team_id, alias, state, count in rows:
        key = (str(team_id), template_label(alias), state)
        fresh[key] = fresh.get(key, 0) + count
    SANDBOXES.clear()
    for (team_id, template, state), count in fresh.items():
        SANDBOXES.labels(team_id, template, state).set(count)


async def sample_sandboxes(count_live: Callable[[], Any], *, interval_s: float) -> None:
    """Refresh :data:`SANDBOXES` from the store every ``interval_s`` until cancelled."""
    while True:
        try:
            set_sandbox_gauges(await count_live())
        except Exception:  # a store hiccup must not end the sampling
            logging.getLogger("hutch.api.metrics").warning("sandbox gauges", exc_info=True)
        await asyncio.sleep(interval_s)


def record_build(kind: str, outcome: str, seconds: float) -> None:
    """One finished template build or import (``kind``: build, import)."""
    BUILDS.labels(kind, outcome).inc()
    BUILD_SECONDS.labels(kind, outcome).observe(seconds)


class _StorePools(Collector):
    """``hutch_store_pool_connections{state}``: the SQL pools' connections at scrape time
    (every engine this process opened and still holds)."""

    def __init__(self) -> None:
        self.pools: weakref.WeakSet[Any] = weakref.WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "hutch_store_pool_connections",
            "SQL connection pool: connections checked out (in use) and the pool's size.",
            labels=["state"],
        )
        used = size = 0
        for pool in list(self.pools):
            used += int(getattr(pool, "checkedout", lambda: 0)())
            size += int(getattr(pool, "size", lambda: 0)())
        family.add_metric(["checked_out"], used)
        family.add_metric(["size"], size)
        yield family


_STORE_POOLS = _StorePools()
REGISTRY.register(_STORE_POOLS)


def watch_pool(pool: object) -> None:
    """Report ``pool`` in ``hutch_store_pool_connections`` while it lives."""
    _STORE_POOLS.pools.add(pool)
