"""What the control plane needs from a node: the :class:`NodeClient` Protocol.

The node role (``hutch.node``) owns the sandboxes on one host; the API never imports it.
An adapter (an in-process one for the embedded ``hutch serve``, an HTTP one for
scale-out) satisfies this Protocol structurally and ``api/app.py`` hands it in; the tests
hand in ``tests/fakes/node.py``.

Division of labour: the API owns identity, state, metadata and **timeouts** (the reaper
calls :meth:`NodeClient.kill`); the node owns processes, filesystems and networks. So the
node is never told a deadline, and every method is keyed by sandbox id alone.

Errors: implementations raise the shared tree (``hutch.shared.errors``) only:
:class:`~hutch.shared.errors.ResourceExhaustedError` when the node is full (HTTP 429),
:class:`~hutch.shared.errors.UnavailableError` when the node cannot be reached (503),
:class:`~hutch.shared.errors.NotFoundError` for metrics of an unknown sandbox; anything
else is a failure of the operation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from hutch.shared.egress import EgressPolicy
from hutch.shared.ids import NodeID, SandboxID, TeamID, TemplateID


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeMountSpec:
    """A volume to bind-mount read-write into the sandbox at ``path``."""

    volume_id: str
    #: The ``VolumeBackend`` that holds it (the node asks it for the host path).
    backend: str
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxSpec:
    """Everything a node needs to start one sandbox."""

    sandbox_id: SandboxID
    team_id: TeamID
    template_id: TemplateID
    cpu_count: int
    memory_mb: int
    disk_mb: int
    #: Passed to envd's ``/init`` (``envVars``).
    env_vars: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: Passed to envd's ``/init`` (``accessToken``); ``None`` for an unsecured sandbox.
    envd_access_token: str | None = field(default=None, repr=False)
    allow_internet: bool = True
    #: The egress policy (``network.allowOut``/``denyOut``); ``None``: the default.
    egress: EgressPolicy | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: Traffic through the proxy to the paused sandbox resumes it (ADR 0004).
    auto_resume: bool = False
    volume_mounts: Sequence[VolumeMountSpec] = ()
    #: For the proxy's route only (never sent to the node): ``allowPublicTraffic: false``'s
    #: token and ``maskRequestHost``.
    traffic_access_token: str | None = field(default=None, repr=False)
    mask_request_host: str | None = None
    #: The node placement chose (the row's ``node_id``): where a cluster's router sends
    #: the create or resume; a node ignores it.
    node_id: NodeID | None = None
    #: Node API addresses of peers holding the template, for a node that lacks it (ADR
    #: 0029): it fetches from the first that serves it before it creates.
    artifact_sources: Sequence[str] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacedSandbox:
    """A sandbox a node has started: where the proxy reaches it."""

    sandbox_id: SandboxID
    node_id: NodeID
    #: The sandbox's private address (IP) where envd listens on 49983.
    address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumedSandbox:
    """A sandbox a node brought back from pause (ADR 0004)."""

    placed: PlacedSandbox
    #: True when its memory and processes survived (a thaw); False when it was booted
    #: again from its files (a new boot id, the start command run again).
    memory_kept: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxMetrics:
    """One resource sample of a sandbox (E2B's ``SandboxMetric``)."""

    timestamp: datetime
    cpu_count: int
    cpu_used_pct: float
    mem_used: int
    mem_total: int
    mem_cache: int
    disk_used: int
    disk_total: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxLogLine:
    """One log line of a sandbox (its envd's and its start command's output)."""

    timestamp: datetime
    message: str
    level: str = "info"
    fields: Mapping[str, str] = field(default_factory=dict)


class NodeClient(Protocol):
    """One node, as the control plane sees it. Every method is safe to retry."""

    @property
    def node_id(self) -> NodeID:
        """The node's stable id (recorded on each sandbox row)."""
        ...

    async def create(self, spec: SandboxSpec) -> PlacedSandbox:
        """Start the sandbox and return once envd answers (initialised with the spec).

        On failure the node leaves nothing behind for ``spec.sandbox_id``, or at least
        nothing that a following :meth:`kill` does not release.
        """
        ...

    async def kill(self, sandbox_id: SandboxID) -> None:
        """Stop the sandbox and release everything it held. Idempotent: an unknown or
        already killed sandbox is not an error (the API calls this to roll back)."""
        ...

    async def pause(self, sandbox_id: SandboxID, *, keep_memory: bool) -> bool:
        """Pause the running sandbox; True if its memory is kept (frozen), False if only
        its filesystem is. Pausing a paused sandbox is a no-op. ``NotFoundError`` if the
        node does not have it."""
        ...

    async def resume(self, spec: SandboxSpec, *, keep_memory: bool) -> ResumedSandbox:
        """Bring the paused sandbox ``spec.sandbox_id`` back (``spec`` gives what a reboot
        needs: env vars, token). Resuming a running sandbox is a no-op."""
        ...

    async def snapshot(self, sandbox_id: SandboxID, *, snapshot_id: TemplateID) -> None:
        """Publish the sandbox's files as template ``snapshot_id`` (a running sandbox is
        frozen for the copy and thawed after)."""
        ...

    async def delete_snapshot(self, snapshot_id: TemplateID) -> None:
        """Remove snapshot template ``snapshot_id`` (idempotent); its files stay while
        sandboxes made from it use them."""
        ...

    async def list_running(self) -> Sequence[SandboxID]:
        """The ids of every sandbox the node runs (for reconciliation)."""
        ...

    async def set_metadata(self, sandbox_id: SandboxID, metadata: Mapping[str, str]) -> None:
        """Replace the running sandbox's live metadata with ``metadata`` (the whole map).

        Idempotent. :class:`~hutch.shared.errors.NotFoundError` if the node does not run
        the sandbox (ADR 0005).
        """
        ...

    async def set_network(self, sandbox_id: SandboxID, policy: EgressPolicy) -> None:
        """Replace the running sandbox's egress policy (the whole policy), in force for
        new connections when this returns. Idempotent; ``NotFoundError`` if the node does
        not have the sandbox."""
        ...

    async def metrics(
        self, sandbox_id: SandboxID, *, start: datetime | None, end: datetime | None
    ) -> Sequence[SandboxMetrics]:
        """Resource samples between ``start`` and ``end`` (either may be open)."""
        ...

    async def logs(self, sandbox_id: SandboxID) -> Sequence[SandboxLogLine]:
        """Every log line the node keeps of the sandbox (a bounded tail), oldest first;
        empty when it keeps none. The api selects from them (``service/logs.py``)."""
        ...

    async def reconcile(
        self, known: Sequence[SandboxID], *, paused: Sequence[SandboxID]
    ) -> ReconciledNode:
        """Make the node agree with the store (e.g. after a restart): adopt the ``known``
        (running in the store) and ``paused`` (pausing, paused, resuming) sandboxes it
        still has, destroy everything else (``service/reconcile.py``)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconciledNode:
    """What :meth:`NodeClient.reconcile` did."""

    #: Present on the node, unknown to the store: destroyed.
    removed: Sequence[SandboxID] = ()
    #: Adopted: where each one is, the node's copy of its metadata, and its pause mode
    #: (``full``/``filesystem``, None when it runs).
    adopted: Mapping[SandboxID, tuple[PlacedSandbox, Mapping[str, str], str | None]] = field(
        default_factory=dict
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxRoute:
    """Where the proxy reaches one sandbox: what :meth:`SandboxRoutes.publish` tells it."""

    sandbox_id: SandboxID
    #: The sandbox's private address on its node.
    address: str
    envd_access_token: str | None
    #: False: paused, the route is held for a wake.
    running: bool = True
    auto_resume: bool = False
    node_id: NodeID | None = None
    #: Its ports (not envd's) want it in ``e2b-traffic-access-token``.
    traffic_access_token: str | None = None
    #: The ``Host`` sent to its ports.
    mask_request_host: str | None = None


class SandboxRoutes(Protocol):
    """Where the proxy reaches each sandbox: the api tells it (``service/routing.py``).

    ``hutch serve`` hands in its proxy's in-memory catalog (through a small adapter);
    ``hutch api`` tells every edge ``hutch proxy`` through PostgreSQL NOTIFY
    (``hutch.cluster.routes``; ADR 0019). Each call returns once the proxies are told.
    """

    async def publish(self, route: SandboxRoute) -> None:
        """Route to ``route.sandbox_id`` at ``route.address`` (replacing any older route)."""
        ...

    async def mark_paused(self, sandbox_id: SandboxID) -> None:
        """Keep the route but mark it not running (traffic may wake it); unknown: ignored."""
        ...

    async def withdraw(self, sandbox_id: SandboxID) -> None:
        """Stop routing to the sandbox (unknown ids are ignored)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageImport:
    """One OCI image to turn into a template (skopeo transport syntax in ``source``)."""

    source: str
    name: str
    inject_envd: bool = False
    #: A host path to the envd bundle to inject; None: the node's own. CLI only.
    envd_path: str | None = None
    cpu_count: float = 1.0
    memory_mb: int = 512
    #: Its sandboxes' disk (MiB, ADR 0023); None: the node's default.
    disk_mb: int | None = None
    start_cmd: str | None = None
    ready_cmd: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportedImage:
    """What the node built: the artifact's fingerprint, whether it came from the cache."""

    name: str
    fingerprint: str
    cache_hit: bool
    envd_injected: bool
    envd_sha256: str | None
    #: The node that holds the artifact now (a cluster's api records it as the holder).
    node_id: NodeID | None = None


#: ``progress(stage, done, total)`` while an image is imported (see ``node/templates/image``).
ImportProgress = Callable[[str, int, int], None]


class TemplateBuilder(Protocol):
    """Builds and removes template artifacts on the node(s). Raises the shared tree only:
    :class:`~hutch.shared.errors.ImageError` for a bad image, ``AlreadyExistsError`` for a
    taken name; a failed build leaves nothing behind."""

    async def import_image(
        self, request: ImageImport, *, progress: ImportProgress | None = None
    ) -> ImportedImage:
        """Import ``request.source`` as template ``request.name``."""
        ...

    async def delete(self, name: str) -> None:
        """Remove the template's files (idempotent: a missing template is not an error)."""
        ...


#: ``log(level, message, step)`` while a template build runs.
BuildLogger = Callable[[str, str, "str | None"], None]


class BuildFailedError(Exception):
    """Raised by :meth:`BuildRunner.run_build` when a step fails (``step`` names it)."""

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.step = step


class BuildRunner(Protocol):
    """Runs E2B SDK template builds on the node: uploaded files and steps."""

    async def has_files(self, files_hash: str) -> bool:
        """Whether the archive of ``files_hash`` was uploaded already."""
        ...

    async def store_files(self, files_hash: str, chunks: AsyncIterator[bytes]) -> None:
        """Keep an uploaded archive under its hash (atomically)."""
        ...

    async def run_build(
        self,
        name: str,
        start: Mapping[str, object],
        *,
        cpu_count: float,
        memory_mb: int,
        log: BuildLogger,
        build_id: str,
    ) -> NodeID | None:
        """Build template ``name`` from E2B's ``TemplateBuildStartV2`` ``start``; raise
        :class:`BuildFailedError` (or a ``HutchError``) when it fails. A successful build is
        also kept as ``name@build_id``, which tags point at. The node that built it when
        the runner chose one (a cluster's: it is recorded as the holder), else ``None``."""
        ...
