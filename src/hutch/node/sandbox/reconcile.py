"""Reconcile: make the host agree with the store's view of this node's sandboxes.

A function over the manager's :class:`SandboxHost`; ``SandboxManager.reconcile`` calls it
with the warm pool's own host ids, which it leaves alone.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Set

from hutch.node.runtime.base import RuntimeStatus
from hutch.node.sandbox.host import SandboxHost
from hutch.node.sandbox.models import ReconcileReport, RunningSandbox
from hutch.node.sandbox.records import RECORD
from hutch.shared.errors import HutchError, NotFoundError


async def reconcile(
    host: SandboxHost,
    known_ids: Iterable[str],
    *,
    paused_ids: Iterable[str] = (),
    pool_hosts: Callable[[], Set[str]] = frozenset,
) -> ReconcileReport:
    """Make the host agree with ``known_ids`` (the store's view), e.g. after a crash.

    Anything present (container, mount, network, directory) that belongs to no known
    id is destroyed, pool members left by a previous process included. A known id whose
    container runs with its record and network intact is adopted (under the host id
    its record names); any other known id is reported missing and its leftovers are
    removed. Ids being created and this process's own pool members (``pool_hosts()``,
    asked once the host was listed) are left alone. ``paused_ids`` (known too: paused,
    pausing or resuming in the store) are adopted as long as their files are there:
    running if their container runs, paused ``"full"`` if it is frozen, paused
    ``"filesystem"`` if it is gone (host restart).
    """
    paused_set = set(paused_ids)
    known = set(known_ids) | paused_set
    paused: dict[str, str] = {}
    attached = {a.sandbox_id: a for a in await host.networks.recover()}
    containers = set(await host.runtime.list())
    present = set(attached) | containers | _dirs_and_mounts(host)
    present -= pool_hosts()
    owned: dict[str, list[str]] = {}
    for host_id in sorted(present):
        owned.setdefault(_owner(host, host_id), []).append(host_id)

    async def destroy(host_id: str) -> None:
        address = attached[host_id].address if host_id in attached else None
        await host.destroy(host_id, address=address)

    removed, missing, adopted = [], [], []
    for sid in sorted(set(owned) - known):
        if sid in host.busy:
            continue  # being created right now: not an orphan
        for host_id in owned[sid]:
            await destroy(host_id)
        host.running.pop(sid, None)
        removed.append(sid)
    for sid in sorted(known):
        if sid in host.busy:
            continue
        sandbox = None
        for host_id in owned.get(sid, []):
            if sandbox is None and sid in paused_set:
                sandbox = await _adoptable_paused(host, sid, host_id, attached=host_id in attached)
                if sandbox is not None and sandbox.paused is not None:
                    paused[sid] = sandbox.paused
            elif sandbox is None:
                sandbox = await _adoptable(host, sid, host_id, attached=host_id in attached)
            if sandbox is None or sandbox.host_id != host_id:
                await destroy(host_id)
        if sandbox is not None:
            if sandbox.host_id in attached:
                # Its policy again: a node of an older version had none in nft, and a
                # restart must never leave a sandbox with more egress than it was given.
                await host.networks.apply_policy(sandbox.address, sandbox.egress)
            host.running[sid] = sandbox
            adopted.append(sid)
        else:
            missing.append(sid)
            host.running.pop(sid, None)
    return ReconcileReport(removed=removed, missing=missing, adopted=adopted, paused=paused)


def _owner(host: SandboxHost, host_id: str) -> str:
    """The sandbox id a host id's record names (itself when there is no record)."""
    try:
        record = json.loads((host.config.sandboxes_dir / host_id / RECORD).read_text())
        return str(record["sandbox_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return host_id


async def _adoptable(
    host: SandboxHost, sandbox_id: str, host_id: str, *, attached: bool
) -> RunningSandbox | None:
    sandbox_dir = host.config.sandboxes_dir / host_id
    try:
        record = json.loads((sandbox_dir / RECORD).read_text())
        state = await host.runtime.state(host_id)
        sandbox = RunningSandbox.from_json(record, sandbox_dir=sandbox_dir)
    except (OSError, ValueError, KeyError, TypeError, NotFoundError):
        return None
    if not attached or state.status is not RuntimeStatus.RUNNING:
        return None
    if sandbox.sandbox_id != sandbox_id or sandbox.host_id != host_id:
        return None
    return sandbox


async def _adoptable_paused(
    host: SandboxHost, sandbox_id: str, host_id: str, *, attached: bool
) -> RunningSandbox | None:
    """A sandbox the store has paused (or half-way): what the host says it is now."""
    sandbox_dir = host.config.sandboxes_dir / host_id
    try:
        record = json.loads((sandbox_dir / RECORD).read_text())
        sandbox = RunningSandbox.from_json(record, sandbox_dir=sandbox_dir)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if sandbox.sandbox_id != sandbox_id or sandbox.host_id != host_id:
        return None
    try:
        host.rootfs.reattach(sandbox_dir)  # its disk is unmounted after a host restart
    except (OSError, HutchError):
        return None
    if not host.rootfs.upper(sandbox_dir).is_dir():
        return None
    state = await host.find_state(host_id)
    status = state.status if state is not None else None
    if status is RuntimeStatus.RUNNING and attached:
        mode = None
    elif status is RuntimeStatus.PAUSED and attached:
        mode = "full"
    else:
        await host.delete_container(host_id)
        mode = "filesystem"
    return host.record(dataclasses.replace(sandbox, paused=mode))


def _dirs_and_mounts(host: SandboxHost) -> set[str]:
    root = host.config.sandboxes_dir
    ids = {p.relative_to(root).parts[0] for p in host.rootfs.mounted_under(root) if p != root}
    if root.is_dir():
        ids |= {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    return ids
