"""``SandboxManager``: create, kill, list and reconcile the sandboxes of one node.

Create is one ordered flow, and every step that leaves something on the host pushes its
undo onto a stack, so a failure anywhere (or a cancellation) unwinds exactly what was done::

    sandbox dir -> network (netns, veth, address) -> /etc files in the upper layer
    -> overlay rootfs -> config.json -> runtime create + start -> envd /health -> envd /init

Boot (everything up to a healthy envd) and personalisation (``/init``: env vars, access
token, user, workdir) are separate methods, so the warm pool (ADR 0011, ``pool.py``) boots
sandboxes ahead of demand and a create whose :class:`PoolKey` matches takes one: hostname,
``/etc/hostname`` and ``/etc/hosts`` are set to the new id, then ``/init``. Such a sandbox
keeps its pool id as ``host_id`` (directory, container, cgroup, netns and veth names),
recorded in its ``sandbox.json`` so that kill and reconcile find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from ipaddress import IPv4Address
from pathlib import Path

from hutch.node.bundle import validate_sandbox_id, write_bundle
from hutch.node.runtime.base import (
    ExecResult,
    Runtime,
    RuntimeFailedError,
    RuntimeState,
    RuntimeStatus,
)
from hutch.node.runtime.procmount import BOOT_ID_FILE
from hutch.node.sandbox import lifecycle
from hutch.node.sandbox.envd_log import EnvdLogEntry, parse_envd_log
from hutch.node.sandbox.models import (
    ManagerConfig,
    ReconcileReport,
    RunningSandbox,
    SandboxNotFoundError,
    SandboxRequest,
)
from hutch.node.sandbox.pool import PoolKey, WarmPool, is_pool_id, new_pool_id
from hutch.node.sandbox.ports import EnvdClient, NodeNetworks, RootfsLayer, TemplateStore
from hutch.node.templates import snapshot as snapshots
from hutch.node.templates.artifact import TemplateArtifact
from hutch.shared.errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    HutchError,
    NotFoundError,
    ResourceExhaustedError,
)
from hutch.shared.paths import ENVD_PORT

log = logging.getLogger("hutch.node.sandbox")

_RECORD = "sandbox.json"
_ENVD_LOG = "envd.log"
_BOOT_ID = BOOT_ID_FILE
#: Readiness polling: start fast (envd is usually up within a few hundred ms), back off.
_POLL_FIRST_S = 0.005
_POLL_MAX_S = 0.05
#: How often, while polling, to ask the runtime whether PID 1 died (fail fast, with its log).
_LIVENESS_EVERY_S = 0.5
#: How often the pool's refill looks again whether user creates are still in flight.
_POOL_YIELD_S = 0.02

Undo = Callable[[], Awaitable[None]]


class SandboxManager:
    """Owns this node's sandboxes: their directories, networks, rootfs and containers."""

    def __init__(
        self,
        *,
        config: ManagerConfig,
        runtime: Runtime,
        networks: NodeNetworks,
        rootfs: RootfsLayer,
        templates: TemplateStore,
        envd: EnvdClient,
    ) -> None:
        self._config = config
        self._runtime = runtime
        self._networks = networks
        self._rootfs = rootfs
        self._templates = templates
        self._envd = envd
        self._running: dict[str, RunningSandbox] = {}
        #: Ids being created or killed: they count against the limit and cannot be reused.
        self._busy: set[str] = set()
        #: Host ids of pool members being booted or personalised (reconcile leaves them).
        self._hosts_in_flight: set[str] = set()
        self._pool = WarmPool({})
        #: host id -> the template's stamp when that member booted (a rebuilt template
        #: makes older members stale).
        self._member_stamps: dict[str, str] = {}
        self._pool_task: asyncio.Task[None] | None = None
        #: Pool templates not built here (logged once until they appear).
        self._pool_missing: set[str] = set()
        self._pool_wakeup = asyncio.Event()

    @property
    def config(self) -> ManagerConfig:
        """The node-level facts this manager was built with."""
        return self._config

    async def start(self) -> None:
        """Prepare the host (bridge, firewall, directories). Call once before anything else."""
        self._config.sandboxes_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        await self._networks.ensure_bridge()

    # ---- create -------------------------------------------------------------------------

    async def create(self, request: SandboxRequest) -> RunningSandbox:
        """Boot a sandbox from ``request.template`` and initialise its envd.

        Raises:
            InvalidArgumentError: a bad id or resource value.
            TemplateNotFoundError: the template is not built on this node.
            AlreadyExistsError: the id is in use here.
            ResourceExhaustedError: the node runs ``max_sandboxes`` already.
            RuntimeFailedError, DeadlineExceededError: the sandbox did not come up; nothing
                of it is left behind.
        """
        sandbox_id = validate_sandbox_id(request.sandbox_id)
        template = request.artifact or await self._templates.get(request.template)
        self._claim(sandbox_id)
        try:
            # Pool members booted without bind mounts: a create with volumes boots cold;
            # a build sandbox (an explicit artifact) never takes one either.
            sandbox = (
                None
                if request.volume_mounts or request.artifact is not None
                else await self._from_pool(request, template=template)
            )
            if sandbox is None:
                sandbox = await self._create_cold(request, template=template)
        finally:
            self._busy.discard(sandbox_id)
        self._running[sandbox_id] = sandbox
        log.info("sandbox %s running at %s (host id %s)", sandbox_id, sandbox.address,
                 sandbox.host_id)  # fmt: skip
        return sandbox

    async def _create_cold(
        self, request: SandboxRequest, *, template: TemplateArtifact
    ) -> RunningSandbox:
        undo: list[Undo] = []
        try:
            sandbox = await self._boot(request, template=template, undo=undo)
            await self._envd.init(sandbox.envd_url, _init_body(request, sandbox, template))
            sandbox = dataclasses.replace(sandbox, metadata=dict(request.metadata))
            _write_record(sandbox)
        except BaseException:
            await _unwind(undo, sandbox_id=request.sandbox_id)
            raise
        return sandbox

    def _claim(self, sandbox_id: str) -> None:
        if sandbox_id in self._running or sandbox_id in self._busy:
            raise AlreadyExistsError(f"sandbox {sandbox_id} already exists on this node")
        if len(self._running) + len(self._busy) >= self._config.max_sandboxes:
            raise ResourceExhaustedError(
                f"node runs {self._config.max_sandboxes} sandboxes already",
                public_message="this node runs as many sandboxes as it is allowed to",
            )
        self._busy.add(sandbox_id)

    async def _boot(
        self, request: SandboxRequest, *, template: TemplateArtifact, undo: list[Undo]
    ) -> RunningSandbox:
        cfg = self._config
        sid = request.sandbox_id
        sandbox_dir = cfg.sandboxes_dir / sid
        try:
            sandbox_dir.mkdir(mode=0o700)
        except FileExistsError:
            raise AlreadyExistsError(f"leftovers of sandbox {sid} exist; reconcile first") from None
        undo.append(_async(lambda: shutil.rmtree(sandbox_dir, ignore_errors=True)))

        net = await self._networks.setup(sid, allow_internet=request.allow_internet)
        undo.append(lambda: self._networks.teardown(sid, address=net.address))

        lifecycle.write_etc_files(
            sandbox_dir / "upper", sandbox_id=sid, address=net.address, dns_servers=cfg.dns_servers
        )
        undo.append(_async(lambda: self._rootfs.remove(sandbox_dir)))
        rootfs = self._rootfs.mount(sandbox_dir, lower=template.lowers)

        cpu = request.cpu_count if request.cpu_count is not None else template.cpu_count
        memory = request.memory_mb if request.memory_mb is not None else template.memory_mb
        spec = lifecycle.sandbox_spec(
            sandbox_id=sid, rootfs=rootfs, template=template, cpu_count=cpu, memory_mb=memory,
            netns_path=Path(net.netns_path), config=cfg, volume_mounts=request.volume_mounts,
        )  # fmt: skip
        write_bundle(sandbox_dir, lifecycle.oci_config(spec, config=cfg))

        undo.append(lambda: self._delete_container(sid))
        await self._create_and_start(sid, sandbox_dir)
        state = await self._runtime.state(sid)
        envd_url = f"http://{net.address}:{ENVD_PORT}"
        await self._wait_healthy(sid, envd_url, sandbox_dir=sandbox_dir)
        return RunningSandbox(
            sandbox_id=sid, template=template.name, address=net.address, envd_url=envd_url,
            pid=state.pid or 0, cpu_count=cpu, memory_mb=memory,
            default_user=template.default_user, workdir=template.workdir,
            started_at=time.time(), sandbox_dir=sandbox_dir, allow_internet=request.allow_internet,
            volume_mounts=tuple(request.volume_mounts),
        )  # fmt: skip

    async def _create_and_start(self, host_id: str, sandbox_dir: Path) -> None:
        """A fresh ``<sandbox dir>/boot_id`` → runtime create → it over ``/proc/.../boot_id``
        (runc: mounted into the created container; runsc: a config mount) → start.

        Every (re)boot of a sandbox gets a new boot id, and only a boot does: a resume
        that kept memory shows the same one (ADR 0004).
        """
        boot_id = sandbox_dir / _BOOT_ID
        tmp = boot_id.with_name(f".{_BOOT_ID}.tmp")
        tmp.write_text(f"{uuid.uuid4()}\n")
        os.replace(tmp, boot_id)  # a new inode: an old container's mount keeps the old one
        await self._runtime.create(
            sandbox_dir, sandbox_id=host_id, output_path=sandbox_dir / _ENVD_LOG
        )
        await self._runtime.bind_boot_id(host_id, boot_id)
        await self._runtime.start(host_id)

    async def _wait_healthy(self, sandbox_id: str, envd_url: str, *, sandbox_dir: Path) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.ready_timeout_s
        next_liveness = loop.time() + _LIVENESS_EVERY_S
        pause = _POLL_FIRST_S
        while not await self._envd.healthy(envd_url):
            now = loop.time()
            if now >= deadline:
                raise DeadlineExceededError(
                    f"envd of {sandbox_id} not healthy after {self._config.ready_timeout_s}s: "
                    + _tail(sandbox_dir / _ENVD_LOG),
                    public_message="the sandbox did not become ready in time",
                )
            if now >= next_liveness:
                next_liveness = now + _LIVENESS_EVERY_S
                state = await self._runtime.state(sandbox_id)
                if state.status is RuntimeStatus.STOPPED:
                    raise RuntimeFailedError(
                        f"sandbox {sandbox_id} exited before envd was ready: "
                        + _tail(sandbox_dir / _ENVD_LOG)
                    )
            await asyncio.sleep(pause)
            pause = min(pause * 2, _POLL_MAX_S)

    # ---- the warm pool (ADR 0011) -------------------------------------------------------

    async def start_pool(self) -> None:
        """Start keeping ``config.pool_sizes`` members per template; call after reconcile.

        Members boot one at a time in the background, so refills never take both cores
        from user creates. The templates are looked at again on every pass (and at least
        every ``pool_recheck_s``): one built after the start gets its pool then, and
        members of a template rebuilt since they booted are replaced.
        """
        if self._pool_task is None and any(n > 0 for n in self._config.pool_sizes.values()):
            self._pool_task = asyncio.create_task(self._keep_pool(), name="hutch-warm-pool")

    async def stop_pool(self) -> None:
        """Stop refilling and destroy every idle member (shutdown). Idempotent."""
        task, self._pool_task = self._pool_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for member in self._pool.drain():
            await self._discard_member(member)

    def pool_members(self) -> list[RunningSandbox]:
        """The idle members (for tests and metrics)."""
        return list(self._pool.idle())

    async def _keep_pool(self) -> None:
        while True:
            self._pool_wakeup.clear()
            try:
                await self._retarget()
                await self._refill()
            except Exception:  # a bug must not end the refill for good: log, retry later
                log.exception("warm pool: refill failed")
                await asyncio.sleep(self._config.pool_retry_s)
                continue
            if not self._pool.missing() or not self._room_for_pool():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._pool_wakeup.wait(), timeout=self._config.pool_recheck_s
                    )

    async def _retarget(self) -> None:
        """Targets from the templates as they are now; discard members that no longer fit."""
        targets: dict[PoolKey, int] = {}
        stamps: dict[str, str] = {}
        for name, size in self._config.pool_sizes.items():
            if size <= 0:
                continue
            try:
                template = await self._templates.get(name)
            except HutchError:  # not built (yet), or unreadable
                if name not in self._pool_missing:
                    log.warning("warm pool: template %s is not built here (yet)", name)
                    self._pool_missing.add(name)
                continue
            self._pool_missing.discard(name)
            targets[_pool_key(template, cpu=None, memory=None, allow_internet=True)] = size
            stamps[name] = _template_stamp(template)
        for member in self._pool.retarget(targets):
            await self._discard_member(member)
        for member in list(self._pool.idle()):
            # remove() first: a create may have taken it while an earlier one was destroyed.
            stale = self._member_stamps.get(member.host_id) != stamps.get(member.template)
            if stale and self._pool.remove(member):
                await self._discard_member(member)

    async def _discard_member(self, member: RunningSandbox) -> None:
        self._member_stamps.pop(member.host_id, None)
        await self._destroy(member.host_id, address=member.address)

    async def _refill(self) -> None:
        for key in self._pool.missing():
            # User creates first: a member's boot costs the CPU of a cold create, so it
            # starts only while no create or kill is in flight (on 2 cores it would slow them).
            while self._busy:
                await asyncio.sleep(_POOL_YIELD_S)
            if not self._room_for_pool():
                return
            if not await self._boot_member(key):
                await asyncio.sleep(self._config.pool_retry_s)
                return

    def _room_for_pool(self) -> bool:
        used = len(self._running) + len(self._busy) + self._pool.size()
        return used < self._config.max_sandboxes

    async def _boot_member(self, key: PoolKey) -> bool:
        host_id = new_pool_id()
        request = SandboxRequest(
            sandbox_id=host_id, template=key.template, cpu_count=key.cpu_count,
            memory_mb=key.memory_mb, allow_internet=key.allow_internet,
        )  # fmt: skip
        undo: list[Undo] = []
        self._hosts_in_flight.add(host_id)
        self._pool.booting(key, +1)
        try:
            template = await self._templates.get(key.template)
            member = await self._boot(request, template=template, undo=undo)
        except BaseException as exc:
            await _unwind(undo, sandbox_id=host_id)
            if not isinstance(exc, HutchError | OSError):
                raise
            log.warning("warm pool: booting a %s member failed: %s", key.template, exc)
            return False
        finally:
            self._pool.booting(key, -1)
            self._hosts_in_flight.discard(host_id)
        self._member_stamps[host_id] = _template_stamp(template)
        if not self._pool.add(key, member):  # the key's target went away meanwhile
            await self._discard_member(member)
            return True
        log.info("warm pool: %s member %s ready", key.template, host_id)
        return True

    async def _from_pool(
        self, request: SandboxRequest, *, template: TemplateArtifact
    ) -> RunningSandbox | None:
        """A pool member personalised as ``request``, or None (no match: create cold).

        A member that cannot be personalised (or whose template was rebuilt since it
        booted) is destroyed, and the next one, or a cold create, is tried.
        """
        key = _pool_key(template, cpu=request.cpu_count, memory=request.memory_mb,
                        allow_internet=request.allow_internet)  # fmt: skip
        while (member := self._pool.take(key)) is not None:
            self._pool_wakeup.set()
            fresh = self._member_stamps.pop(member.host_id, None) == _template_stamp(template)
            self._hosts_in_flight.add(member.host_id)
            try:
                if fresh:
                    return await self._personalise(member, request, template=template)
            except (HutchError, OSError) as exc:
                log.warning("warm pool: member %s failed to become %s: %s",
                            member.host_id, request.sandbox_id, exc)  # fmt: skip
            except BaseException:
                await _unwind([_destroy_step(self, member)], sandbox_id=member.host_id)
                raise
            finally:
                self._hosts_in_flight.discard(member.host_id)
            await self._destroy(member.host_id, address=member.address)
        return None

    async def _personalise(
        self, member: RunningSandbox, request: SandboxRequest, *, template: TemplateArtifact
    ) -> RunningSandbox:
        """Give a booted member ``request``'s identity; its envd gets ``/init`` last."""
        sandbox = dataclasses.replace(
            member, sandbox_id=request.sandbox_id, started_at=time.time(),
            metadata=dict(request.metadata),
        )  # fmt: skip
        await self._runtime.set_hostname(member.host_id, request.sandbox_id)
        lifecycle.write_identity(
            member.sandbox_dir / "rootfs", sandbox_id=request.sandbox_id, address=member.address
        )
        await self._envd.init(sandbox.envd_url, _init_body(request, sandbox, template))
        _write_record(sandbox)
        log.info("warm pool: member %s became sandbox %s", member.host_id, request.sandbox_id)
        return sandbox

    # ---- kill, list ---------------------------------------------------------------------

    async def kill(self, sandbox_id: str) -> bool:
        """Remove everything of ``sandbox_id``; True if anything was there. Idempotent."""
        validate_sandbox_id(sandbox_id)
        if is_pool_id(sandbox_id):
            return False  # pool members are the node's own, never a user's sandbox
        if sandbox_id in self._busy:
            raise AlreadyExistsError(f"sandbox {sandbox_id} is being created or killed")
        self._busy.add(sandbox_id)
        try:
            known = self._running.get(sandbox_id)
            host_id = known.host_id if known else sandbox_id
            found = await self._destroy(host_id, address=known.address if known else None)
        finally:
            self._busy.discard(sandbox_id)
            self._running.pop(sandbox_id, None)
            self._pool_wakeup.set()  # room for the pool again
        return found or known is not None

    async def _destroy(self, host_id: str, *, address: IPv4Address | None = None) -> bool:
        """Container, rootfs, network, directory: in the reverse order of creation."""
        sandbox_dir = self._config.sandboxes_dir / host_id
        found = sandbox_dir.exists()
        found = await self._delete_container(host_id) or found
        self._rootfs.remove(sandbox_dir)
        await self._networks.teardown(host_id, address=address)
        shutil.rmtree(sandbox_dir, ignore_errors=True)
        return found

    async def _delete_container(self, sandbox_id: str) -> bool:
        try:
            await self._runtime.delete(sandbox_id, force=True)
        except NotFoundError:
            return False
        return True

    # ---- pause, resume ------------------------------------------------------------------

    async def pause(self, sandbox_id: str, *, keep_memory: bool = True) -> RunningSandbox:
        """Pause a running sandbox (ADR 0004); a paused one is returned as it is.

        ``keep_memory``: freeze every process (``runc pause``: the cgroup freezer; memory
        and processes stay, ``paused="full"``). Otherwise the container is deleted and only
        the filesystem (upper layer, still mounted) and the network are kept
        (``paused="filesystem"``); resuming then boots it again.
        """
        sandbox = self.get(sandbox_id)
        if sandbox.paused is not None:
            return sandbox
        if keep_memory:
            await self._runtime.pause(sandbox.host_id)
            mode = "full"
        else:
            await self._delete_container(sandbox.host_id)
            mode = "filesystem"
        return self._record(dataclasses.replace(sandbox, paused=mode))

    async def resume(
        self,
        sandbox_id: str,
        *,
        keep_memory: bool = True,
        env_vars: Mapping[str, str] | None = None,
        access_token: str | None = None,
    ) -> tuple[RunningSandbox, bool]:
        """Bring a paused sandbox back; ``(sandbox, memory_kept)``. A running one: as it is.

        A ``"full"`` pause whose container is still frozen is thawed (memory kept) unless
        ``keep_memory`` is False. Anything else (a ``"filesystem"`` pause, a container that
        is gone, e.g. after the host restarted, or ``keep_memory=False``) boots the sandbox
        again over its kept upper layer with a new boot id, and ``/init``s its envd with
        ``env_vars`` and ``access_token`` (memory not kept).
        """
        sandbox = self.get(sandbox_id)
        if sandbox.paused is None:
            return sandbox, True
        if keep_memory and sandbox.paused == "full":
            state = await self._find_state(sandbox.host_id)
            if state is not None and state.status is RuntimeStatus.PAUSED:
                await self._runtime.resume(sandbox.host_id)
                return self._record(dataclasses.replace(sandbox, paused=None)), True
        rebooted = await self._reboot(sandbox, env_vars=env_vars or {}, access_token=access_token)
        return rebooted, False

    async def _reboot(
        self, sandbox: RunningSandbox, *, env_vars: Mapping[str, str], access_token: str | None
    ) -> RunningSandbox:
        """Boot a paused sandbox again from its files: new container, network, boot id.

        Host objects keep the sandbox's host id (a pool member's stay ``pool-*``); the
        hostname and ``/etc`` files say the sandbox id.
        """
        sid, host, sandbox_dir, cfg = (
            sandbox.sandbox_id, sandbox.host_id, sandbox.sandbox_dir, self._config
        )  # fmt: skip
        template = await self._templates.get(sandbox.template)
        if sid in self._busy:
            raise AlreadyExistsError(f"sandbox {sid} is being created or killed")
        self._busy.add(sid)
        try:
            await self._delete_container(host)
            # The old network may be gone (host restart): make a fresh one either way.
            await self._networks.teardown(host, address=sandbox.address)
            net = await self._networks.setup(host, allow_internet=sandbox.allow_internet)
            lifecycle.write_etc_files(
                sandbox_dir / "upper", sandbox_id=sid, address=net.address,
                dns_servers=cfg.dns_servers,
            )  # fmt: skip
            rootfs = sandbox_dir / "rootfs"
            if rootfs not in self._rootfs.mounted_under(sandbox_dir):
                rootfs = self._rootfs.mount(sandbox_dir, lower=template.lowers)
            spec = lifecycle.sandbox_spec(
                sandbox_id=host, rootfs=rootfs, template=template, cpu_count=sandbox.cpu_count,
                memory_mb=sandbox.memory_mb, netns_path=Path(net.netns_path), config=cfg,
                volume_mounts=sandbox.volume_mounts,
            )  # fmt: skip
            write_bundle(sandbox_dir, lifecycle.oci_config(spec, config=cfg))
            try:
                await self._create_and_start(host, sandbox_dir)
                if host != sid:
                    await self._runtime.set_hostname(host, sid)
                state = await self._runtime.state(host)
                envd_url = f"http://{net.address}:{ENVD_PORT}"
                await self._wait_healthy(host, envd_url, sandbox_dir=sandbox_dir)
                await self._envd.init(
                    envd_url,
                    lifecycle.init_body(
                        env_vars=env_vars, access_token=access_token,
                        default_user=sandbox.default_user, workdir=sandbox.workdir,
                        timestamp=time.time(),
                    ),
                )  # fmt: skip
            except BaseException:
                # Stay paused (filesystem): the files are intact, a later resume retries.
                await asyncio.shield(self._delete_container(host))
                self._record(dataclasses.replace(sandbox, paused="filesystem"))
                raise
        finally:
            self._busy.discard(sid)
        return self._record(
            dataclasses.replace(
                sandbox, address=net.address, envd_url=envd_url, pid=state.pid or 0, paused=None
            )
        )

    # ---- snapshots -----------------------------------------------------------------------

    async def snapshot(self, sandbox_id: str, *, name: str) -> TemplateArtifact:
        """Publish template ``name`` from the sandbox's files (docs/pause.md).

        A running sandbox is frozen while its upper layer is copied (a consistent copy) and
        thawed after; memory is not captured. New sandboxes of ``name`` boot from it.
        """
        sandbox = self.get(sandbox_id)
        base = await self._templates.get(sandbox.template)
        if self._config.templates_dir is None:
            raise RuntimeFailedError("this node has no templates directory to publish into")
        frozen = False
        if sandbox.paused is None:
            await self._runtime.pause(sandbox.host_id)
            frozen = True
        try:
            return await snapshots.capture(
                sandbox.sandbox_dir / "upper", base, templates_dir=self._config.templates_dir,
                name=name,
            )  # fmt: skip
        finally:
            if frozen:
                await self._runtime.resume(sandbox.host_id)

    async def _find_state(self, host_id: str) -> RuntimeState | None:
        try:
            return await self._runtime.state(host_id)
        except NotFoundError:
            return None

    def _record(self, sandbox: RunningSandbox) -> RunningSandbox:
        _write_record(sandbox)
        self._running[sandbox.sandbox_id] = sandbox
        return sandbox

    def set_metadata(self, sandbox_id: str, metadata: Mapping[str, str]) -> RunningSandbox:
        """Replace the sandbox's live metadata (memory and ``sandbox.json``, atomically).

        The whole map, not a patch: the control plane computes it under its per-sandbox
        lock, so a retried call is harmless (ADR 0005). Raises
        :class:`SandboxNotFoundError` for a sandbox this node does not run.
        """
        current = self.get(sandbox_id)
        return self._record(dataclasses.replace(current, metadata=dict(metadata)))

    async def exec(
        self,
        sandbox_id: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: tuple[int, int] | None = None,
        timeout_s: float | None = None,
    ) -> ExecResult:
        """Run ``args`` in the running sandbox through the runtime (template build steps)."""
        sandbox = self.get(sandbox_id)
        return await self._runtime.exec(
            sandbox.host_id, args, env=env, cwd=cwd, user=user, timeout_s=timeout_s
        )

    def rootfs_path(self, sandbox_id: str) -> Path:
        """The host path where the running sandbox's root filesystem is mounted."""
        return self.get(sandbox_id).sandbox_dir / "rootfs"

    def list(self) -> list[RunningSandbox]:
        """The sandboxes this manager runs, oldest first."""
        return sorted(self._running.values(), key=lambda s: s.started_at)

    def get(self, sandbox_id: str) -> RunningSandbox:
        """The running sandbox; raise :class:`SandboxNotFoundError` if there is none."""
        try:
            return self._running[sandbox_id]
        except KeyError:
            raise SandboxNotFoundError(f"sandbox {sandbox_id} not found") from None

    def envd_log(self, sandbox_id: str, *, max_bytes: int = 4 * 1024 * 1024) -> list[EnvdLogEntry]:
        """The entries of a running sandbox's envd log (its last ``max_bytes``), oldest first.

        Raises :class:`SandboxNotFoundError` if it does not run here.
        """
        sandbox = self.get(sandbox_id)
        path = sandbox.sandbox_dir / _ENVD_LOG
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - max_bytes))
                data = f.read(max_bytes)
            base = (sandbox.sandbox_dir / "config.json").stat().st_mtime
        except OSError:
            return []
        if size > max_bytes:  # the first line is probably cut: drop it
            data = data.partition(b"\n")[2]
        return parse_envd_log(data.decode(errors="replace"), base_time=base)

    # ---- reconcile ----------------------------------------------------------------------

    async def reconcile(
        self, known_ids: Iterable[str], *, paused_ids: Iterable[str] = ()
    ) -> ReconcileReport:
        """Make the host agree with ``known_ids`` (the store's view), e.g. after a crash.

        Anything present (container, mount, network, directory) that belongs to no known
        id is destroyed, pool members left by a previous process included. A known id whose
        container runs with its record and network intact is adopted (under the host id
        its record names); any other known id is reported missing and its leftovers are
        removed. Ids being created and this process's own pool members are left alone.
        ``paused_ids`` (known too: paused, pausing or resuming in the store) are adopted
        as long as their files are there: running if their container runs, paused
        ``"full"`` if it is frozen, paused ``"filesystem"`` if it is gone (host restart).
        """
        paused_set = set(paused_ids)
        known = set(known_ids) | paused_set
        paused: dict[str, str] = {}
        attached = {a.sandbox_id: a for a in await self._networks.recover()}
        containers = set(await self._runtime.list())
        present = set(attached) | containers | self._dirs_and_mounts()
        present -= self._hosts_in_flight | {m.host_id for m in self._pool.idle()}
        owned: dict[str, list[str]] = {}
        for host in sorted(present):
            owned.setdefault(self._owner(host), []).append(host)

        async def destroy(host: str) -> None:
            await self._destroy(host, address=attached[host].address if host in attached else None)

        removed, missing, adopted = [], [], []
        for sid in sorted(set(owned) - known):
            if sid in self._busy:
                continue  # being created right now: not an orphan
            for host in owned[sid]:
                await destroy(host)
            self._running.pop(sid, None)
            removed.append(sid)
        for sid in sorted(known):
            if sid in self._busy:
                continue
            sandbox = None
            for host in owned.get(sid, []):
                if sandbox is None and sid in paused_set:
                    sandbox = await self._adoptable_paused(sid, host, attached=host in attached)
                    if sandbox is not None and sandbox.paused is not None:
                        paused[sid] = sandbox.paused
                elif sandbox is None:
                    sandbox = await self._adoptable(sid, host, attached=host in attached)
                if sandbox is None or sandbox.host_id != host:
                    await destroy(host)
            if sandbox is not None:
                self._running[sid] = sandbox
                adopted.append(sid)
            else:
                missing.append(sid)
                self._running.pop(sid, None)
        return ReconcileReport(removed=removed, missing=missing, adopted=adopted, paused=paused)

    def _owner(self, host_id: str) -> str:
        """The sandbox id a host id's record names (itself when there is no record)."""
        try:
            record = json.loads((self._config.sandboxes_dir / host_id / _RECORD).read_text())
            return str(record["sandbox_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return host_id

    async def _adoptable(
        self, sandbox_id: str, host_id: str, *, attached: bool
    ) -> RunningSandbox | None:
        sandbox_dir = self._config.sandboxes_dir / host_id
        try:
            record = json.loads((sandbox_dir / _RECORD).read_text())
            state = await self._runtime.state(host_id)
            sandbox = RunningSandbox.from_json(record, sandbox_dir=sandbox_dir)
        except (OSError, ValueError, KeyError, TypeError, NotFoundError):
            return None
        if not attached or state.status is not RuntimeStatus.RUNNING:
            return None
        if sandbox.sandbox_id != sandbox_id or sandbox.host_id != host_id:
            return None
        return sandbox

    async def _adoptable_paused(
        self, sandbox_id: str, host_id: str, *, attached: bool
    ) -> RunningSandbox | None:
        """A sandbox the store has paused (or half-way): what the host says it is now."""
        sandbox_dir = self._config.sandboxes_dir / host_id
        try:
            record = json.loads((sandbox_dir / _RECORD).read_text())
            sandbox = RunningSandbox.from_json(record, sandbox_dir=sandbox_dir)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if sandbox.sandbox_id != sandbox_id or sandbox.host_id != host_id:
            return None
        if not (sandbox_dir / "upper").is_dir():
            return None
        state = await self._find_state(host_id)
        status = state.status if state is not None else None
        if status is RuntimeStatus.RUNNING and attached:
            mode = None
        elif status is RuntimeStatus.PAUSED and attached:
            mode = "full"
        else:
            await self._delete_container(host_id)
            mode = "filesystem"
        return self._record(dataclasses.replace(sandbox, paused=mode))

    def _dirs_and_mounts(self) -> set[str]:
        root = self._config.sandboxes_dir
        ids = {p.relative_to(root).parts[0] for p in self._rootfs.mounted_under(root) if p != root}
        if root.is_dir():
            ids |= {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
        return ids


def _write_record(sandbox: RunningSandbox) -> None:
    """``sandbox.json``, replaced atomically (a crash leaves the old or the new one)."""
    path = sandbox.sandbox_dir / _RECORD
    tmp = path.with_name(f".{_RECORD}.tmp")
    tmp.write_text(sandbox.dumps())
    os.replace(tmp, path)


def _pool_key(
    template: TemplateArtifact, *, cpu: float | None, memory: int | None, allow_internet: bool
) -> PoolKey:
    """The pool key of a create: its effective resources, the template's by default."""
    return PoolKey(
        template=template.name,
        cpu_count=float(cpu if cpu is not None else template.cpu_count),
        memory_mb=int(memory if memory is not None else template.memory_mb),
        allow_internet=allow_internet,
    )


def _template_stamp(template: TemplateArtifact) -> str:
    """Changes when the template is rebuilt (publishing renames a new directory in)."""
    try:
        st = template.rootfs.stat()
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}"


def _init_body(
    request: SandboxRequest, sandbox: RunningSandbox, template: TemplateArtifact
) -> dict[str, object]:
    return lifecycle.init_body(
        # The template's env (an image's Env) under the request's: processes envd starts
        # see both, as `docker exec` sees the image's.
        env_vars={**template.env, **request.env_vars},
        access_token=request.access_token,
        default_user=sandbox.default_user,
        workdir=sandbox.workdir,
        timestamp=time.time(),
    )


def _destroy_step(manager: SandboxManager, member: RunningSandbox) -> Undo:
    async def run() -> None:
        await manager._destroy(member.host_id, address=member.address)

    return run


def _async(fn: Callable[[], object]) -> Undo:
    async def run() -> None:
        fn()

    return run


async def _unwind(undo: list[Undo], *, sandbox_id: str) -> None:
    """Run the undo stack in reverse; one failing step must not keep the others from running.

    Shielded so that a cancelled create still cleans up what it made.
    """

    async def run_all() -> None:
        for step in reversed(undo):
            try:
                await step()
            except (HutchError, OSError):
                log.exception("rollback of sandbox %s: a step failed", sandbox_id)

    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(run_all())


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:] or "(no output)"
    except OSError:
        return "(no output)"
