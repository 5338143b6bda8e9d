"""Volumes as the control plane runs them: create/list/get/delete, content tokens, and the
content operations behind the volume token (docs/volumes.md).

* Names are ``^[a-zA-Z0-9_-]+$`` (E2B's pattern), unique within a team, and never shaped
  like a volume id, so that ``/volumes/{idOrName}`` is unambiguous.
* Quota: ``sizeMB`` in the create body (hutch's addition; the SDK sends none and gets the
  configured default, 1 GiB). It must be positive and fit what the backend can hold now.
* Tokens: ``<volumeID>.<expiry unix s>.<HMAC-SHA256(volume secret, "<volumeID>.<expiry>")>``.
  Every ``GET /volumes/{id}`` issues a fresh one. A token is checked against the volume in
  the URL: a token of another volume (of another team) is 404, a bad signature or an
  expired token 401. Deleting the volume (its secret) revokes all of its tokens.
* Mounts: ``volumeMounts`` of a sandbox create name volumes of the caller's team (by name
  or id) and absolute paths (no ``..``, not ``/``, not under ``/proc``, ``/sys``, ``/dev``
  or ``/.hutch``, each path once, none inside another). They are recorded with the sandbox
  before the node mounts anything, so a volume ``DELETE`` sees them: 409 naming the
  sandboxes, or with ``force`` those sandboxes are killed first.
* Where the data is (ADR 0034): a ``local`` volume's ext4 image is on one node, chosen at
  create (``VolumeHosts.choose``: the ready node with the most free disk) and recorded in
  ``volumes.node_id``; every call about it (create, delete, usage, the content API) goes to
  that node (``VolumeHosts.on``: the node API's ``/v1/volumes`` in a cluster and in ``hutch
  serve``). Its node lost or not answering: 503 ``volume_node_unavailable`` naming the
  volume and the node, and nothing changes (a delete keeps the row, to be retried). Other
  backends (S3) have no node: the api serves them itself.
* Create order: row first (the name's uniqueness is the store's), then the backend; the row
  is removed again if the backend fails. Delete: backend first, then the row.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import re
import secrets
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Protocol, TypeVar

from hutch.api.models import Team, Volume, VolumeMount
from hutch.api.service.ports import VolumeMountSpec
from hutch.api.service.quotas import QuotaService
from hutch.api.store.base import Clock, VolumeStore, utc_now
from hutch.shared.errors import (
    ConflictError,
    HutchError,
    InvalidArgumentError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
)
from hutch.shared.ids import NodeID, SandboxID, TeamID, is_volume_id, new_volume_id
from hutch.volumes.base import EntryStat, FileContent, Owner, Usage, VolumeBackend, normalize_path

MIB: Final = 1 << 20
_T = TypeVar("_T")
_NAME_RE: Final = re.compile(r"^[a-zA-Z0-9_-]{1,255}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumePolicy:
    """The configurable parts: default quota, token lifetime, which backend new volumes use."""

    default_size_mb: int = 1024
    token_ttl_s: int = 7 * 86_400
    backend: str = "local"


def check_volume_name(name: object) -> str:
    """A valid volume name, or ``InvalidArgumentError`` saying why."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidArgumentError(
            f"name {name!r}: a volume name is 1-255 characters of letters, digits, '_' and '-'"
        )
    if is_volume_id(name):
        raise InvalidArgumentError(f"name {name!r}: has the shape of a volume id")
    return name


#: Where no volume may be mounted (the runtime's own mounts, envd's bundle).
_RESERVED_MOUNT_ROOTS: Final = ("/proc", "/sys", "/dev", "/.hutch")
_MAX_MOUNTS: Final = 16

#: Kills one sandbox of a team (``SandboxService.kill_sandbox``), for ``DELETE ?force``.
KillSandbox = Callable[[TeamID, SandboxID], Awaitable[object]]


def check_mount_path(path: str) -> str:
    """A normalised absolute mount path, or ``InvalidArgumentError`` naming it."""
    if not path.startswith("/") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise InvalidArgumentError(f"volumeMounts: path {path!r} must be absolute and printable")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgumentError(f"volumeMounts: path {path!r} may not contain '..'")
    if not parts:
        raise InvalidArgumentError("volumeMounts: a volume cannot be mounted at /")
    norm = "/" + "/".join(parts)
    if len(norm) > 1024:
        raise InvalidArgumentError("volumeMounts: path is longer than 1024 characters")
    for root in _RESERVED_MOUNT_ROOTS:
        if norm == root or norm.startswith(root + "/"):
            raise InvalidArgumentError(f"volumeMounts: path {path!r} is reserved")
    return norm


class VolumeHosts(Protocol):
    """Where ``local`` volumes live: a node each (ADR 0034)."""

    async def choose(self, *, quota_bytes: int) -> NodeID:
        """The node a new volume of ``quota_bytes`` goes to (``UnavailableError``: none)."""
        ...

    async def on(self, node_id: NodeID) -> VolumeBackend:
        """The local volumes of ``node_id`` (``UnavailableError``: lost or unreachable)."""
        ...


def _node_unavailable(volume: Volume, node_id: str | None, exc: HutchError) -> UnavailableError:
    """The 503 of a call about a local volume whose node cannot answer it."""
    return UnavailableError(
        f"volume {volume.name} ({volume.id}) lives on node {node_id}, which cannot be "
        f"reached: {exc.message}",
        public_message=f"Volume '{volume.name}' ({volume.id}) lives on node {node_id}, "
        f"which is unavailable right now ({exc.public_message}); retry later",
        error_code="volume_node_unavailable",
    )


def _sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


class VolumeService:
    """The volumes of every team, over a store and one or more backends."""

    def __init__(
        self,
        *,
        volumes: VolumeStore,
        backends: Mapping[str, VolumeBackend],
        policy: VolumePolicy,
        clock: Clock = utc_now,
        kill_sandbox: KillSandbox | None = None,
        hosts: VolumeHosts | None = None,
    ) -> None:
        self._kill_sandbox = kill_sandbox
        #: Where local volumes live (None: only the ``backends`` given, no nodes).
        self._hosts = hosts
        self._store = volumes
        #: The team quotas (``maxVolumeBytes``), set by ``app.py``; None: no check.
        self.quotas: QuotaService | None = None
        self._backends = dict(backends)
        self._policy = policy
        self._clock = clock
        if not self._on_nodes(policy.backend) and policy.backend not in self._backends:
            raise ValueError(f"volume backend {policy.backend!r} is not configured")

    def _on_nodes(self, backend: str) -> bool:
        return backend == "local" and self._hosts is not None

    def backend_for(self, volume: Volume) -> VolumeBackend:
        """The api's own backend of ``volume`` (one without a node: S3)."""
        try:
            return self._backends[volume.backend]
        except KeyError:
            raise HutchError(
                f"volume {volume.id}: backend {volume.backend!r} not configured"
            ) from None

    async def _node_of(self, volume: Volume) -> NodeID:
        if volume.node_id is not None:
            return NodeID(volume.node_id)
        # Made before volumes lived on nodes (``hutch serve``'s api and node shared the
        # directory): adopted by the node a new volume would go to, its one node in serve.
        assert self._hosts is not None
        chosen = await self._hosts.choose(quota_bytes=volume.quota_bytes)
        return await self._store.claim_volume_node(volume.id, chosen)

    async def _backend(self, volume: Volume) -> tuple[VolumeBackend, NodeID | None]:
        if not self._on_nodes(volume.backend):
            return self.backend_for(volume), None
        assert self._hosts is not None
        node_id = await self._node_of(volume)
        try:
            return await self._hosts.on(node_id), node_id
        except (UnavailableError, NotFoundError) as exc:
            raise _node_unavailable(volume, node_id, exc) from exc

    async def _on(self, volume: Volume, call: Callable[[VolumeBackend], Awaitable[_T]]) -> _T:
        """``call`` with the volume's backend; its node not answering is the 503."""
        backend, node_id = await self._backend(volume)
        if node_id is None:
            return await call(backend)
        try:
            return await call(backend)
        except UnavailableError as exc:
            if exc.error_code:  # the node's own, precise answer
                raise
            raise _node_unavailable(volume, node_id, exc) from exc

    # -- tokens ------------------------------------------------------------------------

    def issue_token(self, volume: Volume) -> str:
        """A fresh content token for ``volume``, valid for the policy's lifetime."""
        expiry = int((self._clock() + timedelta(seconds=self._policy.token_ttl_s)).timestamp())
        payload = f"{volume.id}.{expiry}"
        return f"{payload}.{_sign(volume.token_secret, payload)}"

    async def authorize_content(self, volume_id: str, authorization: str | None) -> Volume:
        """The volume in the URL if ``authorization`` (``Bearer <token>``) grants it."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise UnauthenticatedError(
                "missing volume token",
                public_message="Missing volume token: send Authorization: Bearer <token>",
            )
        parts = token.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            raise UnauthenticatedError(
                "malformed volume token", public_message="Invalid volume token"
            )
        token_vid, expiry, sig = parts
        if token_vid != volume_id or not is_volume_id(volume_id):
            # A token of another volume (of this or another team) says nothing about this one.
            raise NotFoundError(
                f"token of {token_vid} used for {volume_id}",
                public_message=f"Volume {volume_id} not found",
            )
        volume = await self._store.find_volume(volume_id, team_id=None)
        if volume is None:
            raise NotFoundError(
                f"volume {volume_id} not found", public_message=f"Volume {volume_id} not found"
            )
        if not hmac.compare_digest(sig, _sign(volume.token_secret, f"{token_vid}.{expiry}")):
            raise UnauthenticatedError(
                "bad volume token signature", public_message="Invalid volume token"
            )
        if int(expiry) <= int(self._clock().timestamp()):
            raise UnauthenticatedError(
                "expired volume token", public_message="Volume token expired"
            )
        return volume

    # -- control plane -----------------------------------------------------------------

    async def create(self, *, team: Team, name: object, size_mb: object = None) -> Volume:
        """A new, empty volume of ``size_mb`` MiB (the default when ``None``)."""
        name = check_volume_name(name)
        if size_mb is None:
            size_mb = self._policy.default_size_mb
        if isinstance(size_mb, bool) or not isinstance(size_mb, int) or size_mb <= 0:
            raise InvalidArgumentError(f"sizeMB {size_mb!r}: must be a positive integer")
        quota = size_mb * MIB
        # maxVolumeBytes: reserved by the store in the insert's transaction.
        limit = None if self.quotas is None else await self.quotas.volume_limit(team.id)
        node_id: NodeID | None = None
        if self._on_nodes(self._policy.backend):
            assert self._hosts is not None
            node_id = await self._hosts.choose(quota_bytes=quota)
            try:
                backend = await self._hosts.on(node_id)
                capacity = await backend.capacity_bytes()
            except (UnavailableError, NotFoundError) as exc:
                raise UnavailableError(
                    f"node {node_id}, chosen for a new volume, cannot be reached: {exc.message}",
                    public_message=f"The node chosen for the volume ({node_id}) is unavailable "
                    "right now; retry",
                    error_code="volume_node_unavailable",
                ) from exc
        else:
            backend = self._backends[self._policy.backend]
            capacity = await backend.capacity_bytes()
        if quota > capacity:
            raise InvalidArgumentError(
                f"sizeMB {size_mb}: more than this node can hold ({capacity // MIB} MiB free)"
            )
        volume = await self._store.create_volume(
            volume_id=new_volume_id(),
            team_id=team.id,
            name=name,
            quota_bytes=quota,
            backend=self._policy.backend,
            token_secret=secrets.token_hex(32),
            max_total_bytes=limit,
            node_id=node_id,
        )
        try:
            await backend.create(volume.id, quota_bytes=quota)
        except BaseException:
            await self._store.delete_volume(volume.id, team_id=team.id)
            raise
        return volume

    async def list(self, *, team_id: TeamID) -> list[Volume]:
        return await self._store.list_volumes(team_id=team_id)

    async def get(self, *, team_id: TeamID, id_or_name: str) -> Volume:
        return await self._store.get_volume(id_or_name, team_id=team_id)

    async def usage(self, volume: Volume) -> Usage:
        return await self._on(volume, lambda b: b.usage(volume.id))

    async def usage_if_reachable(self, volume: Volume) -> Usage | None:
        """:meth:`usage`, or None while the volume's node is unavailable (``GET
        /volumes/{id}`` still answers, with a token; its content calls are the 503)."""
        try:
            return await self.usage(volume)
        except UnavailableError as exc:
            if exc.error_code != "volume_node_unavailable":
                raise
            return None

    async def delete(self, *, team_id: TeamID, id_or_name: str, force: bool = False) -> Volume:
        """Delete the volume and its data. Mounted by live sandboxes: 409 naming them, or
        with ``force``, kill them first."""
        volume = await self._store.get_volume(id_or_name, team_id=team_id)
        mounting = await self._store.mounting_sandboxes(volume.id)
        if mounting and not force:
            raise ConflictError(
                f"volume {volume.id} is mounted by {', '.join(mounting)}",
                public_message=f"Volume '{volume.name}' is mounted by running sandboxes: "
                f"{', '.join(mounting)}; kill them first or delete with force=true",
            )
        # Its node first: unavailable, nothing is killed and the row stays (503, retry).
        backend, node_id = await self._backend(volume)
        for sandbox_id in mounting:
            if self._kill_sandbox is None:
                raise HutchError("no way to kill the sandboxes mounting a volume")
            with contextlib.suppress(NotFoundError):  # killed meanwhile
                await self._kill_sandbox(team_id, sandbox_id)
        try:
            await backend.delete(volume.id)
        except UnavailableError as exc:
            if node_id is None or exc.error_code:
                raise
            raise _node_unavailable(volume, node_id, exc) from exc
        await self._store.delete_volume(volume.id, team_id=team_id)
        return volume

    # -- mounts ------------------------------------------------------------------------

    async def resolve_mounts(
        self, *, team_id: TeamID, requested: Sequence[tuple[str, str]]
    ) -> list[VolumeMount]:
        """The team's volumes and checked paths of a create's ``volumeMounts``."""
        if len(requested) > _MAX_MOUNTS:
            raise InvalidArgumentError(f"volumeMounts: at most {_MAX_MOUNTS} volumes")
        mounts: list[VolumeMount] = []
        seen: set[str] = set()
        for name, raw_path in requested:
            path = check_mount_path(raw_path)
            if path in seen:
                raise InvalidArgumentError(f"volumeMounts: path {path!r} is used twice")
            seen.add(path)
            volume = await self._store.find_volume(name, team_id=team_id)
            if volume is None:
                raise NotFoundError(
                    f"volume {name!r} not found", public_message=f"Volume '{name}' not found"
                )
            if not self._on_nodes(volume.backend) and not getattr(
                self.backend_for(volume), "mountable", False
            ):
                raise InvalidArgumentError(
                    f"volumeMounts: volume {volume.name!r} is on the {volume.backend!r} "
                    "backend, which sandboxes cannot mount"
                )
            mounts.append(
                VolumeMount(
                    volume_id=volume.id, name=volume.name, path=path, backend=volume.backend
                )
            )
        nested = sorted(seen)
        for a, b in itertools.pairwise(nested):
            if b.startswith(a + "/"):
                raise InvalidArgumentError(f"volumeMounts: {b!r} is inside {a!r}")
        return mounts

    async def record_mounts(
        self, sandbox_id: SandboxID, mounts: Sequence[VolumeMount], *, node_id: str | None = None
    ) -> None:
        """Record the mounts; ``VolumeNodeTaken`` when a local volume lives on another node
        than the sandbox's (placement pins them, ADR 0034; a volume made before volumes
        had nodes is claimed by its first mount's node here)."""
        await self._store.add_mounts(sandbox_id, mounts, node_id=node_id)

    async def mounts_of(self, sandbox_id: SandboxID) -> list[VolumeMountSpec]:
        """The volumes ``sandbox_id`` mounts (to bind them again when it reboots)."""
        return self.mount_specs(await self._store.mounts_of(sandbox_id))

    async def mounted_in(self, sandbox_id: SandboxID) -> list[VolumeMount]:
        """The volumes ``sandbox_id`` mounts, with their names (``SandboxDetail``)."""
        return await self._store.mounts_of(sandbox_id)

    async def mounted_in_many(
        self, sandbox_ids: Sequence[SandboxID]
    ) -> dict[SandboxID, list[VolumeMount]]:
        """:meth:`mounted_in` for a listing page, in one query."""
        return await self._store.mounts_of_many(sandbox_ids)

    def mount_specs(self, mounts: Sequence[VolumeMount]) -> list[VolumeMountSpec]:
        return [
            VolumeMountSpec(volume_id=m.volume_id, backend=m.backend, path=m.path) for m in mounts
        ]

    # -- content -----------------------------------------------------------------------

    async def stat(self, volume: Volume, path: str) -> EntryStat:
        rel = normalize_path(path)
        return await self._on(volume, lambda b: b.stat(volume.id, rel))

    async def list_dir(self, volume: Volume, path: str, *, depth: int) -> list[EntryStat]:
        rel = normalize_path(path)
        return await self._on(volume, lambda b: b.list_dir(volume.id, rel, depth=depth))

    async def make_dir(
        self, volume: Volume, path: str, *, owner: Owner, parents: bool
    ) -> EntryStat:
        rel = normalize_path(path)
        return await self._on(
            volume, lambda b: b.make_dir(volume.id, rel, owner=owner, parents=parents)
        )

    async def write_file(
        self,
        volume: Volume,
        path: str,
        chunks: AsyncIterable[bytes],
        *,
        owner: Owner,
        metadata: Mapping[str, str],
    ) -> EntryStat:
        rel = normalize_path(path)
        return await self._on(
            volume,
            lambda b: b.write_file(volume.id, rel, chunks, owner=owner, metadata=metadata),
        )

    async def open_file(self, volume: Volume, path: str) -> FileContent:
        rel = normalize_path(path)
        return await self._on(volume, lambda b: b.open_file(volume.id, rel))

    async def remove(self, volume: Volume, path: str) -> None:
        rel = normalize_path(path)
        await self._on(volume, lambda b: b.remove(volume.id, rel))

    async def move(self, volume: Volume, src: str, dst: str) -> EntryStat:
        rel_src, rel_dst = normalize_path(src), normalize_path(dst)
        return await self._on(volume, lambda b: b.move(volume.id, rel_src, rel_dst))

    async def set_attrs(self, volume: Volume, path: str, *, owner: Owner) -> EntryStat:
        rel = normalize_path(path)
        return await self._on(volume, lambda b: b.set_attrs(volume.id, rel, owner=owner))
