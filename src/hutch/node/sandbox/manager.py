"""``SandboxManager``: create, kill, list and reconcile the sandboxes of one node.

Create is one ordered flow, and every step that leaves something on the host pushes its
undo onto a stack (``undo.py``), so a failure anywhere (or a cancellation) unwinds exactly
what was done::

    sandbox dir -> network (netns, veth, address) -> disk (ext4 image, ADR 0023)
    -> /etc files in the upper layer -> overlay rootfs -> config.json
    -> runtime create + start -> envd /health -> envd /init

Boot (everything up to a healthy envd, ``host.py``) and personalisation (``/init``: env
vars, access token, user, workdir) are separate, so the warm pool (ADR 0011,
``pool_keeper.py`` over ``pool.py``) boots sandboxes ahead of demand and a create whose
:class:`PoolKey` matches takes one. The manager is the public face; its collaborators:

- ``host.py``: :class:`SandboxHost`, the adapters, running sandboxes and busy ids, boot and
  destroy (shared by all below);
- ``pool_keeper.py``: :class:`PoolKeeper`, the warm pool's refill and hand-over;
- ``pausing.py``: pause, resume (thaw or boot again), snapshot;
- ``reconcile.py``: the host made to agree with the store after a restart;
- ``records.py`` (``sandbox.json``, ``envd.log``) and ``undo.py`` (the undo stack).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Address
from pathlib import Path

from hutch.node import lxcfs, metrics
from hutch.node.bundle import validate_sandbox_id
from hutch.node.runtime.base import ExecResult, Runtime
from hutch.node.sandbox import pausing
from hutch.node.sandbox import reconcile as reconciling
from hutch.node.sandbox.envd_fork import EnvdZygote
from hutch.node.sandbox.envd_log import EnvdLogEntry, parse_envd_log
from hutch.node.sandbox.host import SandboxHost, init_body
from hutch.node.sandbox.models import (
    ManagerConfig,
    ReconcileReport,
    RunningSandbox,
    SandboxRequest,
)
from hutch.node.sandbox.pool import is_pool_id
from hutch.node.sandbox.pool_keeper import PoolKeeper
from hutch.node.sandbox.ports import EnvdClient, NodeNetworks, RootfsLayer, TemplateStore
from hutch.node.sandbox.records import ENVD_LOG, write_record
from hutch.node.sandbox.undo import Undo, unwind
from hutch.node.templates.artifact import TemplateArtifact
from hutch.shared.egress import EgressPolicy
from hutch.shared.errors import AlreadyExistsError, ResourceExhaustedError

log = logging.getLogger("hutch.node.sandbox")


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
        zygote: EnvdZygote | None = None,
    ) -> None:
        self._config = config
        self._runtime = runtime
        self._host = SandboxHost(
            config=config, runtime=runtime, networks=networks, rootfs=rootfs,
            templates=templates, envd=envd, zygote=zygote,
        )  # fmt: skip
        self._pool = PoolKeeper(self._host)

    @property
    def config(self) -> ManagerConfig:
        """The node-level facts this manager was built with."""
        return self._config

    async def start(self) -> None:
        """Prepare the host (bridge, firewall, directories). Call once before anything else."""
        self._config.sandboxes_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        await self._host.networks.ensure_bridge()
        if self._config.lxcfs_dir is not None:  # the host's one, started if none runs
            await asyncio.to_thread(
                lxcfs.ensure_running, self._config.lxcfs_dir,
                pidfile=Path("/run/lxcfs.pid"),
            )  # fmt: skip
        if self._host.zygote is not None:  # envd forked into runc sandboxes (ADR 0032)
            await self._host.zygote.start()

    @property
    def zygote(self) -> EnvdZygote | None:
        """The node's envd zygote, when ``HUTCH_NODE_ENVD_ZYGOTE`` is on (runc)."""
        return self._host.zygote

    async def aclose(self) -> None:
        """Stop the zygote and the envd watches (node stop: sandboxes keep running and
        the next start's reconcile watches their envds again)."""
        await self._host.watches.aclose()
        if self._host.zygote is not None:
            await self._host.zygote.aclose()

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
        template = request.artifact or await self._host.templates.get(request.template)
        self._host.disk_mb(request, template)  # above the node's limit: 400 before anything
        self._claim(sandbox_id)
        try:
            # Pool members booted without bind mounts: a create with volumes boots cold;
            # a build sandbox (an explicit artifact) never takes one either. Every create
            # that could take one counts as the pool's demand (ADR 0038).
            with self._pool.counting(request, template=template):
                sandbox = (
                    None
                    if request.volume_mounts or request.artifact is not None
                    else await self._pool.from_pool(request, template=template)
                )
                if sandbox is None:
                    sandbox = await self._create_cold(request, template=template)
        finally:
            self._host.busy.discard(sandbox_id)
        self._host.running[sandbox_id] = sandbox
        log.info("sandbox %s running at %s (host id %s)", sandbox_id, sandbox.address,
                 sandbox.host_id)  # fmt: skip
        return sandbox

    async def _create_cold(
        self, request: SandboxRequest, *, template: TemplateArtifact
    ) -> RunningSandbox:
        undo: list[Undo] = []
        try:
            sandbox = await self._host.boot(request, template=template, undo=undo)
            phases = metrics.BootPhases()
            await self._host.envd.init(sandbox.envd_url, init_body(request, sandbox, template))
            phases.mark("envd_init")
            sandbox = dataclasses.replace(sandbox, metadata=dict(request.metadata))
            write_record(sandbox)
            phases.mark("record")
        except BaseException:
            await unwind(undo, sandbox_id=request.sandbox_id)
            raise
        return sandbox

    def _claim(self, sandbox_id: str) -> None:
        host = self._host
        if sandbox_id in host.running or sandbox_id in host.busy:
            raise AlreadyExistsError(f"sandbox {sandbox_id} already exists on this node")
        if len(host.running) + len(host.busy) >= self._config.max_sandboxes:
            raise ResourceExhaustedError(
                f"node runs {self._config.max_sandboxes} sandboxes already",
                public_message="this node runs as many sandboxes as it is allowed to",
            )
        host.busy.add(sandbox_id)

    # ---- the warm pool (ADR 0011, pool_keeper.py) ----------------------------------------

    async def start_pool(self) -> None:
        """Start keeping ``config.pool_sizes`` members per template; call after reconcile.

        Members boot one at a time in the background, so refills never take both cores
        from user creates. The templates are looked at again on every pass (and at least
        every ``pool_recheck_s``): one built after the start gets its pool then, and
        members of a template rebuilt since they booted are replaced.
        """
        await self._pool.start_pool()

    async def stop_pool(self) -> None:
        """Stop refilling and destroy every idle member (shutdown). Idempotent."""
        await self._pool.stop_pool()

    def pool_members(self) -> list[RunningSandbox]:
        """The idle members (for tests and metrics)."""
        return self._pool.pool_members()

    def pool_targets(self) -> dict[str, int]:
        """Members wanted per template now: its floor raised by recent demand (ADR 0038)."""
        return self._pool.pool_targets()

    # ---- kill, list ---------------------------------------------------------------------

    async def kill(self, sandbox_id: str) -> bool:
        """Remove everything of ``sandbox_id``; True if anything was there. Idempotent."""
        validate_sandbox_id(sandbox_id)
        if is_pool_id(sandbox_id):
            return False  # pool members are the node's own, never a user's sandbox
        host = self._host
        if sandbox_id in host.busy:
            raise AlreadyExistsError(f"sandbox {sandbox_id} is being created or killed")
        host.busy.add(sandbox_id)
        try:
            known = host.running.get(sandbox_id)
            host_id = known.host_id if known else sandbox_id
            found = await host.destroy(host_id, address=known.address if known else None)
        finally:
            host.busy.discard(sandbox_id)
            host.running.pop(sandbox_id, None)
            self._pool.wake()  # room for the pool again
        return found or known is not None

    # ---- pause, resume, snapshots (pausing.py) ------------------------------------------

    async def pause(self, sandbox_id: str, *, keep_memory: bool = True) -> RunningSandbox:
        """Pause a running sandbox (ADR 0004); a paused one is returned as it is.

        ``keep_memory``: freeze every process (``runc pause``: the cgroup freezer; memory
        and processes stay, ``paused="full"``). Otherwise the container is deleted and only
        the filesystem (upper layer, still mounted) and the network are kept
        (``paused="filesystem"``); resuming then boots it again.
        """
        return await pausing.pause(self._host, sandbox_id, keep_memory=keep_memory)

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
        return await pausing.resume(
            self._host, sandbox_id, keep_memory=keep_memory, env_vars=env_vars,
            access_token=access_token,
        )  # fmt: skip

    async def snapshot(self, sandbox_id: str, *, name: str) -> TemplateArtifact:
        """Publish template ``name`` from the sandbox's files (docs/pause.md).

        A running sandbox is frozen while its upper layer is copied (a consistent copy) and
        thawed after; memory is not captured. New sandboxes of ``name`` boot from it.
        """
        return await pausing.snapshot(self._host, sandbox_id, name=name)

    def set_metadata(self, sandbox_id: str, metadata: Mapping[str, str]) -> RunningSandbox:
        """Replace the sandbox's live metadata (memory and ``sandbox.json``, atomically).

        The whole map, not a patch: the control plane computes it under its per-sandbox
        lock, so a retried call is harmless (ADR 0005). Raises
        :class:`SandboxNotFoundError` for a sandbox this node does not run.
        """
        current = self.get(sandbox_id)
        return self._host.record(dataclasses.replace(current, metadata=dict(metadata)))

    async def set_network(self, sandbox_id: str, policy: EgressPolicy) -> RunningSandbox:
        """Replace the sandbox's egress policy: its nft chains at once, then its record.

        New connections meet the new policy; open ones keep going (docs/network.md).
        """
        current = self.get(sandbox_id)
        await self._host.networks.apply_policy(current.address, policy)
        return self._host.record(
            dataclasses.replace(current, egress=policy, allow_internet=not policy.blocks_all)
        )

    def by_address(self, address: IPv4Address) -> RunningSandbox | None:
        """The sandbox at ``address`` (the egress filter's lookup), or None."""
        for sandbox in self._host.running.values():
            if sandbox.address == address:
                return sandbox
        return None

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
        return sorted(self._host.running.values(), key=lambda s: s.started_at)

    def get(self, sandbox_id: str) -> RunningSandbox:
        """The running sandbox; raise :class:`SandboxNotFoundError` if there is none."""
        return self._host.get(sandbox_id)

    def envd_log(self, sandbox_id: str, *, max_bytes: int = 4 * 1024 * 1024) -> list[EnvdLogEntry]:
        """The entries of a running sandbox's envd log (its last ``max_bytes``), oldest first.

        Raises :class:`SandboxNotFoundError` if it does not run here.
        """
        sandbox = self.get(sandbox_id)
        path = sandbox.sandbox_dir / ENVD_LOG
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

    # ---- reconcile (reconcile.py) ---------------------------------------------------------

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
        report = await reconciling.reconcile(
            self._host, known_ids, paused_ids=paused_ids, pool_hosts=self._pool.host_ids
        )
        for sid in report.adopted:  # forked envds: watched again (ADR 0032 addendum)
            if (sandbox := self._host.running.get(sid)) is not None:
                self._host.rearm(sandbox)
        return report
