"""What ``bench/interpreter.py`` and ``bench/mcp_gateway.py`` share: a private ``hutch serve``
with one of install.sh's step-built templates linked in (cold first, then restarted with a
warm pool of it), creates timed to their first answer, and a sandbox's memory by process.

Each benchmark keeps its own host names (``HostNames``) so they can run at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _instance
from serve import _ms, wait_for_pool

from hutch.node.templates.busybox import build_busybox
from tests.e2e.serveproc import HostNames, Serve, link_installed_template, nodehelpers

Rows = list[tuple[str, str]]
#: The whole, the create alone and the first answer alone, one entry per create.
Times = tuple[list[float], list[float], list[float]]

_MIB = 2**20


@dataclass
class TemplateServe:
    """A running private serve of ``template`` (see :func:`template_serve`)."""

    home: Path
    serve: Serve
    template: str
    cgroup_parent: str

    def with_pool(self, size: int = 2) -> None:
        """Restart the serve with ``size`` warm members of the template."""
        self.serve.stop()
        self.serve.extra_env["HUTCH_NODE_POOL_SIZE"] = f"{self.template}={size}"
        self.serve.start()

    def wait_for_pool(self, size: int, settle: float) -> None:
        wait_for_pool(self.home, size, settle, 120)

    def host_id(self, sandbox_id: str) -> str:
        """A pooled sandbox's directories keep its pool id (``sandbox.json`` names both)."""
        for record in (self.home / "sandboxes").glob("*/sandbox.json"):
            if json.loads(record.read_text()).get("sandbox_id") == sandbox_id:
                return record.parent.name
        return sandbox_id

    def memory_rows(self, host_id: str, label: str) -> Rows:
        """``label`` and the memory cgroup's usage of the sandbox ``host_id``, then a row per
        process in it (PSS first)."""
        cgroup = self._memory_cgroup(host_id)
        usage = _cgroup_usage(cgroup) if cgroup else None
        rows = [(label, f"{(usage or 0) / _MIB:.1f} MiB")]
        for command, rss, pss in sorted(_processes(cgroup) if cgroup else [], key=lambda p: -p[2]):
            rows.append(
                (f"  process: {command}", f"PSS {pss / _MIB:.1f} MiB (RSS {rss / _MIB:.1f})")
            )
        return rows

    def _memory_cgroup(self, host_id: str) -> Path | None:
        saved = nodehelpers.CGROUP_PARENT
        nodehelpers.CGROUP_PARENT = self.cgroup_parent
        try:
            for parent in nodehelpers.cgroup_parents():
                if _cgroup_usage(parent / host_id) is not None:
                    return parent / host_id
        finally:
            nodehelpers.CGROUP_PARENT = saved
        return None


@contextlib.contextmanager
def template_serve(template: str, names: HostNames, *, script: str) -> Iterator[TemplateServe]:
    """A private home with busybox, install.sh's base and ``template`` linked in, and a serve
    on ``names`` without a pool, started, the SDK's environment naming it; everything it
    made is removed afterwards, also after a failure."""
    if os.geteuid() != 0:
        raise SystemExit(f"{script} needs root (runc, network namespaces)")
    home = Path(tempfile.mkdtemp(prefix=f"hutch-bench-{template}-", dir="/var/tmp"))
    inst: Serve | None = None
    try:
        build_busybox(home / "templates")
        for name in ("base", template):
            if not link_installed_template(home / "templates", name):
                raise SystemExit(f"install.sh's {name} template is not built (run ./install.sh)")
        inst = Serve(
            home=home, envd_bundle=nodehelpers.cached_envd_bundle(), names=names,
            extra_env={"HUTCH_NODE_POOL_SIZE": ""},
        )  # fmt: skip
        key = inst.hutch("keys", "create").strip()
        os.environ.update(
            E2B_API_URL=inst.api_url, E2B_SANDBOX_URL=inst.sandbox_url, E2B_API_KEY=key
        )
        for k in [k for k in os.environ if "proxy" in k.lower()]:
            del os.environ[k]
        inst.start()
        yield TemplateServe(home, inst, template, names.cgroup_parent)
    finally:
        if inst is not None:
            inst.stop()
            inst.destroy_everything()
        _instance.remove_home(home)


def timed_creates(
    n: int, before: Callable[[], None], create: Callable[[], Any], first: Callable[[Any], None]
) -> Times:
    """``n`` times (``before`` each): ``create()`` a sandbox, then ``first(sandbox)``, its
    first answer; then kill it."""
    whole, creates, firsts = [], [], []
    for _ in range(n):
        before()
        t0 = time.perf_counter()
        sbx = create()
        t1 = time.perf_counter()
        first(sbx)
        t2 = time.perf_counter()
        whole.append(t2 - t0)
        creates.append(t1 - t0)
        firsts.append(t2 - t1)
        sbx.kill()
    return whole, creates, firsts


def create_rows(measure: str, n: int, times: Times, *, parts: str) -> Rows:
    """``measure`` (n, p50 / p95), then ``parts`` (the create; the first answer)."""
    whole, creates, firsts = times
    return [
        (f"{measure} (n={n}) p50 / p95", _ms(whole)),
        (f"  of which {parts}: p50 / p95", f"{_ms(creates)}; {_ms(firsts)}"),
    ]


def _processes(cgroup_dir: Path) -> list[tuple[str, int, int]]:
    """(command, RSS, PSS) of each process in a memory cgroup."""
    out = []
    for pid in (cgroup_dir / "cgroup.procs").read_text().split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = {ln.split(":")[0]: ln.split()[1] for ln in rollup.splitlines()[1:]}
        words = [a.decode(errors="replace") for a in argv if a][:4]
        out.append((" ".join(words)[:70], int(fields["Rss"]) * 1024, int(fields["Pss"]) * 1024))
    return out


def _cgroup_usage(cgroup: Path) -> int | None:
    for name in ("memory.usage_in_bytes", "memory.current"):
        if (cgroup / name).is_file():
            return int((cgroup / name).read_text())
    return None
