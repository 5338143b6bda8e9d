"""A second, independent ``hutch serve`` on a fresh home (issue 18 gap 9): it builds its
envd bundle, starts with
the templates ``install.sh`` built under /var/lib/hutch (shared read-only, no copy), the
official SDK creates ``base`` and ``busybox`` sandboxes from them, and deleting one there
hides it in that instance only: the install's files are untouched, and a restart keeps it
hidden."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox, SandboxException

from tests.conftest import machine_lacks

from .serveproc import INSTALLED_TEMPLATES, SECOND_NAMES, Serve

pytestmark = pytest.mark.root


def _snapshot(template: Path) -> tuple[str, int, float]:
    """What would change if anyone wrote to an installed template."""
    meta = template / "template.json"
    rootfs = template / "rootfs"
    return meta.read_text(), len(list(rootfs.iterdir())), rootfs.stat().st_mtime


@pytest.fixture
def second(tmp_path: Path) -> Iterator[tuple[Serve, str]]:
    for name in ("base", "busybox"):
        if not (INSTALLED_TEMPLATES / name / "template.json").is_file():
            machine_lacks(f"install.sh's {name} template ({INSTALLED_TEMPLATES / name})")
    home = tmp_path / "second-home"  # fresh: no templates, no database, no envd bundle
    # The default bundle place, built by the first start as for any new home.
    server = Serve(home=home, envd_bundle=home / "envd", names=SECOND_NAMES)
    home.mkdir()
    key = server.hutch("keys", "create").strip()
    with server.running():
        yield server, key


def test_a_fresh_home_serves_the_installed_templates_and_deletes_only_its_view(
    second: tuple[Serve, str],
) -> None:
    server, key = second
    opts = {"api_key": key, "api_url": server.api_url, "sandbox_url": server.sandbox_url}
    installed = {n: _snapshot(INSTALLED_TEMPLATES / n) for n in ("base", "busybox")}
    assert not (server.home / "templates" / "base").exists()  # nothing was copied
    assert (server.home / "envd" / "SHA256").is_file()
    assert "building envd's bundle" in server.log_tail()

    listed = httpx.get(f"{server.api_url}/templates", headers={"X-API-Key": key})
    assert listed.status_code == 200
    assert {"base", "busybox"} <= {t["templateID"] for t in listed.json()}
    assert "templates: base busybox" in server.log_tail()

    sbx = Sandbox.create(timeout=120, **opts)  # the default template: base
    try:
        assert sbx.commands.run("cat /etc/debian_version").stdout.startswith("12")
        assert sbx.commands.run("whoami").stdout.strip() == "user"
    finally:
        sbx.kill()
    sbx = Sandbox.create("busybox", timeout=120, **opts)
    try:
        assert sbx.commands.run("echo hi").stdout == "hi\n"
    finally:
        sbx.kill()

    deleted = httpx.delete(f"{server.api_url}/templates/busybox", headers={"X-API-Key": key})
    assert deleted.status_code == 204, deleted.text
    assert {n: _snapshot(INSTALLED_TEMPLATES / n) for n in installed} == installed
    with pytest.raises(SandboxException, match=r"404: Template .busybox. not found"):
        Sandbox.create("busybox", timeout=60, **opts)

    # The whiteout outlives a restart: startup seeding does not bring the row back.
    server.stop()
    server.start()
    listed = httpx.get(f"{server.api_url}/templates", headers={"X-API-Key": key})
    ids = {t["templateID"] for t in listed.json()}
    assert "base" in ids and "busybox" not in ids
    with pytest.raises(SandboxException, match=r"404: Template .busybox. not found"):
        Sandbox.create("busybox", timeout=60, **opts)
    assert {n: _snapshot(INSTALLED_TEMPLATES / n) for n in installed} == installed
