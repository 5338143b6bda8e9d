"""Pause, resume (thaw or boot again from the kept files) and snapshot (ADR 0004).

Functions over the manager's :class:`SandboxHost`; ``SandboxManager.pause``, ``resume``
and ``snapshot`` call them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path

from hutch.node.bundle import write_bundle
from hutch.node.runtime.base import RuntimeFailedError, RuntimeStatus
from hutch.node.sandbox import lifecycle
from hutch.node.sandbox.host import SandboxHost
from hutch.node.sandbox.models import RunningSandbox
from hutch.node.templates import snapshot as snapshots
from hutch.node.templates.artifact import TemplateArtifact
from hutch.shared.errors import AlreadyExistsError
from hutch.shared.paths import ENVD_PORT


async def pause(host: SandboxHost, sandbox_id: str, *, keep_memory: bool = True) -> RunningSandbox:
    """Pause a running sandbox (ADR 0004); a paused one is returned as it is.

    ``keep_memory``: freeze every process (``runc pause``: the cgroup freezer; memory
    and processes stay, ``paused="full"``). Otherwise the container is deleted and only
    the filesystem (upper layer, still mounted) and the network are kept
    (``paused="filesystem"``); resuming then boots it again.
    """
    sandbox = host.get(sandbox_id)
    if sandbox.paused is not None:
        return sandbox
    if keep_memory:
        await host.runtime.pause(sandbox.host_id, pid=sandbox.pid)
        mode = "full"
    else:
        await host.delete_container(sandbox.host_id)
        mode = "filesystem"
        sandbox = dataclasses.replace(sandbox, envd_pid=0)  # gone with its container
    return host.record(dataclasses.replace(sandbox, paused=mode))


async def resume(
    host: SandboxHost,
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
    sandbox = host.get(sandbox_id)
    if sandbox.paused is None:
        return sandbox, True
    if keep_memory and sandbox.paused == "full":
        state = await host.find_state(sandbox.host_id)
        if state is not None and state.status is RuntimeStatus.PAUSED:
            await host.runtime.resume(sandbox.host_id, pid=state.pid)
            return host.record(dataclasses.replace(sandbox, paused=None)), True
    rebooted = await reboot(host, sandbox, env_vars=env_vars or {}, access_token=access_token)
    return rebooted, False


async def reboot(
    host: SandboxHost,
    sandbox: RunningSandbox,
    *,
    env_vars: Mapping[str, str],
    access_token: str | None,
) -> RunningSandbox:
    """Boot a paused sandbox again from its files: new container, network, boot id.

    Host objects keep the sandbox's host id (a pool member's stay ``pool-*``); the
    hostname and ``/etc`` files say the sandbox id.
    """
    sid, host_id, sandbox_dir, cfg = (
        sandbox.sandbox_id, sandbox.host_id, sandbox.sandbox_dir, host.config
    )  # fmt: skip
    template = await host.templates.get(sandbox.template)
    if sid in host.busy:
        raise AlreadyExistsError(f"sandbox {sid} is being created or killed")
    host.busy.add(sid)
    try:
        await host.delete_container(host_id)
        # The old network may be gone (host restart): make a fresh one either way.
        await host.networks.teardown(host_id, address=sandbox.address)
        net = await host.networks.setup(
            host_id, allow_internet=sandbox.allow_internet, policy=sandbox.egress
        )
        await asyncio.to_thread(host.rootfs.reattach, sandbox_dir)  # gone after a host restart
        lifecycle.write_etc_files(
            host.rootfs.upper(sandbox_dir), sandbox_id=sid, address=net.address,
            dns_servers=cfg.dns_servers,
        )  # fmt: skip
        rootfs = sandbox_dir / "rootfs"
        if rootfs not in host.rootfs.mounted_under(sandbox_dir):
            rootfs = host.rootfs.mount(sandbox_dir, lower=template.lowers)
        forked = host.forks_envd(template)
        spec = lifecycle.sandbox_spec(
            sandbox_id=host_id, rootfs=rootfs, template=template, cpu_count=sandbox.cpu_count,
            memory_mb=sandbox.memory_mb, netns_path=Path(net.netns_path), config=cfg,
            volume_mounts=sandbox.volume_mounts, proc_views=await host.proc_views(),
            envd_forked=forked,
        )  # fmt: skip
        write_bundle(sandbox_dir, lifecycle.oci_config(spec, config=cfg))
        try:
            init_pid, envd_pid = await host.create_and_start(
                host_id, sandbox_dir,
                fork=(lambda pid: host.fork_envd(host_id, sandbox_dir, init_pid=pid,
                                                 template=template))
                if forked else None,
            )  # fmt: skip
            if host_id != sid:
                await host.runtime.set_hostname(host_id, sid)
            envd_url = f"http://{net.address}:{ENVD_PORT}"
            await host.wait_healthy(host_id, envd_url, sandbox_dir=sandbox_dir)
            await host.envd.init(
                envd_url,
                lifecycle.init_body(
                    env_vars=env_vars, access_token=access_token,
                    default_user=sandbox.default_user, workdir=sandbox.workdir,
                    timestamp=time.time(),
                ),
            )  # fmt: skip
        except BaseException:
            # Stay paused (filesystem): the files are intact, a later resume retries.
            await asyncio.shield(host.delete_container(host_id))
            host.record(dataclasses.replace(sandbox, paused="filesystem", envd_pid=0))
            raise
    finally:
        host.busy.discard(sid)
    return host.record(
        dataclasses.replace(
            sandbox,
            address=net.address,
            envd_url=envd_url,
            pid=init_pid,
            paused=None,
            envd_pid=envd_pid,
        )
    )


async def snapshot(host: SandboxHost, sandbox_id: str, *, name: str) -> TemplateArtifact:
    """Publish template ``name`` from the sandbox's files (docs/pause.md).

    A running sandbox is frozen while its upper layer is copied (a consistent copy) and
    thawed after; memory is not captured. New sandboxes of ``name`` boot from it.
    """
    sandbox = host.get(sandbox_id)
    base = await host.templates.get(sandbox.template)
    if host.config.templates_dir is None:
        raise RuntimeFailedError("this node has no templates directory to publish into")
    frozen = False
    if sandbox.paused is None:
        await host.runtime.pause(sandbox.host_id, pid=sandbox.pid)
        frozen = True
    try:
        return await snapshots.capture(
            host.rootfs.upper(sandbox.sandbox_dir), base, templates_dir=host.config.templates_dir,
            name=name,
        )  # fmt: skip
    finally:
        if frozen:
            await host.runtime.resume(sandbox.host_id, pid=sandbox.pid)
