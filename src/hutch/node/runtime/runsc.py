"""``RunscRuntime``: gVisor behind the same :class:`~hutch.node.runtime.base.Runtime` seam.

runsc speaks runc's command line, so this adapter only changes the flags and works around
one host trap (HOST-NOTES): runsc refuses to set up networking in a prepared network
namespace ("cannot run with network enabled in root network namespace") because it takes
the presence of ``/proc/sys/net/core/rmem_default``, which every netns has on kernels 6.x,
as proof that it runs in the root namespace. Each runsc invocation therefore runs in a
private mount namespace whose ``/proc/sys/net`` is an empty tmpfs.

The spec's seccomp profile and masked paths do not apply inside gVisor (its own kernel is
the boundary), and Debian bookworm's runsc has only the slow ``ptrace`` platform;
bookworm-backports ships one with ``systrap`` (see ``docs/runtime.md``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hutch.node.runtime.base import RuntimeStatus
from hutch.node.runtime.procmount import BOOT_ID_FILE, BOOT_ID_PATH
from hutch.node.runtime.runc import RuncRuntime
from hutch.shared.errors import NotFoundError, UnavailableError

#: Runs its arguments in a private mount namespace with an empty /proc/sys/net.
_HIDE_PROC_SYS_NET = (
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "/bin/sh",
    "-c",
    'mount -t tmpfs -o size=4k,mode=555 hutch-no-netsys /proc/sys/net && exec "$@"',
    "hutch-runsc",
)


class RunscRuntime(RuncRuntime):
    """Drive gVisor's ``runsc`` with a private state directory.

    ``platform`` is runsc's ``--platform`` (``ptrace`` works everywhere; ``systrap`` needs a
    2023+ runsc; ``kvm`` needs a usable ``/dev/kvm``). ``hide_proc_sys_net`` applies the
    network workaround described in the module docstring.
    """

    # runsc says "loading container: file does not exist" for an unknown id.
    not_found_markers = (*RuncRuntime.not_found_markers, "loading container: file does not exist")
    # runsc pause stops its sandbox itself and reports that state, not the cgroup's.
    _direct_freezer = False
    # runsc's --pid-file names its sandbox process: the boot asks state, as before.
    _pid_file = False

    def __init__(
        self,
        *,
        root: Path,
        binary: str = "runsc",
        platform: str = "ptrace",
        hide_proc_sys_net: bool = True,
        timeout: float | None = 60.0,
    ) -> None:
        super().__init__(root=root, binary=binary, timeout=timeout)
        self._platform = platform
        self._hide_proc_sys_net = hide_proc_sys_net

    async def _exists(self, sandbox_id: str) -> bool:
        # runsc's state file layout differs between releases: ask runsc itself.
        try:
            await self.state(sandbox_id)
        except NotFoundError:
            return False
        return True

    async def delete(self, sandbox_id: str, *, force: bool = False) -> None:
        """Remove the sandbox; a paused one is thawed first (runsc cannot kill it frozen)."""
        if force and (await self.state(sandbox_id)).status is RuntimeStatus.PAUSED:
            await self.resume(sandbox_id)
        await super().delete(sandbox_id, force=force)

    async def set_hostname(self, sandbox_id: str, hostname: str) -> None:
        """gVisor keeps the UTS namespace inside its own kernel: not reachable from here."""
        raise UnavailableError(
            f"cannot change the hostname of {sandbox_id}: runsc keeps it inside gVisor"
        )

    async def create(
        self, bundle_dir: Path, *, sandbox_id: str, output_path: Path | None = None
    ) -> int | None:
        """As runc's, with ``<bundle>/boot_id`` (when there is one) bind-mounted read-only
        at ``/proc/sys/kernel/random/boot_id`` through the config: gVisor's own procfs has
        no such file (runsc 20221219), and unlike runc it accepts a mount there."""
        boot_id = Path(bundle_dir) / BOOT_ID_FILE
        config_path = Path(bundle_dir) / "config.json"
        if boot_id.is_file() and config_path.is_file():
            config = json.loads(config_path.read_text())
            mounts = [m for m in config.get("mounts", []) if m.get("destination") != BOOT_ID_PATH]
            mounts.append({"destination": BOOT_ID_PATH, "type": "bind",
                           "source": str(boot_id), "options": ["rbind", "ro"]})  # fmt: skip
            config["mounts"] = mounts
            tmp = config_path.with_name(".config.json.tmp")
            tmp.write_text(json.dumps(config, indent=1))
            os.replace(tmp, config_path)
        return await super().create(bundle_dir, sandbox_id=sandbox_id, output_path=output_path)

    async def bind_boot_id(self, sandbox_id: str, source: Path, *, pid: int | None = None) -> bool:
        """Done by :meth:`create` (a config mount); nothing to do after it."""
        return True

    def _global_args(self) -> list[str]:
        prefix = list(_HIDE_PROC_SYS_NET) if self._hide_proc_sys_net else []
        return [*prefix, *super()._global_args(), f"--platform={self._platform}"]
