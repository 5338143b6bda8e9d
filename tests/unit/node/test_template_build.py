"""Step builds (``node/templates/build.py``) without a sandbox: the fingerprint computed
ahead of a build is the one it publishes, start/ready commands are inherited from the base
template when a build sets neither (E2B's finalize phase), and the alias is published."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from hutch.node.runtime.base import ExecResult
from hutch.node.sandbox.models import RunningSandbox, SandboxRequest
from hutch.node.templates.artifact import (
    ImageRun,
    TemplateArtifact,
    publish,
    read_artifact,
    staging_dir,
)
from hutch.node.templates.build import BuildSpec, build_fingerprint, build_template


class _NoSandboxes:
    """State-only steps never boot a build sandbox; any call is a failure."""

    async def create(self, request: SandboxRequest) -> RunningSandbox:
        raise AssertionError("no sandbox expected")

    async def kill(self, sandbox_id: str) -> bool:
        raise AssertionError("no sandbox expected")

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
        raise AssertionError("no sandbox expected")

    def rootfs_path(self, sandbox_id: str) -> Path:
        raise AssertionError("no sandbox expected")


def _base(templates: Path, *, start: str | None, ready: str | None) -> TemplateArtifact:
    staging = staging_dir(templates, "srv")
    (staging / "rootfs" / "etc").mkdir(parents=True)
    (staging / "rootfs" / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (staging / "rootfs" / "etc" / "group").write_text("root:x:0:\n")
    artifact = TemplateArtifact(
        name="srv", rootfs=staging / "rootfs", default_user="root", workdir="/",
        image=ImageRun(start_cmd=start, ready_cmd=ready),
    )  # fmt: skip
    return publish(staging, artifact, templates_dir=templates)


def _build(templates: Path, spec: BuildSpec) -> TemplateArtifact:
    return asyncio.run(
        build_template(spec, sandboxes=_NoSandboxes(), templates_dir=templates, log=lambda *_: None)
    )


def test_build_inherits_start_commands_and_publishes_its_fingerprint(tmp_path: Path) -> None:
    base = _base(tmp_path, start="python3 -m srv", ready="curl -sf localhost:1/health")
    steps = [{"type": "ENV", "args": ["A", "1"]}, {"type": "USER", "args": ["root"]}]
    spec = BuildSpec(name="variant", base=base, steps=steps, alias="variant-alias")

    built = _build(tmp_path, spec)

    assert built.image is not None
    assert (built.image.start_cmd, built.image.ready_cmd) == (
        "python3 -m srv",
        "curl -sf localhost:1/health",
    )
    assert built.build["fingerprint"] == build_fingerprint(spec)
    assert read_artifact(tmp_path / "variant").alias == "variant-alias"
    # Another step, another fingerprint; the same steps, the same one.
    other = replace(spec, steps=[*steps, {"type": "ENV", "args": ["B", "2"]}])
    assert build_fingerprint(other) != build_fingerprint(spec)
    assert build_fingerprint(replace(spec)) == build_fingerprint(spec)


def test_build_own_start_command_replaces_the_base_ones(tmp_path: Path) -> None:
    base = _base(tmp_path, start="old", ready="old-ready")

    own = _build(tmp_path, BuildSpec(name="own", base=base, start_cmd="new"))

    assert own.image is not None
    assert (own.image.start_cmd, own.image.ready_cmd) == ("new", None)
    assert own.alias is None
