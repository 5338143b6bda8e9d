"""Importing OCI images into sealed template artifacts: real skopeo, real layers, as root.

No runtime here (tests/e2e/test_image_templates.py starts sandboxes from these); this is
the unpacker's semantics, its refusals, the fingerprint cache and the bad-input paths.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from hutch.node.envd_bundle_files import content_digest
from hutch.node.images.unpack import UnsafeLayerError
from hutch.node.templates.artifact import ARTIFACTS_DIR, read_artifact
from hutch.node.templates.image import (
    ImageTemplateOptions,
    delete_template,
    import_image,
)
from hutch.shared.errors import AlreadyExistsError, ImageError
from tests.conftest import machine_lacks
from tests.imagebuild import (
    BUSYBOX,
    BUSYBOX_CONFIG,
    Layer,
    busybox_layers,
    write_docker_archive,
    write_oci,
)


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    if os.geteuid() != 0:
        machine_lacks("image import needs root (ownership, device nodes)")
    if shutil.which("skopeo") is None:
        machine_lacks("skopeo is missing (apt-get install skopeo)")
    if not BUSYBOX.is_file():
        machine_lacks("busybox-static is missing")


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    return tmp_path / "templates"


def fake_bundle(path: Path, marker: str = "one") -> Path:
    """Something shaped like envd's bundle (bin/ and files) for fingerprint tests."""
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python3").write_text(f"#!/bin/sh\n# {marker}\n")
    (path / "bin" / "python3").chmod(0o755)
    (path / "bundle.json").write_text("{}")
    return path


def do_import(source: str, templates: Path, bundle: Path | None = None, **options: object):
    return import_image(
        source, ImageTemplateOptions(**options),  # type: ignore[arg-type]
        templates_dir=templates, envd_bundle=bundle or Path("/nonexistent"),
    )  # fmt: skip


def test_import_docker_archive_applies_layers_in_order(tmp_path: Path, templates: Path) -> None:
    archive = write_docker_archive(tmp_path / "img.tar", busybox_layers(), **BUSYBOX_CONFIG)
    result = do_import(f"docker-archive:{archive}", templates, name="bb")
    root = result.template.rootfs
    assert root == templates / ARTIFACTS_DIR / result.fingerprint / "rootfs"
    assert not (root / "etc/removed").exists()  # whiteout
    assert os.listdir(root / "opt/data") == ["new.txt"]  # opaque directory
    assert os.readlink(root / "etc/motd.link") == "motd"  # symlink
    assert (root / "etc/motd").stat().st_ino == (root / "etc/motd.hard").stat().st_ino
    assert os.getxattr(root / "etc/motd", "user.origin") == b"layer2"
    st = (root / "srv/app/run.sh").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1001, 1001, 0o755)
    assert (root / "srv/app/suid").stat().st_mode & 0o7777 == 0o4755
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    run = result.template.image
    assert run is not None
    assert run.argv == ("/srv/app/run.sh", "first", "second")
    assert (run.uid, run.gid, run.user_name, run.workdir) == (1001, 1001, "app", "/srv/app")
    assert run.exposed_ports == ("8080/tcp",)
    assert run.envd_injected is False
    assert result.template.env == {"PATH": "/bin", "GREETING": "bonjour"}
    assert result.template.default_user == "app"
    # Published: readable back from disk exactly.
    assert read_artifact(templates / "bb") == result.template


def test_import_oci_layout_with_tag(tmp_path: Path, templates: Path) -> None:
    layout = write_oci(tmp_path / "oci", busybox_layers(), **BUSYBOX_CONFIG)
    result = do_import(f"oci:{layout}:latest", templates, name="bb-oci")
    assert (result.template.rootfs / "opt/data/new.txt").is_file()
    assert result.template.image is not None
    assert result.template.image.argv[0] == "/srv/app/run.sh"


def test_injection_copies_the_bundle_and_fingerprints_it(tmp_path: Path, templates: Path) -> None:
    archive = write_docker_archive(tmp_path / "img.tar", busybox_layers(), **BUSYBOX_CONFIG)
    bundle = fake_bundle(tmp_path / "bundle")
    source = f"docker-archive:{archive}"
    first = do_import(source, templates, bundle, name="a", inject_envd=True)
    assert first.envd_sha256 == content_digest(bundle)
    injected = first.template.rootfs / ".hutch/envd"
    assert (injected / "bin/python3").read_text() == (bundle / "bin/python3").read_text()
    assert first.template.image is not None and first.template.image.envd_injected
    assert "49983/tcp" in first.template.image.exposed_ports

    same = do_import(source, templates, bundle, name="b", inject_envd=True)
    assert same.cache_hit and same.fingerprint == first.fingerprint

    (bundle / "bin/python3").write_text("#!/bin/sh\n# changed\n")
    changed = do_import(source, templates, bundle, name="c", inject_envd=True)
    assert not changed.cache_hit and changed.fingerprint != first.fingerprint
    assert changed.envd_sha256 == content_digest(bundle)

    plain = do_import(source, templates, name="d")
    assert plain.fingerprint not in (first.fingerprint, changed.fingerprint)
    assert not (plain.template.rootfs / ".hutch").exists()


def test_unreadable_bundle_fails_the_build(tmp_path: Path, templates: Path) -> None:
    archive = write_docker_archive(tmp_path / "img.tar", busybox_layers(), **BUSYBOX_CONFIG)
    with pytest.raises(Exception, match="cannot read the envd bundle"):
        do_import(f"docker-archive:{archive}", templates, tmp_path / "missing",
                  name="x", inject_envd=True)  # fmt: skip
    assert_nothing_left(templates, "x")


def test_same_name_twice_is_refused(tmp_path: Path, templates: Path) -> None:
    archive = write_docker_archive(tmp_path / "img.tar", busybox_layers(), **BUSYBOX_CONFIG)
    do_import(f"docker-archive:{archive}", templates, name="dup")
    with pytest.raises(AlreadyExistsError):
        do_import(f"docker-archive:{archive}", templates, name="dup")


def test_delete_prunes_unused_artifacts_only(tmp_path: Path, templates: Path) -> None:
    archive = write_docker_archive(tmp_path / "img.tar", busybox_layers(), **BUSYBOX_CONFIG)
    a = do_import(f"docker-archive:{archive}", templates, name="one")
    do_import(f"docker-archive:{archive}", templates, name="two")
    delete_template(templates, "one")
    assert (templates / ARTIFACTS_DIR / a.fingerprint).is_dir()  # "two" still uses it
    delete_template(templates, "two")
    assert not (templates / ARTIFACTS_DIR / a.fingerprint).exists()


# ---- bad input: a clear message and nothing half-made ---------------------------------------


def assert_nothing_left(templates: Path, name: str) -> None:
    assert not (templates / name).exists()
    leftovers = [p.name for p in templates.rglob("*")] if templates.exists() else []
    assert [p for p in leftovers if p not in (ARTIFACTS_DIR,)] == [], leftovers


def test_unknown_transport(templates: Path) -> None:
    with pytest.raises(ImageError, match="unknown image transport"):
        do_import("ftp://example/image", templates, name="x")
    assert_nothing_left(templates, "x")


def test_corrupt_and_truncated_archives(tmp_path: Path, templates: Path) -> None:
    archive = write_docker_archive(tmp_path / "img.tar", busybox_layers(), **BUSYBOX_CONFIG)
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ImageError, match="cannot read image"):
        do_import(f"docker-archive:{truncated}", templates, name="x")
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar archive" * 100)
    with pytest.raises(ImageError, match="cannot read image"):
        do_import(f"docker-archive:{garbage}", templates, name="x")
    assert_nothing_left(templates, "x")


def test_missing_manifest(tmp_path: Path, templates: Path) -> None:
    archive = write_docker_archive(tmp_path / "img.tar", busybox_layers(), **BUSYBOX_CONFIG)
    stripped = tmp_path / "nomanifest.tar"
    with tarfile.open(archive) as src, tarfile.open(stripped, "w") as dst:
        for member in src.getmembers():
            if member.name != "manifest.json":
                dst.addfile(member, src.extractfile(member))
    with pytest.raises(ImageError, match="manifest"):
        do_import(f"docker-archive:{stripped}", templates, name="x")
    layout = write_oci(tmp_path / "oci", busybox_layers(), **BUSYBOX_CONFIG)
    index = json.loads((layout / "index.json").read_text())
    manifest = layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]
    manifest.unlink()
    with pytest.raises(ImageError):
        do_import(f"oci:{layout}:latest", templates, name="x")
    assert_nothing_left(templates, "x")


def test_layer_digest_mismatch(tmp_path: Path, templates: Path) -> None:
    layout = write_oci(tmp_path / "oci", busybox_layers(), **BUSYBOX_CONFIG)
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(
        (layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text()
    )
    layer_blob = layout / "blobs/sha256" / manifest["layers"][1]["digest"][7:]
    tampered = gzip.decompress(layer_blob.read_bytes()).replace(b"hello from", b"HACKED from")
    layer_blob.write_bytes(gzip.compress(tampered))
    with pytest.raises(ImageError, match="digest"):
        do_import(f"oci:{layout}:latest", templates, name="x")
    assert_nothing_left(templates, "x")


def test_foreign_architecture(tmp_path: Path, templates: Path) -> None:
    archive = write_docker_archive(
        tmp_path / "arm.tar", busybox_layers(), **{**BUSYBOX_CONFIG, "architecture": "arm64"}
    )
    with pytest.raises(ImageError, match="arm64"):
        do_import(f"docker-archive:{archive}", templates, name="x")
    assert_nothing_left(templates, "x")


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (Layer().file("../escape.txt", b"x"), r"escapes the rootfs"),
        (Layer().file("a/../../escape.txt", b"x"), r"escapes the rootfs"),
        (Layer().symlink("evil", "/tmp").file("evil/pwned", b"x"), r"through the symlink"),
        (Layer().symlink("up", "../../../..").file("up/etc/pwned", b"x"), r"through the symlink"),
        (Layer().hardlink("shadow", "../../../etc/shadow"), r"escapes the rootfs"),
        (Layer().symlink("evil", "/etc").hardlink("stolen", "evil/shadow"), r"through the symlink"),
        (Layer().symlink("evil", "/").whiteout("evil/etc"), r"through the symlink"),
    ],
)  # fmt: skip
def test_malicious_layers_are_rejected(
    tmp_path: Path, templates: Path, layer: Layer, message: str
) -> None:
    outside = Path("/tmp/pwned")
    archive = write_docker_archive(tmp_path / "evil.tar", [busybox_layers()[0], layer],
                                   **BUSYBOX_CONFIG)  # fmt: skip
    with pytest.raises(UnsafeLayerError, match=message):
        do_import(f"docker-archive:{archive}", templates, name="evil")
    assert not outside.exists()
    assert not (tmp_path / "escape.txt").exists()
    assert_nothing_left(templates, "evil")


def test_oci_archive_source(tmp_path: Path, templates: Path) -> None:
    layout = write_oci(tmp_path / "oci", busybox_layers(), **BUSYBOX_CONFIG)
    archive = tmp_path / "image.oci.tar"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", f"oci:{layout}:latest",
                    f"oci-archive:{archive}"], check=True)  # fmt: skip
    result = do_import(f"oci-archive:{archive}", templates, name="ociarch")
    assert (result.template.rootfs / "opt/data/new.txt").is_file()


def test_interrupted_build_leaves_nothing_usable(tmp_path: Path, templates: Path) -> None:
    """^C in the middle of a layer: no template, no sealed artifact, only ``.tmp-*``
    leftovers that the next build of the same name clears (and then succeeds)."""
    archive = write_docker_archive(tmp_path / "img.tar", busybox_layers(), **BUSYBOX_CONFIG)

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage.startswith("layer 2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_image(f"docker-archive:{archive}", ImageTemplateOptions(name="cut"),
                     templates_dir=templates, envd_bundle=Path("/nonexistent"),
                     progress=interrupt)  # fmt: skip
    assert not (templates / "cut").exists()
    artifacts = templates / ARTIFACTS_DIR
    assert not artifacts.exists() or all(p.name.startswith(".") for p in artifacts.iterdir())
    result = do_import(f"docker-archive:{archive}", templates, name="cut")
    assert not result.cache_hit and (result.template.rootfs / "srv/app/run.sh").is_file()
