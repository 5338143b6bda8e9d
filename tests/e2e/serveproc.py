"""A real ``hutch serve`` subprocess for the end-to-end tests, and the host-side checks.

Everything global it creates is named ``hse2e*`` (bridge ``hse2e0`` on 10.215.33.0/24,
netns ``hse2e-*``, veths ``hxe*``, nft table ``hse2e``, cgroup parent ``hse2e-<pid>``),
distinct from the node tests' ``hsm*`` and the network tests' ``hn*``. ``HUTCH_TEST_SLOT=N``
(1-9) moves all of them (``hse2eN``, 10.215.(33+N).0/24, ``hse2eN-*``, ``hxN*``), so that two
e2e runs on one machine (two engineers' worktrees) do not tear down each other's sandboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parents[1] / "integration" / "node"))
import nodehelpers

from hutch.node.app import build_node
from hutch.node.runtime.base import Runtime
from hutch.node.runtime.runc import RuncRuntime
from hutch.node.runtime.runsc import RunscRuntime
from hutch.node.settings import NodeSettings
from hutch.node.templates.busybox import build_busybox
from tests.conftest import machine_lacks


@dataclass(frozen=True)
class HostNames:
    """Names of everything global one ``hutch serve`` creates, and its node's extra env."""

    bridge: str
    subnet: str
    netns_prefix: str
    veth_prefix: str
    nft_table: str
    cgroup_parent: str
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {
            "HUTCH_NODE_BRIDGE": self.bridge,
            "HUTCH_NODE_SUBNET": self.subnet,
            "HUTCH_NODE_NETNS_PREFIX": self.netns_prefix,
            "HUTCH_NODE_VETH_PREFIX": self.veth_prefix,
            "HUTCH_NODE_NFT_TABLE": self.nft_table,
            "HUTCH_NODE_CGROUP_PARENT": self.cgroup_parent,
            "HUTCH_NODE_MANAGE_IP_FORWARD": "false",
            **self.extra_env,
        }


def _slot() -> int:
    raw = os.environ.get("HUTCH_TEST_SLOT", "0") or "0"
    if not raw.isdigit() or not 0 <= int(raw) <= 9:
        raise SystemExit(f"HUTCH_TEST_SLOT must be a digit 0-9, not {raw!r}")
    return int(raw)


SLOT = _slot()
E2E_NAMES = HostNames(
    bridge=f"hse2e{SLOT}",
    subnet=f"10.215.{33 + SLOT}.0/24",
    netns_prefix=f"hse2e{SLOT}-" if SLOT else "hse2e-",
    veth_prefix=f"hx{SLOT}" if SLOT else "hxe",
    nft_table=f"hse2e{SLOT}" if SLOT else "hse2e",
    cgroup_parent=f"hse2e{SLOT}-{os.getpid()}",
    extra_env={
        "HUTCH_NODE_ENVD_READY_TIMEOUT_S": "60",
        # A sample a second, so that metrics tests wait little.
        "HUTCH_NODE_METRICS_INTERVAL_S": "1",
        # No warm pool unless a test asks (test_pool.py): idle members would count as leaks,
        # and the session links the installed ``base`` template in, which the default pools.
        "HUTCH_NODE_POOL_SIZE": "",
        # Hermetic: the session's templates are its own busybox and the linked base, not
        # whatever the install's home holds (test_second_instance.py tests the default).
        "HUTCH_NODE_SHARED_TEMPLATES_DIR": "",
    },
)
#: A second instance beside the session's (test_second_instance.py): every name distinct,
#: none a prefix of the first one's (the leak counter matches by prefix).
SECOND_NAMES = HostNames(
    bridge=f"hsb{SLOT}",
    subnet=f"10.217.{33 + SLOT}.0/24",
    netns_prefix=f"hsb{SLOT}-",
    veth_prefix=f"hy{SLOT}",
    nft_table=f"hsb{SLOT}",
    cgroup_parent=f"hsb{SLOT}-{os.getpid()}",
    extra_env={"HUTCH_NODE_ENVD_READY_TIMEOUT_S": "60", "HUTCH_NODE_POOL_SIZE": ""},
)


#: Set by the compatibility matrix (tests/compat/test_matrix.py) to ``Serve.attach_spec``:
#: the session's ``serve`` is then that running instance, and the ``compat``-marked tests
#: drive it (the E2B_* variables name it).
ATTACH_ENV = "HUTCH_E2E_ATTACH"
#: Where ``install.sh`` (which ``test.sh`` runs first) builds the templates; a developer
#: trying a changed template definition points this at the home it was built into.
INSTALLED_TEMPLATES = Path(
    os.environ.get("HUTCH_TEST_INSTALLED_TEMPLATES") or "/var/lib/hutch/templates"
)
#: install.sh's templates a test home offers when they are built (minutes each).
LINKED_TEMPLATES = ("base", "code-interpreter-v1", "mcp-gateway")


def seed_templates(home: Path) -> None:
    """A test home's templates: its own busybox (milliseconds to build) and, when
    ``install.sh`` built them, the installed ``base``, ``code-interpreter-v1`` and
    ``mcp-gateway`` linked in (minutes to build; shared read-only, as an overlay lower
    layer always is)."""
    build_busybox(home / "templates")
    for name in LINKED_TEMPLATES:
        link_installed_template(home / "templates", name)


def link_installed_template(templates: Path, name: str) -> bool:
    """Offer install.sh's template ``name`` in ``templates`` without a copy (its tree is a
    read-only overlay lower layer); a step-built one's sealed artifact is linked too."""
    meta = INSTALLED_TEMPLATES / name / "template.json"
    if not meta.is_file():
        return False
    fingerprint = json.loads(meta.read_text()).get("artifact")
    if fingerprint:
        artifacts = templates / ".artifacts"
        artifacts.mkdir(exist_ok=True)
        (artifacts / fingerprint).symlink_to(INSTALLED_TEMPLATES / ".artifacts" / fingerprint)
    (templates / name).symlink_to(INSTALLED_TEMPLATES / name)
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Serve:
    """One ``hutch serve`` on its own home and ports; restartable on the same ones."""

    home: Path
    envd_bundle: Path
    api_port: int = field(default_factory=free_port)
    proxy_port: int = field(default_factory=free_port)
    #: Prometheus ``/metrics`` (docs/observability.md; None: off); its logs are JSON lines.
    metrics_port: int | None = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    #: Read at the next ``start`` (e.g. ``HUTCH_NODE_POOL_SIZE``).
    extra_env: dict[str, str] = field(default_factory=dict)
    names: HostNames = E2E_NAMES

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(self.names.env(), HUTCH_NODE_ENVD_BUNDLE_DIR=str(self.envd_bundle))
        # Names this instance for ``hutch`` subcommands, as for ``hutch serve`` itself.
        env["HUTCH_API_PORT"] = str(self.api_port)
        env["HUTCH_PROXY_PORT"] = str(self.proxy_port)
        if self.metrics_port is not None:
            env["HUTCH_METRICS_PORT"] = str(self.metrics_port)
        env["HUTCH_LOG_FORMAT"] = "json"
        env.update(self.extra_env)
        return env

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def attach_spec(self) -> str:
        """What ``Serve.attached`` needs to drive this running instance from another process."""
        return json.dumps({
            "home": str(self.home), "envd_bundle": str(self.envd_bundle),
            "api_port": self.api_port, "proxy_port": self.proxy_port,
            "metrics_port": self.metrics_port,
            "names": dataclasses.asdict(self.names),
        })  # fmt: skip

    @classmethod
    def attached(cls, spec: str) -> Serve:
        """The instance another process started (``attach_spec``); never started or stopped
        from here (``proc`` stays None)."""
        d = json.loads(spec)
        return cls(
            home=Path(d["home"]), envd_bundle=Path(d["envd_bundle"]), api_port=d["api_port"],
            proxy_port=d["proxy_port"], names=HostNames(**d["names"]),
            metrics_port=d.get("metrics_port"),
        )  # fmt: skip

    def hutch(self, *args: str) -> str:
        """Run a ``hutch`` command against this home; its stdout."""
        return subprocess.run(
            [sys.executable, "-m", "hutch", *args, "--home", str(self.home)],
            env=self.env, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip

    def start(self) -> None:
        """Start and wait until ``GET /health`` answers 200 (or the process dies)."""
        log = open(self.home / "serve.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hutch", "serve", "--home", str(self.home), "--host",
             "127.0.0.1", "--api-port", str(self.api_port), "--proxy-port", str(self.proxy_port)],
            env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hutch serve exited: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"hutch serve not healthy after 300 s: {self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the process by its pid and reap it (SIGKILL after 120 s); its exit code, or
        None when it was not running."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def log_tail(self) -> str:
        return (self.home / "serve.log").read_text(errors="replace")[-3000:]

    def node_settings(self) -> NodeSettings:
        """The node's settings exactly as the child reads them."""
        return NodeSettings(
            home=self.home, bridge=self.names.bridge, subnet=self.names.subnet,  # type: ignore[arg-type]
            netns_prefix=self.names.netns_prefix, veth_prefix=self.names.veth_prefix,
            nft_table=self.names.nft_table, cgroup_parent=self.names.cgroup_parent,
            manage_ip_forward=False,
            envd_bundle_dir=self.envd_bundle, runtime=self.extra_env.get("HUTCH_RUNTIME", "runc"),
        )  # fmt: skip

    def leaks(self) -> nodehelpers.Leaks:
        """What the node's sandboxes hold on the host (the node tests' counter, our names)."""
        settings = self.node_settings()
        saved = (nodehelpers.NETNS_PREFIX, nodehelpers.VETH_PREFIX, nodehelpers.CGROUP_PARENT)
        nodehelpers.NETNS_PREFIX = self.names.netns_prefix
        nodehelpers.VETH_PREFIX = self.names.veth_prefix
        nodehelpers.CGROUP_PARENT = settings.cgroup_parent
        try:
            return asyncio.run(nodehelpers.count_leaks(settings, _runtime(settings)))
        finally:
            nodehelpers.NETNS_PREFIX, nodehelpers.VETH_PREFIX, nodehelpers.CGROUP_PARENT = saved

    @contextlib.contextmanager
    def running(self) -> Iterator[Serve]:
        """Start serve; at the end stop it, destroy whatever is left, and require that
        nothing leaked (the teardown every fixture that owns a serve needs)."""
        try:
            self.start()
            yield self
        finally:
            if self.proc is not None:
                self.stop()
            self.destroy_everything()
        leaks = self.leaks()
        assert leaks.total() == 0, leaks

    def destroy_everything(self) -> None:
        """With serve stopped: destroy every sandbox left, the bridge, firewall and cgroups."""

        async def run() -> None:
            node = build_node(self.node_settings(), build_bundle=False)
            try:
                await node.manager.start()
                await node.manager.reconcile([])
            finally:
                await node.networks.remove_bridge()
                await node.aclose()

        asyncio.run(run())
        saved = nodehelpers.CGROUP_PARENT
        nodehelpers.CGROUP_PARENT = self.names.cgroup_parent
        try:
            for parent in nodehelpers.cgroup_parents():
                with contextlib.suppress(OSError):
                    parent.rmdir()
        finally:
            nodehelpers.CGROUP_PARENT = saved


def _runtime(settings: NodeSettings) -> Runtime:
    """The runtime adapter the child uses (for ``list()`` in the leak counter)."""
    if settings.runtime == "runsc":
        return RunscRuntime(root=settings.runtime_root, platform=settings.runsc_platform)
    return RuncRuntime(root=settings.runtime_root)


@contextlib.contextmanager
def restarted_on_runsc(serve: Serve) -> Iterator[Serve]:
    """``serve`` restarted under runsc for the block, then back on runc; nothing may leak."""
    if shutil.which("runsc") is None:
        machine_lacks("runsc is not installed (install.sh installs it)")
    serve.stop()
    serve.extra_env = {"HUTCH_RUNTIME": "runsc"}
    try:
        serve.start()
        yield serve
    finally:
        serve.stop()
        leaks = serve.leaks()
        serve.extra_env = {}
        serve.start()
    assert leaks.total() == 0, leaks
