"""Pure-ish steps of a sandbox's creation: its per-sandbox files and its OCI spec.

Kept apart from ``manager.py`` so the manager reads as the ordered flow (and its rollback)
and these stay testable without a runtime.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Final

from hutch.node.bundle import BindMount, SandboxSpec, build_spec
from hutch.node.envd_bundle import bundled_python_argv, envd_argv
from hutch.node.sandbox.envd_fork import BUSYBOX_IN_SANDBOX, PYTHON_WAITER_ARGV, WAITER_ARGV
from hutch.node.sandbox.models import ManagerConfig
from hutch.node.templates import entrypoint
from hutch.node.templates.artifact import TemplateArtifact
from hutch.shared.paths import (
    ENTRYPOINT_WRAPPER_IN_SANDBOX,
    ENVD_BUNDLE_DIR_IN_SANDBOX,
    ENVD_PORT,
)

#: tini sits beside envd's bundle, under the directory hutch owns inside every sandbox.
TINI_IN_SANDBOX: Final = "/.hutch/tini"
#: The wrapper's source on the host, bind-mounted read-only into image sandboxes.
ENTRYPOINT_WRAPPER_SOURCE: Final = Path(entrypoint.__file__).resolve()


def write_etc_files(
    upper: Path, *, sandbox_id: str, address: IPv4Address, dns_servers: Sequence[str]
) -> None:
    """Put ``/etc/resolv.conf``, ``/etc/hosts`` and ``/etc/hostname`` into the upper layer.

    Written into the upper directory *before* the overlay is mounted, they shadow the
    template's files like any user edit would: the sandbox can change them, nothing is
    bind-mounted over them, and the template stays untouched. The resolvers must be
    reachable through NAT (the host's own resolver is firewalled off from sandboxes).
    """
    etc = upper / "etc"
    etc.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(etc, 0o755)
    files = {"resolv.conf": "".join(f"nameserver {server}\n" for server in dns_servers)}
    files.update(identity_files(sandbox_id=sandbox_id, address=address))
    for name, text in files.items():
        path = etc / name
        path.write_text(text)
        os.chmod(path, 0o644)


def identity_files(*, sandbox_id: str, address: IPv4Address) -> dict[str, str]:
    """The files under ``/etc`` that name the sandbox: ``hosts`` and ``hostname``."""
    hosts = (
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"{address}\t{sandbox_id}\n"
    )
    return {"hosts": hosts, "hostname": f"{sandbox_id}\n"}


def write_identity(rootfs: Path, *, sandbox_id: str, address: IPv4Address) -> None:
    """Rewrite ``/etc/hosts`` and ``/etc/hostname`` of a running pool member for its new id.

    Through the mounted overlay (writing to a mounted overlay's upper directory directly is
    undefined), in place: :func:`write_etc_files` put both files in the upper layer at
    boot, so this touches no lower file. ``O_NOFOLLOW``: no symlink is followed, although
    nothing but the node has run in the member yet.
    """
    for name, text in identity_files(sandbox_id=sandbox_id, address=address).items():
        fd = os.open(rootfs / "etc" / name, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        with os.fdopen(fd, "w") as f:
            f.write(text)


def sandbox_spec(
    *,
    sandbox_id: str,
    rootfs: Path,
    template: TemplateArtifact,
    cpu_count: float,
    memory_mb: int,
    netns_path: Path,
    config: ManagerConfig,
    volume_mounts: Sequence[tuple[Path, str]] = (),
    proc_views: Sequence[tuple[Path, str]] = (),
    cpu_weight: int | None = None,
    envd_forked: bool = False,
) -> SandboxSpec:
    """tini as PID 1 (it reaps zombies; see HOST-NOTES) running envd as root.

    envd is told the template's default user, which user processes run as; envd itself
    needs root to switch to any user a request names. A template imported from an image
    runs the entrypoint wrapper instead (``node/templates/entrypoint.py``): envd beside the
    image's own command, which stays the main process. envd's bundle is mounted unless it
    was injected into the template (ADR 0007); both sit at ``ENVD_BUNDLE_DIR_IN_SANDBOX``.

    ``envd_forked`` (a template that is no image, ``HUTCH_NODE_ENVD_ZYGOTE``): tini runs a
    waiter instead (``envd_fork.WAITER_ARGV``: the node's static busybox, bind-mounted
    read-only, ``sleep infinity``; without one, ``PYTHON_WAITER_ARGV``) and the node forks
    envd in from its zygote
    with :func:`envd_options` once the container runs (ADR 0032 addendum, step 2).
    """
    envd = [*envd_argv(), *envd_options(template)]
    mounts = [BindMount(config.tini_path, TINI_IN_SANDBOX, read_only=True)]
    run = template.image
    if run is None:
        args = [TINI_IN_SANDBOX, "--", *envd]
        if envd_forked and config.busybox_path is not None:
            args = [TINI_IN_SANDBOX, "--", *WAITER_ARGV]
            mounts.append(BindMount(config.busybox_path, BUSYBOX_IN_SANDBOX, read_only=True))
        elif envd_forked:
            args = [TINI_IN_SANDBOX, "--", *PYTHON_WAITER_ARGV]
    else:
        launch = {
            "envd": envd, "argv": list(run.argv), "uid": run.uid, "gid": run.gid,
            "user_name": run.user_name, "workdir": run.workdir,
            "start_cmd": run.start_cmd, "ready_cmd": run.ready_cmd,
        }  # fmt: skip
        args = [
            TINI_IN_SANDBOX, "--", *bundled_python_argv(), ENTRYPOINT_WRAPPER_IN_SANDBOX,
            json.dumps(launch),
        ]  # fmt: skip
        mounts.append(
            BindMount(ENTRYPOINT_WRAPPER_SOURCE, ENTRYPOINT_WRAPPER_IN_SANDBOX, read_only=True)
        )
    if run is None or not run.envd_injected:
        mounts.insert(
            0, BindMount(config.envd_bundle_dir, ENVD_BUNDLE_DIR_IN_SANDBOX, read_only=True)
        )
    return SandboxSpec(
        sandbox_id=sandbox_id,
        rootfs=rootfs,
        args=args,
        env=dict(template.env),
        cwd="/",
        cpu_count=cpu_count,
        memory_mb=memory_mb,
        pids_limit=config.pids_limit,
        netns_path=netns_path,
        bind_mounts=(*mounts, *(BindMount(source, dest) for source, dest in volume_mounts)),
        proc_views=tuple(proc_views),
        cpu_weight=cpu_weight,
    )


def envd_options(template: TemplateArtifact) -> list[str]:
    """envd's own options (after ``python -m hutch.envd``) for a sandbox of ``template``."""
    return [
        "--host", "0.0.0.0",
        "--port", str(ENVD_PORT),
        "--user", template.default_user,
        "--workdir", template.workdir,
    ]  # fmt: skip


def oci_config(spec: SandboxSpec, *, config: ManagerConfig) -> dict[str, Any]:
    """``config.json`` for ``spec`` with the node's cgroup parent and nofile cap."""
    return build_spec(spec, cgroup_parent=config.cgroup_parent, max_nofile=config.max_nofile)


def init_body(
    *,
    env_vars: Mapping[str, str],
    access_token: str | None,
    default_user: str,
    workdir: str,
    timestamp: float,
) -> dict[str, object]:
    """envd's ``/init`` request (E2B's field names)."""
    body: dict[str, object] = {
        "envVars": dict(env_vars),
        "defaultUser": default_user,
        "defaultWorkdir": workdir,
        "timestamp": timestamp,
    }
    if access_token:
        body["accessToken"] = access_token
    return body
