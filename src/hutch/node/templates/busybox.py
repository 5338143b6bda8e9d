"""Build the tiny ``busybox`` template from Debian's ``busybox-static`` (for fast tests).

The tree: ``/bin/busybox`` with a link per applet where busybox itself puts them
(``busybox --list-full``), ``/etc/passwd`` and ``/etc/group`` with ``root`` and ``user``
(uid 1000, home ``/home/user``) and ``/tmp`` 1777. No bash: the SDK's ``/bin/bash -l -c CMD``
runs under busybox's ``sh`` through envd's fallback (docs/envd/process.md), which this
template is the test of. Takes well under a second.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Final

from hutch.node.templates.artifact import TemplateArtifact, publish, staging_dir
from hutch.shared.errors import HutchError, NotFoundError

#: Installed by the Debian package busybox-static.
BUSYBOX: Final = Path("/bin/busybox")
USER_UID: Final = 1000

_DIRS: Final = (
    ("bin", 0o755), ("sbin", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755),
    ("etc", 0o755), ("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("run", 0o755),
    ("var", 0o755), ("root", 0o700), ("home", 0o755), ("tmp", 0o1777),
)  # fmt: skip


def build_busybox(
    templates_dir: Path, *, name: str = "busybox", busybox: Path = BUSYBOX
) -> TemplateArtifact:
    """Build and publish the busybox template under ``templates_dir``; return it."""
    if not busybox.is_file():
        raise NotFoundError(f"{busybox} is missing (apt-get install busybox-static)")
    started = time.monotonic()
    staging = staging_dir(templates_dir, name)
    try:
        root = staging / "rootfs"
        populate(root, busybox=busybox)
        artifact = TemplateArtifact(
            name=name,
            rootfs=root,
            default_user="user",
            workdir="/home/user",
            env={},
            cpu_count=1.0,
            memory_mb=128,
            build={"builder": "busybox", "source": str(busybox),
                   "seconds": round(time.monotonic() - started, 3)},
        )  # fmt: skip
        return publish(staging, artifact, templates_dir=templates_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def populate(root: Path, *, busybox: Path = BUSYBOX) -> None:
    """Lay the busybox tree out in ``root`` (created)."""
    root.mkdir(mode=0o755)
    for rel, mode in _DIRS:
        path = root / rel
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)  # mkdir's mode is filtered by the umask; these must be exact
    shutil.copy2(busybox, root / "bin/busybox")
    (root / "bin/busybox").chmod(0o755)
    try:
        listing = subprocess.run(
            [str(busybox), "--list-full"], check=True, capture_output=True, text=True
        ).stdout.split()
    except subprocess.CalledProcessError as exc:
        raise HutchError(f"{busybox} --list-full failed: {exc.stderr}") from exc
    for rel in listing:
        link = root / rel
        if rel == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(root / "bin/busybox", link.parent))
    home = root / "home/user"
    home.mkdir(mode=0o755)
    os.chown(home, USER_UID, USER_UID)
    (root / "etc/passwd").write_text(
        f"root:x:0:0:root:/root:/bin/sh\nuser:x:{USER_UID}:{USER_UID}::/home/user:/bin/sh\n"
    )
    (root / "etc/group").write_text(f"root:x:0:\nuser:x:{USER_UID}:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\nuser:*:19000:0:99999:7:::\n")
    (root / "etc/shadow").chmod(0o640)
