"""``SandboxHost``: the node's sandboxes on the host, and the steps that make and unmake them.

The manager and its collaborators (the warm pool, pausing, reconcile) share one of these:
the adapters (runtime, networks, rootfs, templates, envd), which sandboxes run, which ids
are busy, and the two halves of a sandbox's life on the host. Boot, in order, each step
pushing its undo (``undo.py``)::

    sandbox dir -> network (netns, veth, address) -> disk (the upper layer's own ext4)
    -> /etc files in the upper layer -> overlay rootfs -> config.json
    -> runtime create + start -> envd /health

and destroy: container, rootfs, network, directory, in the reverse order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address
from pathlib import Path

from hutch.node import lxcfs, metrics
from hutch.node.bundle import write_bundle
from hutch.node.network.base import SandboxNetwork
from hutch.node.runtime.base import Runtime, RuntimeFailedError, RuntimeState, RuntimeStatus
from hutch.node.sandbox import lifecycle
from hutch.node.sandbox.envd_fork import (
    EnvdWatches,
    EnvdZygote,
    envd_alive_in,
    oci_env,
    profile_key,
)
from hutch.node.sandbox.models import (
    ManagerConfig,
    RunningSandbox,
    SandboxNotFoundError,
    SandboxRequest,
    effective_policy,
)
from hutch.node.sandbox.ports import EnvdClient, NodeNetworks, RootfsLayer, TemplateStore
from hutch.node.sandbox.records import BOOT_ID, ENVD_LOG, tail, write_record
from hutch.node.sandbox.undo import Undo, as_undo
from hutch.node.templates.artifact import TemplateArtifact
from hutch.shared import telemetry
from hutch.shared.errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    HutchError,
    InvalidArgumentError,
    NotFoundError,
)
from hutch.shared.paths import ENVD_PORT

#: Readiness polling: start fast (envd is usually up within a few hundred ms), back off.
_POLL_FIRST_S = 0.005
_POLL_MAX_S = 0.05
#: How often, while polling, to ask the runtime whether PID 1 died (fail fast, with its log).
_LIVENESS_EVERY_S = 0.5
#: How long lxcfs may take to answer a stat before a sandbox boots without its views.
_LXCFS_CHECK_S = 1.0

log = logging.getLogger("hutch.node.sandbox")


class SandboxHost:
    """The adapters, the running sandboxes and busy ids, and boot/destroy on the host."""

    def __init__(
        self,
        *,
        config: ManagerConfig,
        runtime: Runtime,
        networks: NodeNetworks,
        rootfs: RootfsLayer,
        templates: TemplateStore,
        envd: EnvdClient,
        zygote: EnvdZygote | None = None,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.networks = networks
        self.rootfs = rootfs
        self.templates = templates
        self.envd = envd
        #: The node's envd zygote (``HUTCH_NODE_ENVD_ZYGOTE``, runc only); None: exec.
        self.zygote = zygote
        #: A pidfd per forked envd: its exit stops the container, as an exec'd one's does.
        self.watches = EnvdWatches(self.envd_exited)
        self._background: set[asyncio.Task[None]] = set()
        self.running: dict[str, RunningSandbox] = {}
        #: Ids being created or killed: they count against the limit and cannot be reused.
        self.busy: set[str] = set()

    def get(self, sandbox_id: str) -> RunningSandbox:
        """The running sandbox; raise :class:`SandboxNotFoundError` if there is none."""
        try:
            return self.running[sandbox_id]
        except KeyError:
            raise SandboxNotFoundError(f"sandbox {sandbox_id} not found") from None

    def record(self, sandbox: RunningSandbox) -> RunningSandbox:
        """Write the sandbox's ``sandbox.json`` and keep it as running here."""
        write_record(sandbox)
        self.running[sandbox.sandbox_id] = sandbox
        return sandbox

    async def boot(
        self, request: SandboxRequest, *, template: TemplateArtifact, undo: list[Undo]
    ) -> RunningSandbox:
        """Boot ``request`` up to a healthy envd (not ``/init``-ed), pushing each undo."""
        cfg = self.config
        sid = request.sandbox_id
        sandbox_dir = cfg.sandboxes_dir / sid
        phases = metrics.BootPhases()
        try:
            sandbox_dir.mkdir(mode=0o700)
        except FileExistsError:
            raise AlreadyExistsError(f"leftovers of sandbox {sid} exist; reconcile first") from None
        undo.append(as_undo(lambda: shutil.rmtree(sandbox_dir, ignore_errors=True)))

        disk_mb = self.disk_mb(request, template)
        policy = effective_policy(request)
        phases.mark("dir")
        # lxcfs's check (a stat in a thread) beside the disk and network too.
        views = asyncio.ensure_future(self.proc_views())
        views.add_done_callback(lambda f: f.cancelled() or f.exception())  # a failed boot's
        # The network (ip, nft) and the disk (mkfs.ext4) need nothing of each other: both
        # at once, each undone if it was made, whichever failed (issue 19, ADR 0041).
        setup = asyncio.ensure_future(
            self.networks.setup(sid, allow_internet=request.allow_internet, policy=policy)
        )
        undo.append(lambda: self._teardown_made(sid, setup))
        undo.append(as_undo(lambda: self.rootfs.remove(sandbox_dir)))
        upper = await asyncio.to_thread(self.rootfs.prepare, sandbox_dir, disk_mb=disk_mb)
        phases.mark("disk")
        net = await setup
        phases.mark("network")  # what the network took beyond the disk
        lifecycle.write_etc_files(
            upper, sandbox_id=sid, address=net.address, dns_servers=cfg.dns_servers
        )
        rootfs = self.rootfs.mount(sandbox_dir, lower=template.lowers)
        phases.mark("overlay")

        cpu = request.cpu_count if request.cpu_count is not None else template.cpu_count
        memory = request.memory_mb if request.memory_mb is not None else template.memory_mb
        forked = self.forks_envd(template)
        spec = lifecycle.sandbox_spec(
            sandbox_id=sid, rootfs=rootfs, template=template, cpu_count=cpu, memory_mb=memory,
            netns_path=Path(net.netns_path), config=cfg, volume_mounts=request.volume_mounts,
            proc_views=await views, cpu_weight=request.cpu_weight,
            envd_forked=forked,
        )  # fmt: skip
        write_bundle(sandbox_dir, lifecycle.oci_config(spec, config=cfg))
        phases.mark("spec")

        undo.append(lambda: self.delete_container(sid))
        init_pid, envd_pid = await self.create_and_start(
            sid, sandbox_dir, phases=phases,
            fork=(lambda pid: self.fork_envd(sid, sandbox_dir, init_pid=pid, template=template))
            if forked else None,
        )  # fmt: skip
        envd_url = f"http://{net.address}:{ENVD_PORT}"
        started = time.perf_counter()
        with telemetry.tracer().start_as_current_span("envd.ready"):
            await self.wait_healthy(sid, envd_url, sandbox_dir=sandbox_dir)
        metrics.ENVD_READY_SECONDS.observe(time.perf_counter() - started)
        phases.mark("envd_health")
        log.debug("sandbox %s booted: %s", sid, phases.summary())
        return RunningSandbox(
            sandbox_id=sid, template=template.name, address=net.address, envd_url=envd_url,
            pid=init_pid, cpu_count=cpu, memory_mb=memory,
            default_user=template.default_user, workdir=template.workdir,
            started_at=time.time(), sandbox_dir=sandbox_dir, allow_internet=not policy.blocks_all,
            egress=policy,
            volume_mounts=tuple(request.volume_mounts), disk_mb=disk_mb, envd_pid=envd_pid,
        )  # fmt: skip

    async def _teardown_made(self, sid: str, setup: asyncio.Future[SandboxNetwork]) -> None:
        """Undo of a network set up beside the disk: once its setup ended, tear it down if
        it was made (a setup that failed removed what it made itself)."""
        try:
            net = await asyncio.shield(setup)
        except BaseException:  # failed or cancelled: nothing of it is left
            return
        await self.networks.teardown(sid, address=net.address)

    def forks_envd(self, template: TemplateArtifact) -> bool:
        """Whether a sandbox of ``template`` booted now gets its envd from the zygote: the
        zygote is on and ready (else: exec, as before), and the template mounts the node's
        bundle with envd as tini's child (an image template runs its entrypoint wrapper)."""
        return template.image is None and self.zygote is not None and self.zygote.usable()

    async def fork_envd(
        self, host_id: str, sandbox_dir: Path, *, init_pid: int, template: TemplateArtifact
    ) -> int:
        """Fork envd into the started container ``host_id`` and watch it; its host pid."""
        assert self.zygote is not None
        oci = json.loads((sandbox_dir / "config.json").read_text())
        pid = await self.zygote.fork(
            init_pid, argv=lifecycle.envd_options(template), env=oci_env(oci),
            log_path=sandbox_dir / ENVD_LOG, profile=profile_key(oci),
            keyring=f"_ses.{host_id}",  # runc's session keyring for the container
            listen=("0.0.0.0", ENVD_PORT),  # envd_options' address, bound before envd runs
        )  # fmt: skip
        if not self.watches.watch(host_id, pid):
            raise RuntimeFailedError(f"envd of {host_id} exited as soon as it was forked")
        return pid

    async def envd_exited(self, host_id: str) -> None:
        """A forked envd exited: stop its container, as an exec'd envd's exit does."""
        log.warning("envd of %s exited: stopping its container", host_id)
        try:
            await self.runtime.kill(host_id, signal=signal.SIGKILL)
        except HutchError as exc:  # gone already (killed, deleted meanwhile)
            log.info("stopping %s after its envd exited: %s", host_id, exc)

    def rearm(self, sandbox: RunningSandbox) -> None:
        """After a node restart: watch an adopted sandbox's forked envd again (or stop
        its container if that envd is gone, as its exit would have)."""
        if not sandbox.envd_pid or sandbox.paused == "filesystem":
            return
        if sandbox.host_id in self.watches.watched():
            return
        if not (
            envd_alive_in(sandbox.envd_pid, sandbox.pid)
            and self.watches.watch(sandbox.host_id, sandbox.envd_pid)
        ):
            task = asyncio.ensure_future(self.envd_exited(sandbox.host_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def proc_views(self) -> list[tuple[Path, str]]:
        """lxcfs's /proc views for a new container; none when lxcfs is off, dead or hung
        (checked in a thread under a timeout: a hung FUSE mount never holds the node)."""
        if self.config.lxcfs_dir is None:
            return []
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(lxcfs.views, self.config.lxcfs_dir), _LXCFS_CHECK_S
            )
        except TimeoutError:
            log.warning("lxcfs at %s does not answer: this sandbox sees the host's /proc",
                        self.config.lxcfs_dir)  # fmt: skip
            return []

    def disk_mb(self, request: SandboxRequest, template: TemplateArtifact) -> int:
        """The disk ``request`` gets: its own, the template's, or the node's default; one
        above the node's limit is refused (400, naming the limit). A template build's
        sandbox (an explicit artifact) gets the node's largest: its steps accumulate in
        one upper layer (code-interpreter-v1's are ~0.8 GB above base)."""
        cfg = self.config
        build = cfg.max_disk_mb if request.artifact is not None else None
        size = request.disk_mb or build or template.disk_mb or cfg.default_disk_mb
        if size < 1:
            raise InvalidArgumentError(f"disk size must be at least 1 MB, not {size}")
        if size > cfg.max_disk_mb:
            raise InvalidArgumentError(
                f"disk size {size} MB is above this node's limit of {cfg.max_disk_mb} MB "
                "(HUTCH_NODE_MAX_DISK_MB)"
            )
        return size

    async def create_and_start(
        self,
        host_id: str,
        sandbox_dir: Path,
        *,
        phases: metrics.BootPhases | None = None,
        fork: Callable[[int], Awaitable[int]] | None = None,
    ) -> tuple[int, int]:
        """A fresh ``<sandbox dir>/boot_id`` → runtime create → it over ``/proc/.../boot_id``
        (runc: mounted into the created container; runsc: a config mount) → start;
        ``(init pid, envd pid)``: the container's init (from the create, else the runtime's
        state; 0: none) and what ``fork(init pid)`` returned (0 without one).

        ``fork`` (envd from the zygote) runs beside the start, once the container is
        created: its namespaces, cgroups, credentials and seccomp filter are final by then
        (runc's init waits on its exec FIFO with them), and its cgroup joins come right
        after runc's own, which are cheap then (cgroup v1 makes the first write to
        ``cgroup.procs`` after a quiet spell wait for an RCU grace period, ~10 ms here;
        ADR 0041). The check of the forked envd against PID 1 is the same.

        Every (re)boot of a sandbox gets a new boot id, and only a boot does: a resume
        that kept memory shows the same one (ADR 0004).
        """
        boot_id = sandbox_dir / BOOT_ID
        tmp = boot_id.with_name(f".{BOOT_ID}.tmp")
        tmp.write_text(f"{uuid.uuid4()}\n")
        os.replace(tmp, boot_id)  # a new inode: an old container's mount keeps the old one
        pid = await self.runtime.create(
            sandbox_dir, sandbox_id=host_id, output_path=sandbox_dir / ENVD_LOG
        )
        if pid is None:
            pid = (await self.runtime.state(host_id)).pid
        if phases is not None:
            phases.mark("runc_create")
        await self.runtime.bind_boot_id(host_id, boot_id, pid=pid)
        if phases is not None:
            phases.mark("boot_id")
        if fork is None:
            await self.runtime.start(host_id)
            envd_pid = 0
        else:
            started, forked = await asyncio.gather(
                self.runtime.start(host_id), fork(pid or 0), return_exceptions=True
            )
            for outcome in (started, forked):
                if isinstance(outcome, BaseException):
                    if isinstance(forked, int):
                        self.watches.unwatch(host_id)  # the undo deletes the container
                    raise outcome
            assert isinstance(forked, int)
            envd_pid = forked
        if phases is not None:
            phases.mark("runc_start" if fork is None else "runc_start_envd_fork")
        return pid or 0, envd_pid

    async def wait_healthy(self, sandbox_id: str, envd_url: str, *, sandbox_dir: Path) -> None:
        """Poll envd's ``/health`` until it answers; fail fast if PID 1 died."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.ready_timeout_s
        next_liveness = loop.time() + _LIVENESS_EVERY_S
        pause = _POLL_FIRST_S
        while not await self.envd.healthy(envd_url):
            now = loop.time()
            if now >= deadline:
                raise DeadlineExceededError(
                    f"envd of {sandbox_id} not healthy after {self.config.ready_timeout_s}s: "
                    + tail(sandbox_dir / ENVD_LOG),
                    public_message="the sandbox did not become ready in time",
                )
            if now >= next_liveness:
                next_liveness = now + _LIVENESS_EVERY_S
                state = await self.runtime.state(sandbox_id)
                if state.status is RuntimeStatus.STOPPED or not self.watches.alive(sandbox_id):
                    raise RuntimeFailedError(
                        f"sandbox {sandbox_id} exited before envd was ready: "
                        + tail(sandbox_dir / ENVD_LOG)
                    )
            await asyncio.sleep(pause)
            pause = min(pause * 2, _POLL_MAX_S)

    async def destroy(self, host_id: str, *, address: IPv4Address | None = None) -> bool:
        """Container, rootfs, network, directory: in the reverse order of creation."""
        sandbox_dir = self.config.sandboxes_dir / host_id
        found = sandbox_dir.exists()
        found = await self.delete_container(host_id) or found
        self.rootfs.remove(sandbox_dir)
        await self.networks.teardown(host_id, address=address)
        shutil.rmtree(sandbox_dir, ignore_errors=True)
        return found

    async def delete_container(self, sandbox_id: str) -> bool:
        """Force-delete the container; False if there was none."""
        self.watches.unwatch(sandbox_id)  # its forked envd dies with it, as expected
        try:
            await self.runtime.delete(sandbox_id, force=True)
        except NotFoundError:
            return False
        return True

    async def find_state(self, host_id: str) -> RuntimeState | None:
        """The container's runtime state, or None if there is no container."""
        try:
            return await self.runtime.state(host_id)
        except NotFoundError:
            return None


def init_body(
    request: SandboxRequest, sandbox: RunningSandbox, template: TemplateArtifact
) -> dict[str, object]:
    """envd's ``/init`` body for a create of ``request``."""
    return lifecycle.init_body(
        # The template's env (an image's Env) under the request's: processes envd starts
        # see both, as `docker exec` sees the image's.
        env_vars={**template.env, **request.env_vars},
        access_token=request.access_token,
        default_user=sandbox.default_user,
        workdir=sandbox.workdir,
        timestamp=time.time(),
    )
