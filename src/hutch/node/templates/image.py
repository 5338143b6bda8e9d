"""Templates from OCI images: copy, check, unpack, inject envd, seal, publish.

::

    skopeo copy SOURCE -> <work>/layout        (any supported transport; images/source.py)
    read + check the layout                     (digests, platform; images/layout.py)
    copy envd's bundle once, hashing it          (only with inject_envd)
    fingerprint = sha256(image config digest, steps, start/ready cmds, envd bundle digest)
    .artifacts/<fingerprint> sealed already?    -> reuse it (a cache hit)
    else unpack layers into .artifacts/.tmp-*/rootfs (images/unpack.py), put the bundle at
         ENVD_BUNDLE_DIR_IN_SANDBOX, write artifact.json (the seal), rename into place
    publish <name>/template.json pointing at the artifact

Every step works in temporary directories beside their destination and renames at the end:
an interrupted build leaves only ``.tmp-*`` directories, which no sandbox can start from
and the next build removes. ADRs 0006 (artifact format) and 0007 (injection).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hutch.node.envd_bundle_files import copy_with_digest
from hutch.node.images.layout import Image, ImageConfig, read_image
from hutch.node.images.source import check_source, copy_to_layout
from hutch.node.images.unpack import apply_layer
from hutch.node.templates.artifact import (
    ARTIFACTS_DIR,
    SEAL_FILE,
    VERSIONS_DIR,
    ImageRun,
    TemplateArtifact,
    TemplateNotFoundError,
    publish,
    read_artifact,
    staging_dir,
    validate_template_name,
)
from hutch.shared.errors import AlreadyExistsError, HutchError, ImageError
from hutch.shared.paths import ENVD_BUNDLE_DIR_IN_SANDBOX, ENVD_PORT

#: Bumped whenever the way an artifact is made from the same inputs changes.
ARTIFACT_VERSION: Final = 1

#: ``progress(stage, done, total)``: stage is "copy", "layer i/n", "inject", "seal".
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageTemplateOptions:
    """What a user chooses when importing an image (the CLI's and REST's options)."""

    name: str
    inject_envd: bool = False
    #: The bundle to inject; None: the node's own.
    envd_path: Path | None = None
    cpu_count: float = 1.0
    memory_mb: int = 512
    #: Its sandboxes' disk (MiB, ADR 0023); None: the node's default. Not part of the
    #: fingerprint (a sandbox's disk, not the artifact's content).
    disk_mb: int | None = None
    start_cmd: str | None = None
    ready_cmd: str | None = None
    #: Build steps (E2B template builds); part of the fingerprint.
    steps: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportResult:
    """A published template and whether its artifact came from the cache."""

    template: TemplateArtifact
    fingerprint: str
    cache_hit: bool
    envd_sha256: str | None


def fingerprint(
    *,
    image_digest: str,
    steps: Sequence[Mapping[str, Any]],
    start_cmd: str | None,
    ready_cmd: str | None,
    envd_sha256: str | None,
) -> str:
    """The artifact's address: SHA-256 over everything that shapes the sealed tree.

    CPU and memory are left out (they shape sandboxes, not the artifact); the envd bundle's
    digest is in when it is injected, and only then.
    """
    doc = {
        "version": ARTIFACT_VERSION,
        "image": image_digest,
        "steps": list(steps),
        "start_cmd": start_cmd,
        "ready_cmd": ready_cmd,
        "envd_sha256": envd_sha256,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def import_image(
    source: str,
    options: ImageTemplateOptions,
    *,
    templates_dir: Path,
    envd_bundle: Path,
    progress: Progress | None = None,
) -> ImportResult:
    """Build (or reuse) the artifact for ``source`` and publish template ``options.name``.

    Raises:
        AlreadyExistsError: a template of that name exists.
        ImageError: the source is unknown, unreadable, corrupt, unsafe or for another
            architecture; nothing is published and no artifact is left.
        HutchError: the envd bundle cannot be read (its digest is never left out).
    """
    report = progress or (lambda _stage, _done, _total: None)
    name = validate_template_name(options.name)
    check_source(source)
    if (templates_dir / name / "template.json").exists():
        raise AlreadyExistsError(f"template {name!r} already exists")
    started = time.monotonic()
    templates_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    for stale in templates_dir.glob(f".tmp-import-{name}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # an interrupted earlier import
    work = templates_dir / f".tmp-import-{name}-{os.getpid()}"
    work.mkdir(mode=0o700)
    try:
        report("copy", 0, 1)
        layout = copy_to_layout(source, work / "layout")
        image = read_image(layout)
        report("copy", 1, 1)
        envd_sha: str | None = None
        bundle_copy = work / "envd"
        if options.inject_envd:
            bundle = options.envd_path or envd_bundle
            report("inject", 0, 1)
            try:
                envd_sha = copy_with_digest(Path(bundle), bundle_copy)
            except (OSError, ValueError) as exc:
                raise HutchError(
                    f"cannot read the envd bundle at {bundle} to inject it: {exc}"
                ) from exc
        fp = fingerprint(
            image_digest=image.config_digest, steps=options.steps,
            start_cmd=options.start_cmd, ready_cmd=options.ready_cmd, envd_sha256=envd_sha,
        )  # fmt: skip
        artifacts = templates_dir / ARTIFACTS_DIR
        sealed = artifacts / fp
        cache_hit = (sealed / SEAL_FILE).is_file()
        if not cache_hit:
            _build_artifact(image, sealed, bundle_copy=bundle_copy if envd_sha else None,
                            fp=fp, source=source, envd_sha=envd_sha, report=report)  # fmt: skip
        seal = json.loads((sealed / SEAL_FILE).read_text())
        run = ImageRun(
            argv=tuple(image.config.entrypoint) + tuple(image.config.cmd),
            uid=seal["uid"], gid=seal["gid"], user_name=seal["user_name"],
            workdir=seal["workdir"],
            exposed_ports=tuple(image.config.exposed_ports)
            + ((f"{ENVD_PORT}/tcp",) if envd_sha else ()),
            envd_injected=envd_sha is not None,
            start_cmd=options.start_cmd, ready_cmd=options.ready_cmd,
            digest=image.manifest_digest,
        )  # fmt: skip
        template = TemplateArtifact(
            name=name,
            rootfs=sealed / "rootfs",
            default_user=seal["user_name"] or "root",
            workdir=seal["workdir"],
            env=dict(image.config.env),
            cpu_count=options.cpu_count,
            memory_mb=options.memory_mb,
            disk_mb=options.disk_mb,
            build={"builder": "image", "source": source, "image_digest": image.manifest_digest,
                   "config_digest": image.config_digest, "fingerprint": fp,
                   "envd_injected": envd_sha is not None, "envd_sha256": envd_sha,
                   "cache_hit": cache_hit, "seconds": round(time.monotonic() - started, 3),
                   "config": image.config.to_json()},
            image=run,
            artifact=fp,
        )  # fmt: skip
        staging = staging_dir(templates_dir, name)
        try:
            if (templates_dir / name / "template.json").exists():
                raise AlreadyExistsError(f"template {name!r} already exists")
            published = publish(staging, template, templates_dir=templates_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return ImportResult(
            template=published, fingerprint=fp, cache_hit=cache_hit, envd_sha256=envd_sha
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build_artifact(
    image: Image,
    sealed: Path,
    *,
    bundle_copy: Path | None,
    fp: str,
    source: str,
    envd_sha: str | None,
    report: Progress,
) -> None:
    artifacts = sealed.parent
    artifacts.mkdir(mode=0o755, parents=True, exist_ok=True)
    for stale in artifacts.glob(f".tmp-{fp}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = artifacts / f".tmp-{fp}-{os.getpid()}"
    tmp.mkdir(mode=0o755)
    try:
        root = tmp / "rootfs"
        root.mkdir(mode=0o755)
        total = len(image.layers)
        for i, layer in enumerate(image.layers, 1):
            stage = f"layer {i}/{total}"
            report(stage, 0, layer.size)
            apply_layer(
                root, layer.path, media_type=layer.media_type, digest=layer.digest,
                diff_id=layer.diff_id, what=f"{stage} {layer.digest[:19]}",
                progress=lambda done, stage=stage, size=layer.size: report(stage, done, size),
            )  # fmt: skip
        if bundle_copy is not None:
            report("inject", 0, 1)
            inject_bundle(root, bundle_copy)
            report("inject", 1, 1)
        report("seal", 0, 1)
        uid, gid, user_name = resolve_user(root, image.config.user)
        workdir = image.config.workdir or "/"
        seal = {
            "fingerprint": fp, "version": ARTIFACT_VERSION, "source": source,
            "image_digest": image.manifest_digest, "config_digest": image.config_digest,
            "envd_sha256": envd_sha, "uid": uid, "gid": gid, "user_name": user_name,
            "workdir": workdir, "format": "dir", "sealed_at": time.time(),
        }  # fmt: skip
        (tmp / SEAL_FILE).write_text(json.dumps(seal, indent=1) + "\n")
        os.chmod(tmp, 0o555)  # nothing is added to a sealed artifact
        os.rename(tmp, sealed)
        report("seal", 1, 1)
    except BaseException:
        _rmtree(tmp)
        raise


def inject_bundle(root: Path, bundle_copy: Path) -> None:
    """Move the (already copied and hashed) bundle to ``ENVD_BUNDLE_DIR_IN_SANDBOX``.

    Whatever the image has on that path, or on its parents, is replaced by real
    directories: a symlink there must not redirect the bundle outside the tree.
    """
    current = root
    parts = [p for p in ENVD_BUNDLE_DIR_IN_SANDBOX.split("/") if p]
    for part in parts[:-1]:
        current = current / part
        st = _lstat(current)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            os.unlink(current)
            st = None
        if st is None:
            os.mkdir(current, 0o755)
            os.chmod(current, 0o755)
    target = current / parts[-1]
    if _lstat(target) is not None:
        _rmtree(target) if target.is_dir() and not target.is_symlink() else os.unlink(target)
    os.rename(bundle_copy, target)


def resolve_user(root: Path, user: str) -> tuple[int, int, str | None]:
    """The image's ``User`` (``name``, ``uid``, ``name:group``, ``uid:gid``) as ids and name.

    Looked up in the tree's own ``/etc/passwd`` and ``/etc/group`` (never through a
    symlink). A numeric user without an entry keeps its ids and has no name.
    """
    spec_user, _, spec_group = user.partition(":")
    passwd = _read_table(root, "etc/passwd")
    groups = _read_table(root, "etc/group")
    if not spec_user:
        spec_user = "root"
    entry = next(
        (e for e in passwd if e[0] == spec_user or (spec_user.isdigit() and e[2] == spec_user)),
        None,
    )
    if entry is not None and len(entry) >= 4 and entry[2].isdigit() and entry[3].isdigit():
        name: str | None = entry[0]
        uid, gid = int(entry[2]), int(entry[3])
    elif spec_user.isdigit():
        name, uid, gid = None, int(spec_user), int(spec_user)
    elif spec_user == "root":
        name, uid, gid = "root", 0, 0
    else:
        raise ImageError(f"the image's user {user!r} is not in its /etc/passwd")
    if spec_group:
        if spec_group.isdigit():
            gid = int(spec_group)
        else:
            group = next((g for g in groups if g[0] == spec_group), None)
            if group is None or len(group) < 3 or not group[2].isdigit():
                raise ImageError(f"the image's group {spec_group!r} is not in its /etc/group")
            gid = int(group[2])
    return uid, gid, name


def _read_table(root: Path, rel: str) -> list[list[str]]:
    path = root
    for part in rel.split("/"):
        path = path / part
        st = _lstat(path)
        if st is None or stat.S_ISLNK(st.st_mode):
            return []
    if not stat.S_ISREG(os.lstat(path).st_mode):
        return []
    text = path.read_text(errors="replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _rmtree(path: Path) -> None:
    """Remove a tree even where its own modes forbid writing (a sealed artifact is 0555)."""
    if not os.path.lexists(path):
        return
    with contextlib.suppress(OSError, NotImplementedError):
        os.chmod(path, 0o755, follow_symlinks=False)
    shutil.rmtree(path, ignore_errors=True)


# ---- listing and deletion -------------------------------------------------------------------


def delete_template(templates_dir: Path, name: str) -> None:
    """Remove template ``name`` and every artifact no template or mounted sandbox uses.

    Running sandboxes keep their overlay over the artifact; it is only pruned once no
    mount refers to it.
    """
    validate_template_name(name)
    target = templates_dir / name
    if not (target / "template.json").is_file():
        raise TemplateNotFoundError(f"template {name!r} not found")
    aside = templates_dir / f".deleted-{name}-{os.getpid()}"
    os.rename(target, aside)
    shutil.rmtree(aside, ignore_errors=True)
    shutil.rmtree(templates_dir / VERSIONS_DIR / name, ignore_errors=True)
    prune_artifacts(templates_dir)


def published_chains(templates_dir: Path) -> list[str]:
    """The step-cache keys every published template's build recorded (``build.chain``),
    so that one template's build does not prune another's step cache."""
    keys: list[str] = []
    for meta in sorted(templates_dir.glob("*/template.json")):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            chain = json.loads(meta.read_text()).get("build", {}).get("chain") or ()
            keys += [k for k in chain if isinstance(k, str)]
    return keys


def prune_artifacts(templates_dir: Path, *, keep: Collection[str] = ()) -> list[str]:
    """Delete sealed artifacts that no template references and no mount uses (nor the
    fingerprints in ``keep``: a build's step cache)."""
    artifacts = templates_dir / ARTIFACTS_DIR
    if not artifacts.is_dir():
        return []
    used: set[str] = set(keep)
    for entry in templates_dir.iterdir():
        if entry.name.startswith("."):
            continue
        try:
            artifact = read_artifact(entry)
        except (HutchError, OSError, ValueError, KeyError):
            continue
        if artifact.artifact:
            used.add(artifact.artifact)
        for tree in artifact.lowers:  # a snapshot's base tree may be an artifact too
            if tree.parent.parent == artifacts:
                used.add(tree.parent.name)
    versions = templates_dir / VERSIONS_DIR
    for kept in versions.glob("*/*/template.json") if versions.is_dir() else ():
        with contextlib.suppress(OSError, ValueError):
            fingerprint = json.loads(kept.read_text()).get("artifact")
            if isinstance(fingerprint, str) and fingerprint:
                used.add(fingerprint)
    in_use = _mounted_lowers()
    removed = []
    for sealed in artifacts.iterdir():
        if sealed.name.startswith(".") or sealed.name in used:
            continue
        if any(str(sealed) in lower for lower in in_use):
            continue
        _rmtree(sealed)
        removed.append(sealed.name)
    return removed


_LOWERDIR_RE: Final = re.compile(r"lowerdir=([^,]*)")


def _mounted_lowers() -> list[str]:
    try:
        text = Path("/proc/self/mountinfo").read_text(errors="replace")
    except OSError:
        return []
    return _LOWERDIR_RE.findall(text)


def image_config_of(template: TemplateArtifact) -> ImageConfig | None:
    """The image config recorded at import (for listings), if the template came from one."""
    config = template.build.get("config")
    return ImageConfig.from_json(config) if isinstance(config, dict) else None
