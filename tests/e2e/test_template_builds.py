"""E2B SDK template builds through ``hutch serve``: ``Template().from_template(...)`` with
several steps, ``Template.build`` with streamed logs, the step cache on a rebuild, a failing
step, and sandboxes created from the result."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2b import BuildException, Sandbox, Template

from tests.imagebuild import BUSYBOX_CONFIG, busybox_layers, write_docker_archive

from .serveproc import Serve

pytestmark = pytest.mark.root


def make(ctx: Path, last_step: str) -> Template:
    return (
        Template(file_context_path=str(ctx))
        .from_template("busybox")
        .set_envs({"STAGE": "built"})
        .run_cmd("echo one > /tmp/one.txt")
        .copy("hello.txt", "/home/user/")
        .set_workdir("/home/user")
        .run_cmd(last_step)
        .set_start_cmd("echo started > /tmp/started", "test -f /tmp/started")
    )


def test_sdk_build_runs_steps_and_rebuild_hits_the_cache(serve: Serve, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello from copy\n")
    logs: list[str] = []
    Template.build(make(ctx, "echo two > two.txt"), "sdkbuilt",
                   on_build_logs=lambda e: logs.append(e.message))  # fmt: skip
    assert any("[4] RUN echo two" in line for line in logs), logs
    assert not any(line.startswith("CACHED") for line in logs), logs

    sbx = Sandbox.create("sdkbuilt", timeout=120)
    try:
        assert sbx.files.read("/tmp/one.txt") == "one\n"
        assert sbx.files.read("/home/user/hello.txt") == "hello from copy\n"
        assert sbx.files.read("/home/user/two.txt") == "two\n"
        assert sbx.commands.run("echo $STAGE").stdout == "built\n"
        assert sbx.commands.run("pwd").stdout == "/home/user\n"
        assert sbx.files.read("/tmp/started") == "started\n"
    finally:
        sbx.kill()

    logs.clear()
    Template.build(make(ctx, "echo three > three.txt"), "sdkbuilt",
                   on_build_logs=lambda e: logs.append(e.message))  # fmt: skip
    for cached in ("CACHED [1] RUN", "CACHED [2] COPY", "CACHED [3] WORKDIR"):
        assert any(line.startswith(cached) for line in logs), (cached, logs)
    assert any("[4] RUN echo three" in line and not line.startswith("CACHED") for line in logs)
    sbx = Sandbox.create("sdkbuilt", timeout=120)
    try:
        assert sbx.files.read("/home/user/three.txt") == "three\n"
        assert sbx.commands.run("test -e /home/user/two.txt || echo new").stdout == "new\n"
    finally:
        sbx.kill()

    # A failing step: the build fails with its output; the previous version still serves.
    logs.clear()
    with pytest.raises(BuildException, match="exit code 3"):
        Template.build(make(ctx, "echo broken-step-output; exit 3"), "sdkbuilt",
                       on_build_logs=lambda e: logs.append(e.message))  # fmt: skip
    assert "broken-step-output" in logs, logs
    sbx = Sandbox.create("sdkbuilt", timeout=120)
    try:
        assert sbx.files.read("/home/user/three.txt") == "three\n"
    finally:
        sbx.kill()
    assert Template.exists("sdkbuilt")


def test_sdk_build_from_an_imported_image(serve: Serve, tmp_path: Path) -> None:
    """``from_image`` resolves an image hutch imported; the image's command stays the main
    process of the built template's sandboxes, beside the build's own changes."""
    archive = write_docker_archive(tmp_path / "img.tar", busybox_layers(), **BUSYBOX_CONFIG)
    serve.hutch("template", "create-from-image", f"docker-archive:{archive}", "--name",
                "bbforbuild")  # fmt: skip
    template = (
        Template()
        .from_image("bbforbuild")
        .set_user("root")
        .run_cmd("echo extra > /srv/app/extra.txt")
        .set_user("app")
        .set_workdir("/srv/app")
    )
    Template.build(template, "bbbuilt")
    sbx = Sandbox.create("bbbuilt", timeout=120)
    try:
        main = sbx.commands.run("cat /tmp/main.txt").stdout
        assert main == "uid=1001 gid=1001 cwd=/srv/app greeting=bonjour args=first second\n"
        assert sbx.files.read("/srv/app/extra.txt") == "extra\n"
        assert sbx.commands.run("whoami").stdout == "app\n"
    finally:
        sbx.kill()
    with pytest.raises(BuildException, match=r"cannot read image"):
        Template.build(Template().from_image("nosuch/image:1"), "bbnosuch")
    # What it made goes: the imported image's artifact is the one test_image_templates'
    # image makes, and a template kept here would hold it for that module's tests.
    serve.hutch("template", "delete", "bbbuilt")
    serve.hutch("template", "delete", "bbforbuild")


def test_sdk_tags_pin_a_build(serve: Serve, tmp_path: Path) -> None:
    """A tag names one build: ``name:v1`` starts that version after newer builds, and its
    artifact outlives the prune a template delete runs until the template itself goes."""

    def version(n: int) -> Template:
        return Template().from_template("busybox").run_cmd(f"echo {n} > /tmp/version")

    first = Template.build(version(1), "tagged:v1")
    second = Template.build(version(2), "tagged", tags=["v2"])
    assert first.build_id != second.build_id
    Template.build(version(3), "tagged")  # "default" moves; v1 and v2 stay
    tags = {t.tag: t.build_id for t in Template.get_tags("tagged")}
    assert tags["v1"] == first.build_id and tags["v2"] == second.build_id
    Template.assign_tags("tagged:v1", "prod")

    # Another template's delete prunes unreferenced artifacts; the kept builds stay.
    Template.build(version(4), "throwaway")
    serve.hutch("template", "delete", "throwaway")

    for name, want in (("tagged:v1", "1"), ("tagged:prod", "1"), ("tagged:v2", "2"),
                       ("tagged", "3"), ("tagged:default", "3")):  # fmt: skip
        sbx = Sandbox.create(name, timeout=120)
        try:
            assert sbx.files.read("/tmp/version") == want + "\n", name
            assert sbx.get_info().template_id == "tagged"
        finally:
            sbx.kill()

    # A filesystem pause reboots the sandbox on the same build, after yet another build.
    sbx = Sandbox.create("tagged:v1", timeout=120)
    try:
        Template.build(version(5), "tagged")
        assert sbx.pause(mode="filesystem") is True
        again = Sandbox.connect(sbx.sandbox_id)
        assert again.files.read("/tmp/version") == "1\n"
    finally:
        sbx.kill()

    # A build from a tag starts from that build.
    Template.build(Template().from_template("tagged:v1").run_cmd("echo derived > /tmp/d"), "der")
    sbx = Sandbox.create("der", timeout=120)
    try:
        assert sbx.commands.run("cat /tmp/version /tmp/d").stdout == "1\nderived\n"
    finally:
        sbx.kill()

    Template.remove_tags("tagged", ["v1", "prod"])
    with pytest.raises(Exception, match="not found"):
        Sandbox.create("tagged:v1", timeout=30)
