"""A snapshot of a sandbox whose template is another home's sealed image artifact (a
shared template, as install.sh's ``code-interpreter-v1`` is to any other home): the
snapshot lives in this home, its base tree in the shared one, and sandboxes boot from it.

Before the fix the snapshot's ``template.json`` named the base's artifact by fingerprint
only, which this home looked up in its own ``.artifacts/``: the snapshot was "not built",
left out of the listing, and its layer was pruned as unreferenced."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from e2b import Sandbox

from hutch.node.templates.image import ImageTemplateOptions, import_image
from tests.imagebuild import BUSYBOX_CONFIG, busybox_layers, write_oci

from .serveproc import SLOT, HostNames, Serve, nodehelpers

pytestmark = pytest.mark.root

#: Distinct from every other test instance's names (none a prefix of another's).
NAMES = HostNames(
    bridge=f"hsd{SLOT}",
    subnet=f"10.221.{33 + SLOT}.0/24",
    netns_prefix=f"hsd{SLOT}-",
    veth_prefix=f"hw{SLOT}",
    nft_table=f"hsd{SLOT}",
    cgroup_parent=f"hsd{SLOT}-{os.getpid()}",
)


def _tree(path: Path) -> list[tuple[str, float]]:
    return sorted((str(p.relative_to(path)), p.lstat().st_mtime) for p in path.rglob("*"))


def test_snapshot_of_a_shared_image_template_boots_on_another_home(tmp_path: Path) -> None:
    envd = nodehelpers.cached_envd_bundle()
    shared = tmp_path / "install" / "templates"  # plays /var/lib/hutch/templates
    layout = write_oci(tmp_path / "oci", busybox_layers(), **BUSYBOX_CONFIG)
    import_image(
        f"oci:{layout}:latest", ImageTemplateOptions(name="bbshared", memory_mb=128),
        templates_dir=shared, envd_bundle=envd,
    )  # fmt: skip
    before = _tree(shared)
    home = tmp_path / "home"
    home.mkdir()
    names = dataclasses.replace(NAMES, extra_env={
        "HUTCH_NODE_SHARED_TEMPLATES_DIR": str(shared), "HUTCH_NODE_POOL_SIZE": "",
        "HUTCH_NODE_ENVD_READY_TIMEOUT_S": "60",
    })  # fmt: skip
    server = Serve(home=home, envd_bundle=envd, names=names)
    key = server.hutch("keys", "create").strip()
    opts = {"api_key": key, "api_url": server.api_url, "sandbox_url": server.sandbox_url}
    with server.running():
        made: list[Sandbox] = []
        sbx = Sandbox.create("bbshared", timeout=120, **opts)
        made.append(sbx)
        try:
            sbx.commands.run("echo kept > /tmp/f && rm /etc/motd.link", user="root")
            snapshot_id = sbx.create_snapshot().snapshot_id
            assert not (home / "templates" / ".artifacts").exists()  # nothing copied
            for _ in range(2):  # the second boot after the node's layer pruning ran
                new = Sandbox.create(snapshot_id, timeout=120, **opts)
                made.append(new)
                assert new.files.read("/tmp/f") == "kept\n"
                assert new.commands.run("test -e /etc/motd.link || echo gone").stdout == "gone\n"
                new.kill()
            # A restart lists the snapshot again (the node reads it back from its home).
            server.stop()
            server.start()
            again = Sandbox.create(snapshot_id, timeout=120, **opts)
            made.append(again)
            assert again.files.read("/tmp/f") == "kept\n"
            assert Sandbox.delete_snapshot(snapshot_id, **opts) is True
        finally:
            for s in made:
                s.kill()
    assert _tree(shared) == before  # the shared home is read, never written
