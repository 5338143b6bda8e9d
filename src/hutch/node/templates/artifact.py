"""The template artifact format and the directory store that reads it.

One template is one directory::

    <home>/templates/<name>/
        template.json   format, name, default user, workdir, env, cpu, memory, build info
        rootfs/         the read-only tree: the overlay's lower layer for every sandbox

Templates imported from OCI images (``image.py``) keep their tree in a sealed artifact
addressed by its fingerprint, shared by every template built from the same inputs::

    <home>/templates/.artifacts/<fingerprint>/
        rootfs/         the read-only tree
        artifact.json   the seal: fingerprint inputs, written last (ADR 0006)
    <home>/templates/<name>/template.json   ``"artifact": "<fingerprint>"``, ``"image": {...}``

A template is published by renaming a fully built temporary directory into place, so a
reader never sees half a template and a crashed build leaves only a ``.tmp-*`` directory
(removed by the next build). :class:`TemplateArtifact` is the one thing the node consumes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from hutch.shared.errors import InvalidArgumentError, NotFoundError
from hutch.shared.ids import TEMPLATE_VERSION_SEP

log = logging.getLogger("hutch.node.templates")

FORMAT: Final = 1
#: Sealed artifacts of imported images, by fingerprint (hidden: not a template name).
ARTIFACTS_DIR: Final = ".artifacts"
SEAL_FILE: Final = "artifact.json"
#: Earlier builds of step-built templates, kept for E2B tags: ``.versions/<name>/<build>/``
#: holds that build's ``template.json`` (its tree is a sealed artifact); the node names one
#: ``<name>@<build>`` (:data:`VERSION_SEP`).
VERSIONS_DIR: Final = ".versions"
VERSION_SEP: Final = TEMPLATE_VERSION_SEP
#: Shared templates deleted on this node: ``.whiteouts/<name>`` hides ``<shared>/<name>``.
WHITEOUTS_DIR: Final = ".whiteouts"
_BUILD_RE: Final = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class TemplateNotFoundError(NotFoundError):
    """No template of that name is published on this node (404)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateArtifact:
    """What the node needs to start a sandbox from a template.

    ``rootfs`` is a read-only directory (the overlay's lower layer). ``default_user`` runs
    user processes; ``workdir`` is where they start; ``env`` is the template's environment;
    ``cpu_count`` and ``memory_mb`` are the defaults a request may override.
    """

    name: str
    rootfs: Path
    default_user: str = "user"
    workdir: str = "/home/user"
    env: Mapping[str, str] = field(default_factory=dict)
    cpu_count: float = 1.0
    memory_mb: int = 512
    #: The disk (hard limit of a sandbox's writable layer, MiB) its sandboxes get unless a
    #: create asks for another; None: the node's default (ADR 0023).
    disk_mb: int | None = None
    #: Free-form facts about the build (builder, sources, duration); not interpreted.
    build: Mapping[str, Any] = field(default_factory=dict)
    #: How to start an imported image (its command beside envd); None for busybox/base.
    image: ImageRun | None = None
    #: The sealed artifact's fingerprint (``.artifacts/<fingerprint>``); None: own rootfs/.
    artifact: str | None = None
    #: A snapshot's own layers (``.snapshots/<id>/layer``), top-most first, mounted above
    #: ``rootfs`` (issue 6, docs/pause.md); empty for a template.
    layers: tuple[Path, ...] = ()
    #: The template this snapshot was taken from (its tree is ``rootfs``); None otherwise.
    snapshot_of: str | None = None
    #: A second name its store row answers to (``code-interpreter`` for
    #: ``code-interpreter-v1``); None: its name only.
    alias: str | None = None

    @property
    def lowers(self) -> list[Path]:
        """The overlay's lower directories, top-most first."""
        return [*self.layers, self.rootfs]

    def to_json(self) -> dict[str, Any]:
        """``template.json``'s content (the rootfs path is implied by the directory)."""
        data = asdict(self)
        rootfs = data.pop("rootfs")
        data["layers"] = [str(p) for p in self.layers]
        if self.layers and self.artifact is None:
            data["rootfs_path"] = str(rootfs)  # a snapshot's base tree, outside its directory
        data["env"] = dict(self.env)
        data["build"] = dict(self.build)
        data["image"] = self.image.to_json() if self.image is not None else None
        if data["disk_mb"] is None:
            del data["disk_mb"]  # the node's default: template.json as before disks
        return {"format": FORMAT, **data}


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageRun:
    """How a sandbox of an imported image starts (``entrypoint.py`` runs it).

    ``argv`` is the image's ``Entrypoint`` + ``Cmd``, run as ``uid``/``gid`` (with the
    groups of ``user_name`` when the image's passwd names it) in ``workdir``, with the
    template's env. ``envd_injected``: envd's bundle is inside the artifact rather than
    mounted by the node. ``start_cmd`` runs in the background at start; ``ready_cmd`` must
    exit 0 before envd answers (so "envd healthy" means "ready").
    """

    argv: tuple[str, ...] = ()
    uid: int = 0
    gid: int = 0
    user_name: str | None = None
    workdir: str = "/"
    exposed_ports: tuple[str, ...] = ()
    envd_injected: bool = False
    start_cmd: str | None = None
    ready_cmd: str | None = None
    #: The image's digests (manifest, config), for people and listings.
    digest: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        data = asdict(self)
        data["argv"] = list(self.argv)
        data["exposed_ports"] = list(self.exposed_ports)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageRun:
        """Inverse of :meth:`to_json`."""
        return cls(
            argv=tuple(data.get("argv") or ()),
            uid=int(data.get("uid", 0)),
            gid=int(data.get("gid", 0)),
            user_name=data.get("user_name"),
            workdir=str(data.get("workdir") or "/"),
            exposed_ports=tuple(data.get("exposed_ports") or ()),
            envd_injected=bool(data.get("envd_injected", False)),
            start_cmd=data.get("start_cmd"),
            ready_cmd=data.get("ready_cmd"),
            digest=str(data.get("digest", "")),
        )


def validate_template_name(name: str) -> str:
    """Return ``name`` if it is usable as a directory name, else raise."""
    if not _NAME_RE.match(name):
        raise InvalidArgumentError(f"invalid template name {name!r}: want [a-z0-9._-], 1-63")
    return name


def read_artifact(template_dir: Path, *, templates_dir: Path | None = None) -> TemplateArtifact:
    """Load the artifact published in ``template_dir`` (under ``templates_dir``, by default
    its parent)."""
    meta = template_dir / "template.json"
    try:
        data = json.loads(meta.read_text())
    except FileNotFoundError:
        raise TemplateNotFoundError(f"template {template_dir.name!r} is not built") from None
    if data.get("format") != FORMAT:
        raise InvalidArgumentError(f"{meta}: unknown template format {data.get('format')!r}")
    fingerprint = data.get("artifact")
    rootfs = template_dir / "rootfs"
    if fingerprint:
        sealed = (templates_dir or template_dir.parent) / ARTIFACTS_DIR / fingerprint
        if not (sealed / SEAL_FILE).is_file():
            raise TemplateNotFoundError(
                f"template {template_dir.name!r}: its artifact {fingerprint} is not sealed"
            )
        rootfs = sealed / "rootfs"
    elif data.get("rootfs_path"):
        rootfs = Path(data["rootfs_path"])
    image = data.get("image")
    return TemplateArtifact(
        name=data["name"],
        rootfs=rootfs,
        default_user=data["default_user"],
        workdir=data["workdir"],
        env=dict(data.get("env", {})),
        cpu_count=float(data["cpu_count"]),
        memory_mb=int(data["memory_mb"]),
        disk_mb=int(data["disk_mb"]) if data.get("disk_mb") else None,
        build=dict(data.get("build", {})),
        image=ImageRun.from_json(image) if image else None,
        artifact=fingerprint or None,
        layers=tuple(Path(x) for x in data.get("layers") or ()),
        snapshot_of=data.get("snapshot_of"),
        alias=data.get("alias"),
    )


def publish(staging: Path, artifact: TemplateArtifact, *, templates_dir: Path) -> TemplateArtifact:
    """Write ``template.json`` into ``staging`` (which holds ``rootfs/``) and rename it live.

    An existing template of the same name is replaced: the old directory is renamed aside
    first and removed afterwards, so readers see either the old or the new one. Sandboxes
    already running on the old tree keep it through their overlay until they end.
    """
    validate_template_name(artifact.name)
    (staging / "template.json").write_text(json.dumps(artifact.to_json(), indent=1) + "\n")
    target = templates_dir / artifact.name
    old = templates_dir / f".old-{artifact.name}-{os.getpid()}"
    if target.exists():
        os.rename(target, old)
    os.rename(staging, target)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    return read_artifact(target)


def keep_version(templates_dir: Path, name: str, build_id: str) -> None:
    """Record the published ``name`` as its build ``build_id`` (for tags), atomically."""
    validate_template_name(name)
    if not _BUILD_RE.match(build_id):
        raise InvalidArgumentError(f"invalid build id {build_id!r}")
    data = json.loads((templates_dir / name / "template.json").read_text())
    if not data.get("artifact"):
        raise InvalidArgumentError(f"template {name!r} has no sealed artifact to keep")
    parent = templates_dir / VERSIONS_DIR / name
    parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = parent / f".tmp-{build_id}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o755)
    (tmp / "template.json").write_text(json.dumps(data, indent=1) + "\n")
    shutil.rmtree(parent / build_id, ignore_errors=True)
    os.rename(tmp, parent / build_id)


def read_version(templates_dir: Path, name: str) -> TemplateArtifact:
    """The artifact of ``<template>@<build>``; :class:`TemplateNotFoundError` if not kept."""
    base, _, build_id = name.partition(VERSION_SEP)
    try:
        validate_template_name(base)
    except InvalidArgumentError:
        raise TemplateNotFoundError(f"template {name!r} not found") from None
    if not _BUILD_RE.match(build_id):
        raise TemplateNotFoundError(f"template {name!r} not found")
    try:
        found = read_artifact(
            templates_dir / VERSIONS_DIR / base / build_id, templates_dir=templates_dir
        )
    except TemplateNotFoundError:
        raise TemplateNotFoundError(f"build {build_id} of template {base!r} is not kept") from None
    return replace(found, name=name)


def staging_dir(templates_dir: Path, name: str) -> Path:
    """A fresh temporary directory beside the published templates (same filesystem)."""
    validate_template_name(name)
    templates_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    for stale in templates_dir.glob(f".tmp-{name}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # a crashed earlier build
    path = templates_dir / f".tmp-{name}-{os.getpid()}"
    path.mkdir(mode=0o755)
    return path


class DirTemplateStore:
    """Templates published under one directory, and read-only ones shared from others;
    satisfies the domain's ``TemplateStore``.

    ``shared`` directories (another home's ``templates/``, by default the install's) are
    read, never written: a name is looked up in the own directory first, then in each
    shared one, so an own template shadows a shared one. Deleting a shared template here
    leaves a whiteout (``.whiteouts/<name>`` in the own directory, as overlayfs does for a
    lower layer) that hides it from this node only. Snapshots and kept builds of the
    shared homes stay theirs.
    """

    def __init__(self, templates_dir: Path, *, shared: Sequence[Path] = ()) -> None:
        self._dir = Path(templates_dir)
        self._shared = tuple(Path(p) for p in shared)

    @property
    def shared(self) -> tuple[Path, ...]:
        """The read-only shared directories, in lookup order."""
        return self._shared

    async def get(self, name: str) -> TemplateArtifact:
        """The artifact of ``name``; raise :class:`TemplateNotFoundError` if not built.

        ``<name>@<build>`` is a kept earlier build (:func:`keep_version`).
        """
        if VERSION_SEP in name:
            return read_version(self._dir, name)
        try:
            validate_template_name(name)
        except InvalidArgumentError:
            raise TemplateNotFoundError(f"template {name!r} not found") from None
        try:
            return read_artifact(self._dir / name)
        except TemplateNotFoundError:
            shared = self.shared_dir_of(name)
            if shared is None:
                raise
            return read_artifact(shared / name)

    def shared_dir_of(self, name: str) -> Path | None:
        """The shared directory that offers template ``name`` here (not whited out), if any."""
        if (self._dir / WHITEOUTS_DIR / name).exists():
            return None
        for shared in self._shared:
            if _is_shared_template(shared / name):
                return shared
        return None

    def hide_shared(self, name: str) -> bool:
        """Hide the shared template ``name`` from this node (a whiteout); False if none."""
        if not _NAME_RE.match(name) or self.shared_dir_of(name) is None:
            return False
        whiteouts = self._dir / WHITEOUTS_DIR
        whiteouts.mkdir(mode=0o755, parents=True, exist_ok=True)
        (whiteouts / name).touch()
        return True

    async def list(self) -> list[TemplateArtifact]:
        """Every usable template (own and shared), by name.

        One whose artifact is missing (removed by hand, or an unsealed leftover) is logged
        and left out: it must not hide the others.
        """
        found: dict[str, TemplateArtifact] = {}
        for entry in _template_dirs(self._dir):
            try:
                found[entry.name] = read_artifact(entry)
            except (TemplateNotFoundError, InvalidArgumentError) as exc:
                log.warning("template %s is unusable: %s", entry.name, exc)
        for shared in self._shared:
            for entry in _template_dirs(shared):
                if entry.name in found or self.shared_dir_of(entry.name) != shared:
                    continue
                try:
                    artifact = read_artifact(entry)
                except (TemplateNotFoundError, InvalidArgumentError) as exc:
                    log.warning("shared template %s is unusable: %s", entry, exc)
                    continue
                if not artifact.layers:  # a snapshot belongs to its home's team
                    found[entry.name] = artifact
        return [found[name] for name in sorted(found)]


def _template_dirs(templates_dir: Path) -> list[Path]:
    if not templates_dir.is_dir():
        return []
    return [
        entry
        for entry in sorted(templates_dir.iterdir())
        if not entry.name.startswith(".") and (entry / "template.json").is_file()
    ]


def _is_shared_template(template_dir: Path) -> bool:
    try:
        data = json.loads((template_dir / "template.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and not data.get("layers")
