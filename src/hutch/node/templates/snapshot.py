"""Snapshots as templates: a sandbox's overlay upper layer, kept above its template's tree.

A snapshot is published like any template (``artifact.py``), but its directory holds only
``template.json``; its files live in a hidden layer shared by nothing else::

    <home>/templates/.snapshots/<name>/layer/   a copy of the sandbox's upper directory
    <home>/templates/<name>/template.json        the base template's facts, plus
                                                  ``layers`` (top-most first) and the base tree

Sandboxes created from it mount ``lowerdir=<layer>:<older layers>:<base rootfs>``. The copy
keeps overlayfs's own marks (whiteouts are 0/0 character devices, opaque directories a
``trusted.overlay.opaque`` xattr), which mean the same in a lower layer, so deletions in the
sandbox stay deleted in the snapshot. Deleting the snapshot removes its ``template.json``;
its layer goes once no template lists it and no mount uses it
(:func:`prune_snapshot_layers`), so sandboxes made from it keep their files.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path
from typing import Final

from hutch.node.templates.artifact import (
    ARTIFACTS_DIR,
    TemplateArtifact,
    publish,
    read_artifact,
    staging_dir,
    validate_template_name,
)
from hutch.shared.errors import AlreadyExistsError, HutchError

SNAPSHOTS_DIR: Final = ".snapshots"


class SnapshotCopyError(HutchError):
    """Copying a sandbox's files into a snapshot layer failed (500)."""


async def copy_tree(source: Path, target: Path) -> None:
    """``cp -a --reflink=auto``: owners, modes, times, xattrs, device nodes, hard links."""
    proc = await asyncio.create_subprocess_exec(
        "cp", "-a", "--reflink=auto", "--", str(source), str(target),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise SnapshotCopyError(
            f"copying {source} to {target} failed: {err.decode(errors='replace')[:500]}",
            public_message="copying the sandbox's files failed",
        )


async def capture(
    upper: Path, base: TemplateArtifact, *, templates_dir: Path, name: str
) -> TemplateArtifact:
    """Publish template ``name``: ``upper`` copied as a layer above ``base``'s layers."""
    validate_template_name(name)
    if (templates_dir / name).exists():
        raise AlreadyExistsError(f"a template named {name!r} exists already")
    home = templates_dir / SNAPSHOTS_DIR / name
    if home.exists():
        shutil.rmtree(home)  # a crashed earlier capture of the same id
    home.mkdir(parents=True, mode=0o700)
    layer = home / "layer"
    try:
        await copy_tree(upper, layer)
        staging = staging_dir(templates_dir, name)
        # A base sealed in another home's .artifacts/ (a shared template, e.g. install.sh's
        # code-interpreter-v1 seen from another home) is named by its tree's path: a
        # fingerprint is looked up in this home's .artifacts/, which does not hold it.
        foreign = base.artifact is not None and base.rootfs.parent.parent != (
            templates_dir / ARTIFACTS_DIR
        )
        artifact = dataclasses.replace(
            base, name=name, layers=(layer, *base.layers),
            snapshot_of=base.snapshot_of or base.name,
            artifact=None if foreign else base.artifact,
        )  # fmt: skip
        return publish(staging, artifact, templates_dir=templates_dir)
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise


def prune_snapshot_layers(templates_dir: Path, *, mounted: str = "") -> list[str]:
    """Remove the layers no published template lists and no mount uses; their names.

    ``mounted``: the text of ``/proc/self/mountinfo`` (read here when empty).
    """
    root = templates_dir / SNAPSHOTS_DIR
    if not root.is_dir():
        return []
    used: set[str] = set()
    for entry in templates_dir.iterdir():
        if entry.name.startswith(".") or not (entry / "template.json").is_file():
            continue
        try:
            used |= {str(p) for p in read_artifact(entry).layers}
        except HutchError:
            continue
    if not mounted:
        mounted = Path("/proc/self/mountinfo").read_text()
    removed = []
    for home in root.iterdir():
        layer = home / "layer"
        if str(layer) in used or str(layer) in mounted:
            continue
        shutil.rmtree(home, ignore_errors=True)
        removed.append(home.name)
    return removed
