"""The runtime seam: what the node asks of an OCI runtime, and nothing more.

Everything above this module speaks sandbox ids and bundle directories; everything below
(``runc.py``, ``runsc.py``) speaks a runtime's command line. Adapters satisfy
:class:`Runtime` structurally and translate their failures here, once:

* a runtime command that fails becomes :class:`RuntimeFailedError`;
* an id the runtime does not know becomes :class:`hutch.shared.errors.NotFoundError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from hutch.shared.errors import HutchError


class RuntimeFailedError(HutchError):
    """The OCI runtime refused or failed an operation (HTTP 500).

    ``message`` carries the runtime's own words (for logs); ``public_message`` stays generic
    so that host paths never reach a client.
    """

    def __init__(self, message: str, *, public_message: str | None = None) -> None:
        super().__init__(
            message,
            public_message=public_message
            if public_message is not None
            else "the sandbox runtime failed",
        )


class RuntimeStatus(StrEnum):
    """A container's status, in the OCI runtime spec's vocabulary."""

    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class RuntimeState:
    """What the runtime reports about one container.

    ``pid`` is the host pid of the container's init process, or ``None`` once it is gone.
    """

    sandbox_id: str
    status: RuntimeStatus
    pid: int | None
    bundle: Path | None


@dataclass(frozen=True, slots=True)
class ExecResult:
    """The outcome of a command run inside a sandbox with :meth:`Runtime.exec`."""

    exit_code: int
    stdout: bytes
    stderr: bytes


class Runtime(Protocol):
    """An OCI runtime that owns the containers under one state directory.

    Every method is idempotent where the OCI life cycle allows it: killing a stopped
    container succeeds, deleting with ``force=True`` removes a container in any status.
    """

    async def create(
        self, bundle_dir: Path, *, sandbox_id: str, output_path: Path | None = None
    ) -> int | None:
        """Create the container from ``bundle_dir/config.json``; its process waits for start.

        ``output_path`` receives the process's stdout and stderr (appended); ``None`` sends
        them to ``/dev/null``. Returns the init process's host pid when the runtime told it
        (runc's ``--pid-file``: no ``state`` call needed after), else None.
        """
        ...

    async def start(self, sandbox_id: str) -> None:
        """Run the user process of a created container."""
        ...

    async def kill(self, sandbox_id: str, *, signal: int = 9) -> None:
        """Send ``signal`` to the container's init process (a stopped container is a no-op)."""
        ...

    async def wait(self, sandbox_id: str) -> None:
        """Return once the container's init process has exited (at once if it has)."""
        ...

    async def delete(self, sandbox_id: str, *, force: bool = False) -> None:
        """Remove the container; ``force`` kills it first if it still runs."""
        ...

    async def state(self, sandbox_id: str) -> RuntimeState:
        """Report the container's status; raise ``NotFoundError`` if it does not exist."""
        ...

    async def list(self) -> list[str]:
        """The ids of every container under this runtime's state directory."""
        ...

    async def pause(self, sandbox_id: str, *, pid: int | None = None) -> None:
        """Freeze every process of the container (cgroup freezer).

        ``pid``: the container's init as the node knows it; a runtime that can freeze
        that process's cgroup itself may (runc, ADR 0040), one that cannot ignores it.
        """
        ...

    async def resume(self, sandbox_id: str, *, pid: int | None = None) -> None:
        """Thaw a paused container (``pid`` as for :meth:`pause`)."""
        ...

    async def set_hostname(self, sandbox_id: str, hostname: str) -> None:
        """Change the running container's hostname (its UTS namespace).

        Raises ``UnavailableError`` where the runtime cannot (gVisor keeps the UTS
        namespace inside its own kernel); the warm pool needs it (ADR 0011).
        """
        ...

    async def bind_boot_id(self, sandbox_id: str, source: Path, *, pid: int | None = None) -> bool:
        """Show ``source``'s content as the created (not yet started) container's
        ``/proc/sys/kernel/random/boot_id``; False where the runtime has its own kernel
        and so its own boot id (gVisor). ``pid``: the container's init as :meth:`create`
        returned it (else the runtime is asked)."""
        ...

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
        """Run ``args`` inside the running container and wait for it (at most
        ``timeout_s``, default the runtime's own bound).

        Meant for the node's own chores and tests; user processes go through envd, which
        forks them itself far cheaper than a runtime ``exec``.
        """
        ...
