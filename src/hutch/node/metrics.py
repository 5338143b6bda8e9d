"""The node role's Prometheus metrics (docs/observability.md has the whole list).

Timings are recorded at the adapter seams (:class:`TimedAdapter` around the runtime and the
network) and at envd's readiness; the state (sandboxes, pool, resources) is read at scrape
time by :class:`NodeCollector` from the node's own bookkeeping, in the event loop's thread
(``shared/telemetry.MetricsServer``). No label is a sandbox id.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from hutch.shared import telemetry
from hutch.shared.errors import HutchError

_FAST: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "hutch_node_requests_total",
    "Node API requests by route template, method and status.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "hutch_node_request_duration_seconds",
    "Node API request latency by route template and method.",
    ["route", "method"],
    buckets=(*_FAST, 60.0, 120.0),
)
RUNTIME_SECONDS = Histogram(
    "hutch_node_runtime_call_duration_seconds",
    "OCI runtime (runc/runsc) calls by call and outcome.",
    ["call", "outcome"],
    buckets=_FAST,
)
NETWORK_SECONDS = Histogram(
    "hutch_node_network_call_duration_seconds",
    "Sandbox network setup and teardown (netns, veth, nftables) by call and outcome.",
    ["call", "outcome"],
    buckets=_FAST,
)
ENVD_READY_SECONDS = Histogram(
    "hutch_node_envd_ready_duration_seconds",
    "From the runtime's start to envd's first healthy answer.",
    buckets=_FAST,
)
BOOT_PHASE_SECONDS = Histogram(
    "hutch_node_boot_phase_duration_seconds",
    "A sandbox boot (cold create, restore, fork, pool member) phase by phase (docs/runtime.md).",
    ["phase"],
    buckets=_FAST,
)
RECONCILES = Counter(
    "hutch_node_reconcile_sandboxes_total",
    "Sandboxes a reconcile adopted, removed (unknown to the api) or found missing.",
    ["result"],
)

#: Runtime and network calls worth a timing (the rest are reads: state, list).
TIMED_RUNTIME_CALLS: Final = frozenset(
    {"create", "start", "delete", "kill", "pause", "resume", "exec", "set_hostname"}
)
TIMED_NETWORK_CALLS: Final = frozenset({"setup", "teardown", "ensure_bridge"})


class TimedAdapter:
    """Delegates every attribute to ``inner``; the coroutine methods in ``calls`` are timed
    into ``histogram`` (labels call, outcome). Satisfies whatever Protocol ``inner`` does."""

    def __init__(
        self, inner: Any, *, histogram: Histogram, calls: frozenset[str], span_prefix: str
    ) -> None:
        self._inner = inner
        self._histogram = histogram
        self._calls = calls
        self._prefix = span_prefix

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name not in self._calls or not inspect.iscoroutinefunction(value):
            return value
        histogram = self._histogram
        span_name = f"{self._prefix}.{name}"

        @functools.wraps(value)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            outcome = "error"
            with telemetry.tracer().start_as_current_span(span_name) as span:
                try:
                    result = await value(*args, **kwargs)
                    outcome = "ok"
                    return result
                except HutchError as exc:
                    outcome = str(exc.code.value)
                    raise
                finally:
                    span.set_attribute("hutch.outcome", outcome)
                    histogram.labels(name, outcome).observe(time.perf_counter() - started)

        return timed


class BootPhases:
    """Times one boot phase by phase: :meth:`mark` ends the phase ``name`` (the time since
    the previous mark) into :data:`BOOT_PHASE_SECONDS`; :attr:`times` keeps them (logs)."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.times: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        spent = now - self._last
        self._last = now
        self.times[name] = self.times.get(name, 0.0) + spent
        BOOT_PHASE_SECONDS.labels(name).observe(spent)

    def summary(self) -> str:
        """``name=12.3ms ...`` in order."""
        return " ".join(f"{k}={v * 1000:.1f}ms" for k, v in self.times.items())


def record_reconcile(*, adopted: int, removed: int, missing: int) -> None:
    """Count what one reconcile did."""
    for result, count in (("adopted", adopted), ("removed", removed), ("missing", missing)):
        if count:
            RECONCILES.labels(result).inc(count)


class NodeCollector(Collector):
    """Gauges read at scrape time: sandboxes, pool, CPU/memory allocated and used, disk.

    ``load`` is ``NodeService.load`` (cheap, in-memory); ``usage`` yields the newest
    ``(cpu_used_cores, mem_used_bytes, disk_used_bytes)`` per sandbox; ``disk_path`` is the
    filesystem the sandboxes' disks live on; ``disk_allocated`` sums their sizes (bytes).
    """

    def __init__(
        self,
        *,
        load: Callable[[], Any],
        usage: Callable[[], Iterator[tuple[float, int, int]]],
        disk_path: Path,
        disk_allocated: Callable[[], int] = lambda: 0,
    ) -> None:
        self._load = load
        self._usage = usage
        self._disk_path = disk_path
        self._disk_allocated = disk_allocated

    def collect(self) -> Iterator[GaugeMetricFamily]:
        load = self._load()
        sandboxes = GaugeMetricFamily(
            "hutch_node_sandboxes", "Sandboxes on this node by state.", labels=["state"]
        )
        sandboxes.add_metric(["running"], load.running)
        sandboxes.add_metric(["paused"], load.paused)
        yield sandboxes
        wanted = GaugeMetricFamily(
            "hutch_node_pool_wanted", "Warm pool members wanted per template.", labels=["template"]
        )
        ready = GaugeMetricFamily(
            "hutch_node_pool_ready", "Warm pool members ready per template.", labels=["template"]
        )
        for template, target, idle in load.pool:
            wanted.add_metric([template], target)
            ready.add_metric([template], idle)
        yield wanted
        yield ready
        yield _gauge("hutch_node_cpu_cores", "Host CPU cores.", load.host_cpu_count)
        yield _gauge("hutch_node_memory_bytes", "Host memory.", load.host_memory_mb * 1024 * 1024)
        yield _gauge(
            "hutch_node_cpu_allocated_cores", "vCPUs given to sandboxes.", load.allocated_cpu
        )
        yield _gauge(
            "hutch_node_memory_allocated_bytes",
            "Memory limits given to sandboxes.",
            load.allocated_memory_mb * 1024 * 1024,
        )
        cpu = mem = disk = 0.0
        for cpu_used, mem_used, disk_used in self._usage():
            cpu += cpu_used
            mem += mem_used
            disk += disk_used
        yield _gauge("hutch_node_cpu_used_cores", "CPU cores sandboxes use (sampled).", cpu)
        yield _gauge("hutch_node_memory_used_bytes", "Memory sandboxes use (sampled).", mem)
        yield _gauge(
            "hutch_node_disk_used_bytes", "Bytes sandboxes wrote to their upper layers.", disk
        )
        yield _gauge(
            "hutch_node_disk_allocated_bytes",
            "Sizes of the sandboxes' own disks (their writable layers).",
            self._disk_allocated(),
        )
        try:
            st = os.statvfs(self._disk_path)
        except OSError:
            return
        yield _gauge(
            "hutch_node_disk_free_bytes",
            "Free bytes on the sandboxes' filesystem.",
            st.f_bavail * st.f_frsize,
        )
        yield _gauge(
            "hutch_node_disk_size_bytes",
            "Size of the sandboxes' filesystem.",
            st.f_blocks * st.f_frsize,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


_registered: dict[str, NodeCollector] = {}


def register_collector(collector: NodeCollector) -> None:
    """Expose ``collector`` (one per process: a new node replaces the previous one)."""
    old = _registered.pop("node", None)
    if old is not None:
        REGISTRY.unregister(old)
    REGISTRY.register(collector)
    _registered["node"] = collector
