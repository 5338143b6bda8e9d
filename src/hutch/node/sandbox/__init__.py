"""The node's sandbox domain: :class:`SandboxManager` turns templates into running sandboxes.

It depends only on the Protocols in ``ports``; ``node/app.py`` hands in the real adapters.
"""

from hutch.node.sandbox.manager import SandboxManager
from hutch.node.sandbox.models import (
    ManagerConfig,
    ReconcileReport,
    RunningSandbox,
    SandboxNotFoundError,
    SandboxRequest,
)

__all__ = [
    "ManagerConfig",
    "ReconcileReport",
    "RunningSandbox",
    "SandboxManager",
    "SandboxNotFoundError",
    "SandboxRequest",
]
