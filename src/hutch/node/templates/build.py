"""Template builds from steps (the E2B SDK's ``Template()`` builder), with a per-step cache.

A build starts from a base template (``fromTemplate``, or an imported image for
``fromImage``) and applies the steps in order. ``ENV``, ``WORKDIR`` and ``USER`` change the
build's state; ``RUN`` and ``COPY`` change files. Each step has a cache key, the SHA-256 of
the previous key and the step (for ``COPY``, the uploaded files' hash), so a key names the
whole prefix of the build. After a file-changing step the sandbox's tree is sealed as the
artifact ``.artifacts/<key>`` (ADR 0006); a later build whose prefix matches starts from
the last cached artifact and runs only the rest.

Uncached steps run in one build sandbox (a real sandbox of the node: overlay, netns with
NAT, cgroup limits), ``RUN`` through the runtime's exec as the build's user, in its
workdir, with its env; ``COPY`` extracts the uploaded tar into the sandbox's tree from the
host with the layer unpacker's refusals. A failing step fails the build with its output in
the log; nothing is published, so the previous version of the template stays usable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Protocol

from hutch.node.images.unpack import copy_archive
from hutch.node.runtime.base import ExecResult
from hutch.node.sandbox.models import RunningSandbox, SandboxRequest
from hutch.node.templates.artifact import (
    ARTIFACTS_DIR,
    SEAL_FILE,
    ImageRun,
    TemplateArtifact,
    publish,
    staging_dir,
)
from hutch.node.templates.image import resolve_user
from hutch.shared.errors import HutchError

#: ``log(level, message, step)``; step is E2B's step name ("base", "0", "1", ..., "finalize").
BuildLog = Callable[[str, str, str | None], None]

STEP_TYPES: Final = ("COPY", "ENV", "RUN", "WORKDIR", "USER")
#: How long one RUN step may take (package installs are slow); the runtime's default bound
#: for its own chores is far shorter.
STEP_TIMEOUT_S: Final = 3600.0


class BuildStepError(HutchError):
    """A build step failed; ``step`` names it (E2B's step index as a string)."""

    def __init__(self, message: str, *, step: str) -> None:
        super().__init__(message)
        self.step = step


class BuildSandboxes(Protocol):
    """What a build needs from the node's ``SandboxManager``."""

    async def create(self, request: SandboxRequest) -> RunningSandbox: ...
    async def kill(self, sandbox_id: str) -> bool: ...
    async def exec(
        self,
        sandbox_id: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: tuple[int, int] | None = None,
        timeout_s: float | None = None,
    ) -> ExecResult: ...
    def rootfs_path(self, sandbox_id: str) -> Path: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildSpec:
    """One build: the template to publish and how (E2B's ``TemplateBuildStartV2``)."""

    name: str
    base: TemplateArtifact
    steps: Sequence[Mapping[str, Any]] = ()
    start_cmd: str | None = None
    ready_cmd: str | None = None
    force: bool = False
    cpu_count: float = 1.0
    memory_mb: int = 512
    #: Where uploaded COPY archives are kept, by files hash.
    files_dir: Path = Path("/nonexistent")
    #: A second name the template's store row answers to (``Sandbox.create(alias)``).
    alias: str | None = None


@dataclass
class _State:
    env: dict[str, str]
    workdir: str
    user: str
    artifact: TemplateArtifact
    key: str
    sandbox: str | None = None
    cached: list[int] = field(default_factory=list)
    #: Cache keys of the file-changing steps so far (their sealed artifacts).
    chain: list[str] = field(default_factory=list)


async def build_template(
    spec: BuildSpec, *, sandboxes: BuildSandboxes, templates_dir: Path, log: BuildLog
) -> TemplateArtifact:
    """Run ``spec``'s steps (cache first) and publish template ``spec.name``."""
    base = spec.base
    state = _State(
        env=dict(base.env),
        workdir=base.workdir,
        user=base.default_user,
        artifact=base,
        key=_base_key(base),
    )
    log("info", f"FROM {base.name} ({state.key[:12]})", "base")
    try:
        for index, step in enumerate(spec.steps):
            await _step(
                spec, state, index, step, sandboxes=sandboxes, templates_dir=templates_dir, log=log
            )
        log("info", "Finalizing the template", "finalize")
        return await asyncio.to_thread(_publish, spec, state, templates_dir)
    finally:
        if state.sandbox is not None:
            await sandboxes.kill(state.sandbox)


async def _step(
    spec: BuildSpec,
    state: _State,
    index: int,
    step: Mapping[str, Any],
    *,
    sandboxes: BuildSandboxes,
    templates_dir: Path,
    log: BuildLog,
) -> None:
    name = str(index)
    kind, args = _advance(state, index, step)
    described = f"{kind} {' '.join(args)}".strip()
    if not _changes_files(kind, args):
        log("info", f"[{index}] {described}", name)
        return
    sealed = templates_dir / ARTIFACTS_DIR / state.key
    if (sealed / SEAL_FILE).is_file() and not (spec.force or step.get("force")):
        log("info", f"CACHED [{index}] {described}", name)
        state.artifact = _artifact_at(state.artifact, sealed)
        state.cached.append(index)
        if state.sandbox is not None:  # the cache is ahead of the running sandbox
            await sandboxes.kill(state.sandbox)
            state.sandbox = None
        return
    log("info", f"[{index}] {described}", name)
    if state.sandbox is None:
        state.sandbox = f"build-{uuid.uuid4().hex[:12]}"
        await sandboxes.create(
            SandboxRequest(
                sandbox_id=state.sandbox,
                template=spec.name,
                artifact=state.artifact,
                cpu_count=spec.cpu_count,
                memory_mb=spec.memory_mb,
            )
        )
    root = sandboxes.rootfs_path(state.sandbox)
    uid, gid, _ = await asyncio.to_thread(resolve_user, root, state.user)
    if kind == "WORKDIR":
        result = await sandboxes.exec(
            state.sandbox, ["/bin/sh", "-c", 'mkdir -p "$1"', "sh", args[0]], user=(uid, gid)
        )
        _check(result, index, described, log)
    elif kind == "RUN":
        cmd_user = args[1] if len(args) > 1 and args[1] else state.user
        uid, gid, _ = await asyncio.to_thread(resolve_user, root, cmd_user)
        result = await sandboxes.exec(
            state.sandbox,
            ["/bin/sh", "-c", args[0] if args else "true"],
            env=state.env,
            cwd=state.workdir,
            user=(uid, gid),
            timeout_s=STEP_TIMEOUT_S,
        )
        for stream, level in ((result.stdout, "info"), (result.stderr, "info")):
            for line in stream.decode(errors="replace").splitlines():
                log(level, line, name)
        _check(result, index, described, log)
    else:  # COPY
        files_hash = str(step.get("filesHash") or "")
        archive = spec.files_dir / files_hash
        if not files_hash or not archive.is_file():
            raise BuildStepError(f"step {index}: files {files_hash!r} were not uploaded", step=name)
        owner = args[2] if len(args) > 2 and args[2] else state.user
        ouid, ogid, _ = await asyncio.to_thread(resolve_user, root, owner)
        mode = int(args[3], 8) if len(args) > 3 and args[3] else None
        dest = args[1] if len(args) > 1 else "."
        if not dest.startswith("/"):
            dest = os.path.join(state.workdir, dest) + ("/" if dest.endswith("/") else "")
        await asyncio.to_thread(
            copy_archive,
            root,
            archive,
            src=args[0] if args else "",
            dest=dest,
            uid=ouid,
            gid=ogid,
            mode=mode,
            what=f"step {index} (COPY)",
        )
    state.artifact = await asyncio.to_thread(_seal_tree, root, templates_dir, state.key, state)


def _advance(state: _State, index: int, step: Mapping[str, Any]) -> tuple[str, list[str]]:
    """Apply ``step`` to the build's state (env, workdir, user) and chain its cache key."""
    kind = str(step.get("type", "")).upper()
    args = [str(a) for a in step.get("args") or []]
    if kind not in STEP_TYPES:
        unknown = f"step {index}: unknown step type {step.get('type')!r}"
        raise BuildStepError(unknown, step=str(index))
    if kind == "ENV":
        for k, v in zip(args[::2], args[1::2], strict=False):
            state.env[k] = v
    elif kind == "WORKDIR":
        state.workdir = args[0] if args else "/"
    elif kind == "USER":
        state.user = args[0] if args else "root"
    record = {
        "type": kind,
        "args": args,
        "filesHash": step.get("filesHash"),
        "env": state.env,
        "workdir": state.workdir,
        "user": state.user,
    }
    state.key = hashlib.sha256(
        (state.key + json.dumps(record, sort_keys=True)).encode()
    ).hexdigest()
    if _changes_files(kind, args):
        state.chain.append(state.key)
    return kind, args


def _changes_files(kind: str, args: Sequence[str]) -> bool:
    return kind in ("RUN", "COPY") or (kind == "WORKDIR" and bool(args))


def build_fingerprint(spec: BuildSpec) -> str:
    """The ``fingerprint`` a build of ``spec`` publishes (its last step's cache key),
    computed without running anything: equal fingerprints mean equal trees."""
    state = _State(
        env=dict(spec.base.env),
        workdir=spec.base.workdir,
        user=spec.base.default_user,
        artifact=spec.base,
        key=_base_key(spec.base),
    )
    for index, step in enumerate(spec.steps):
        _advance(state, index, step)
    return state.key


def _start_commands(spec: BuildSpec) -> tuple[str | None, str | None]:
    """The start and ready commands: the build's own, else its base template's (E2B's
    finalize phase keeps the base's start metadata when a build sets neither)."""
    if spec.start_cmd or spec.ready_cmd:
        return spec.start_cmd, spec.ready_cmd
    previous = spec.base.image
    return (previous.start_cmd, previous.ready_cmd) if previous else (None, None)


def _check(result: ExecResult, index: int, described: str, log: BuildLog) -> None:
    if result.exit_code != 0:
        tail = (result.stderr or result.stdout).decode(errors="replace")[-1500:]
        message = f"step {index} failed with exit code {result.exit_code}: {described}"
        log("error", message, str(index))
        raise BuildStepError(f"{message}\n{tail}".rstrip(), step=str(index))


def _base_key(base: TemplateArtifact) -> str:
    if base.artifact:
        return base.artifact
    # busybox/base: their tree changes only when rebuilt, which replaces template.json.
    meta = base.rootfs.parent / "template.json"
    st = meta.stat()
    return hashlib.sha256(f"{base.name}:{st.st_ino}:{st.st_mtime_ns}".encode()).hexdigest()


def _artifact_at(previous: TemplateArtifact, sealed: Path) -> TemplateArtifact:
    return replace(
        previous, rootfs=sealed / "rootfs", artifact=sealed.name, layers=(), snapshot_of=None
    )


_SKIP_FROM_SANDBOX: Final = ("etc/resolv.conf", "etc/hosts", "etc/hostname")


def _seal_tree(root: Path, templates_dir: Path, key: str, state: _State) -> TemplateArtifact:
    """Copy the build sandbox's tree into the sealed artifact ``.artifacts/<key>``."""
    artifacts = templates_dir / ARTIFACTS_DIR
    artifacts.mkdir(mode=0o755, parents=True, exist_ok=True)
    sealed = artifacts / key
    tmp = artifacts / f".tmp-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o755)
    try:
        # cp -a keeps owners, modes, xattrs, hard links and symlinks; one filesystem only
        # (the sandbox's own /proc, /sys, /dev and bind mounts are not in this namespace).
        result = subprocess.run(
            ["cp", "-a", "--one-file-system", f"{root}/.", str(tmp / "rootfs")],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise HutchError(f"cannot snapshot the build sandbox: {result.stderr[-1000:]}")
        for rel in _SKIP_FROM_SANDBOX:  # the node writes these per sandbox
            (tmp / "rootfs" / rel).unlink(missing_ok=True)
        seal = {
            "fingerprint": key,
            "format": "dir",
            "sealed_at": time.time(),
            "builder": "steps",
            "user": state.user,
        }
        (tmp / SEAL_FILE).write_text(json.dumps(seal, indent=1) + "\n")
        os.chmod(tmp, 0o555)
        if (sealed / SEAL_FILE).is_file():  # a concurrent build sealed the same prefix
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(sealed, ignore_errors=True)
            os.rename(tmp, sealed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _artifact_at(state.artifact, sealed)


def _publish(spec: BuildSpec, state: _State, templates_dir: Path) -> TemplateArtifact:
    base = spec.base
    root = state.artifact.rootfs
    uid, gid, user_name = resolve_user(root, state.user)
    previous = base.image
    start_cmd, ready_cmd = _start_commands(spec)
    run = ImageRun(
        argv=previous.argv if previous else (),
        uid=uid,
        gid=gid,
        user_name=user_name,
        workdir=state.workdir,
        exposed_ports=previous.exposed_ports if previous else (),
        envd_injected=bool(previous and previous.envd_injected),
        start_cmd=start_cmd,
        ready_cmd=ready_cmd,
        digest=previous.digest if previous else "",
    )
    if state.artifact.artifact is None:
        # Only state changed on a directory template (busybox, base): seal a copy of its
        # tree so the new template owns an artifact like every built one.
        state.artifact = _seal_tree(state.artifact.rootfs, templates_dir, state.key, state)
        root = state.artifact.rootfs
    template = TemplateArtifact(
        name=spec.name,
        rootfs=root,
        default_user=user_name or "root",
        workdir=state.workdir,
        env=dict(state.env),
        cpu_count=spec.cpu_count,
        memory_mb=spec.memory_mb,
        build={
            "builder": "steps",
            "base": base.name,
            "fingerprint": state.key,
            "cached_steps": list(state.cached),
            "steps": len(spec.steps),
            "chain": list(state.chain),
        },
        image=run,
        artifact=state.artifact.artifact,
        alias=spec.alias,
    )
    staging = staging_dir(templates_dir, spec.name)
    try:
        return publish(staging, template, templates_dir=templates_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
