"""Build the ``base`` template: Debian 12 (bookworm) through ``debootstrap --variant=minbase``.

Matches E2B's base template where users' code notices: bash, coreutils, python3 (and
``python``), sudo, git, curl, procps, ncurses-bin (``tput``), ca-certificates; a ``user``
account (uid 1000, home ``/home/user``) with passwordless sudo; umask 022. Packages come
from the Debian mirror apt itself uses (``/etc/apt/sources.list*``). Takes minutes; the
result is published atomically, so a crash leaves the old template (if any) in place.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Final

from hutch.node.templates.artifact import TemplateArtifact, publish, staging_dir
from hutch.shared.errors import HutchError, NotFoundError

SUITE: Final = "bookworm"
DEFAULT_MIRROR: Final = "http://deb.debian.org/debian"
PACKAGES: Final = (
    "bash", "coreutils", "python3", "python-is-python3", "sudo", "git", "curl", "procps",
    "ncurses-bin", "ca-certificates",
)  # fmt: skip

#: Run inside the new tree with chroot; everything else is done from the host side.
_SETUP_SCRIPT: Final = """set -eu
groupadd --gid 1000 user
useradd --uid 1000 --gid 1000 --create-home --home-dir /home/user --shell /bin/bash user
printf 'user ALL=(ALL:ALL) NOPASSWD: ALL\\n' > /etc/sudoers.d/user
chmod 0440 /etc/sudoers.d/user
sed -i 's/^UMASK.*/UMASK\\t\\t022/' /etc/login.defs
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log /tmp/* /var/tmp/*
"""


def apt_mirror(*, etc_apt: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this host's apt uses (deb822 or one-line format), else the CDN."""
    candidates = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*"))]
    for path in candidates:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        text = path.read_text(errors="replace")
        for url in re.findall(r"^\s*URIs:\s*(\S+)", text, re.M) + re.findall(
            r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", text, re.M
        ):
            if url.rstrip("/").endswith("/debian"):
                return url.rstrip("/")
    return DEFAULT_MIRROR


def build_base(
    templates_dir: Path, *, name: str = "base", mirror: str | None = None
) -> TemplateArtifact:
    """Build and publish the Debian ``base`` template under ``templates_dir``; return it."""
    if shutil.which("debootstrap") is None:
        raise NotFoundError("debootstrap is missing (apt-get install debootstrap)")
    mirror = mirror or apt_mirror()
    started = time.monotonic()
    staging = staging_dir(templates_dir, name)
    try:
        root = staging / "rootfs"
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
              SUITE, str(root), mirror], what="debootstrap")  # fmt: skip
        _run(["chroot", str(root), "/bin/sh", "-c", _SETUP_SCRIPT], what="user setup")
        # The node writes resolv.conf and hosts per sandbox; the build host's must not leak.
        for rel in ("etc/resolv.conf", "etc/hostname"):
            (root / rel).unlink(missing_ok=True)
        artifact = TemplateArtifact(
            name=name,
            rootfs=root,
            default_user="user",
            workdir="/home/user",
            env={"LANG": "C.UTF-8"},
            cpu_count=2.0,
            memory_mb=1024,
            build={"builder": "debootstrap", "suite": SUITE, "mirror": mirror,
                   "packages": list(PACKAGES), "seconds": round(time.monotonic() - started, 1)},
        )  # fmt: skip
        return publish(staging, artifact, templates_dir=templates_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _run(argv: list[str], *, what: str) -> None:
    # umask 022 so the tree's modes are Debian's, whatever the caller's umask is.
    result = subprocess.run(
        argv, capture_output=True, text=True, check=False, umask=0o022, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout)[-2000:]
        raise HutchError(f"{what} failed ({result.returncode}): {tail}")
