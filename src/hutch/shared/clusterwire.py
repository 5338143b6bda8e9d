"""The registration wire: the bodies a node and an api exchange for membership (ADR 0025).

The direction is **node → api**: a node is told one or more api URLs
(``HUTCH_NODE_CLUSTER_API_URLS``), registers with the first that answers
(``POST /hutch/cluster/nodes``) and renews its lease there
(``POST /hutch/cluster/nodes/{id}/heartbeat``), moving to the next URL when one stops
answering. Any api will do: they share the store, so N apis need no load balancer and no
api needs to be told where the nodes are (the node says so in ``address``). Both calls
carry the cluster token as ``Authorization: Bearer``. docs/node-api.md, "Membership".

Like ``nodewire``, snake_case fields, unknown fields refused, times as epoch seconds.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: The api's path prefix of the registration wire.
CLUSTER_PREFIX = "/hutch/cluster"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Capacity(_Wire):
    """What the node offers to sandboxes."""

    cpu_count: int = Field(ge=1)
    memory_mb: int = Field(ge=1)
    disk_mb: int = Field(ge=0)
    max_sandboxes: int = Field(ge=1)


class Usage(_Wire):
    """The host's load now (heartbeats carry it; placement weighs it)."""

    #: CPU utilisation since the previous heartbeat, 0..100 (no upper bound checked: a node
    #: before this version sent the load average per CPU x100).
    cpu_pct: float = Field(default=0.0, ge=0)
    memory_used_mb: int = Field(default=0, ge=0)
    disk_used_mb: int = Field(default=0, ge=0)


class RegisterNode(_Wire):
    """``POST /hutch/cluster/nodes``: who the node is and how to reach it."""

    node_id: str = Field(min_length=1, max_length=63)
    #: Where an api reaches the node API: ``http://host:port`` or ``unix:/path/to.sock``.
    address: str = Field(min_length=1, max_length=512)
    #: The node API version (``nodewire.API_VERSION``) and the node's hutch version.
    api_version: str
    version: str
    #: The host boot the node runs in (``/proc/sys/kernel/random/boot_id``): a new one
    #: means its sandboxes are gone.
    boot_id: str = Field(min_length=1, max_length=64)
    #: This node process's start (random, per process): a registration of the same boot
    #: and incarnation comes from a live process whose creates in flight survive it.
    incarnation: str = Field(default="", max_length=64)
    capacity: Capacity
    labels: dict[str, str] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)
    #: The templates the node holds (names and ``name@build`` versions): placement
    #: prefers a node that need not fetch the template's artifact.
    templates: list[str] = Field(default_factory=list)


class Heartbeat(_Wire):
    """``POST /hutch/cluster/nodes/{id}/heartbeat``: still here, this boot, this load."""

    boot_id: str = Field(min_length=1, max_length=64)
    usage: Usage = Field(default_factory=Usage)
    #: As in ``RegisterNode``; None: unchanged.
    templates: list[str] | None = None


class Lease(_Wire):
    """The answer to both: the node's status and lease, and when to beat next."""

    node_id: str
    status: str
    lease_s: float
    heartbeat_interval_s: float
    #: Epoch seconds, by the store's clock.
    lease_expires_at: float
    #: On registration: what the api's reconcile of the node did (adopted, removed ids,
    #: rows marked killed).
    adopted: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    marked_killed: list[str] = Field(default_factory=list)
