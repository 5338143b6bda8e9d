"""Templates from OCI images, end to end: ``hutch template`` CLI and REST import into the
serve's home, then the official SDK starts sandboxes from them through ``hutch serve``.

With and without envd injection: envd answers, and the image's own command is the main
process with the image's env, working directory and user.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox

from tests.conftest import machine_lacks
from tests.imagebuild import (
    BUSYBOX_CONFIG,
    busybox_layers,
    write_docker_archive,
    write_oci,
    write_tree_docker_archive,
)

from .serveproc import Serve

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("images") / "busybox-app.tar"
    return write_docker_archive(out, busybox_layers(), **BUSYBOX_CONFIG)


def hutch(serve: Serve, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hutch", *args, "--home", str(serve.home)],
        env=serve.env, capture_output=True, text=True, check=False,
    )  # fmt: skip


def check_image_sandbox(sbx: Sandbox, *, injected: bool) -> None:
    # envd answers (the SDK works at all) and the image's command ran as the image says.
    main = sbx.commands.run("cat /tmp/main.txt").stdout
    assert main == "uid=1001 gid=1001 cwd=/srv/app greeting=bonjour args=first second\n"
    pid = sbx.commands.run("cat /tmp/main.pid").stdout.strip()
    status = sbx.commands.run(f"cat /proc/{pid}/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Name"] == "sleep"  # run.sh exec'd it: same process
    assert fields["PPid"] == "1"  # a direct child of PID 1 (tini): the main process
    assert fields["Uid"].split()[0] == "1001"
    env = sbx.commands.run(f"cat /proc/{pid}/environ").stdout.split("\0")
    assert "GREETING=bonjour" in env
    # The layers as applied: whiteout, opaque dir, symlink, hard link.
    assert sbx.commands.run("ls /opt/data").stdout.split() == ["new.txt"]
    assert sbx.commands.run("test -e /etc/removed || echo gone").stdout == "gone\n"
    assert sbx.commands.run("readlink /etc/motd.link").stdout == "motd\n"
    assert sbx.commands.run("stat -c %h /etc/motd").stdout == "2\n"
    # envd's bundle: inside the template when injected, a read-only runtime mount otherwise.
    mounts = sbx.commands.run("cat /proc/mounts").stdout
    assert (" /.hutch/envd " in mounts) is (not injected)
    assert sbx.files.read("/etc/motd") == "hello from the image\n"


@pytest.mark.parametrize("injected", [False, True], ids=["mounted", "injected"])
def test_cli_import_then_sdk_sandbox(serve: Serve, archive: Path, injected: bool) -> None:
    name = f"bbapp-{'inj' if injected else 'mnt'}"
    args = ["template", "create-from-image", f"docker-archive:{archive}", "--name", name,
            "--cpu", "1", "--memory-mb", "256", "--json"]  # fmt: skip
    if injected:
        args += ["--enable-inject-envd", "--envd-path", str(serve.envd_bundle)]
    done = hutch(serve, *args)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["envdInjected"] is injected
    listed = [
        json.loads(line) for line in hutch(serve, "template", "list", "--json").stdout.splitlines()
    ]
    assert name in {t["name"] for t in listed}

    sbx = Sandbox.create(name, timeout=120)
    try:
        check_image_sandbox(sbx, injected=injected)
        info = sbx.get_info()
        assert info.template_id == name
        assert info.cpu_count == 1 and info.memory_mb == 256
    finally:
        sbx.kill()

    again = hutch(serve, *args)
    assert again.returncode != 0 and "already exists" in again.stderr
    assert hutch(serve, "template", "delete", name).returncode == 0
    assert name not in hutch(serve, "template", "list", "--json").stdout
    # Its host state is gone (the session's finalizer counts every leak; warm pool members
    # of other templates make a count here meaningless).
    assert not (serve.home / "sandboxes" / sbx.sandbox_id).exists()


def test_rest_import_oci_layout_and_errors(serve: Serve, tmp_path: Path) -> None:
    layout = write_oci(tmp_path / "oci", busybox_layers(), **BUSYBOX_CONFIG)
    key = serve.hutch("keys", "create").strip()
    api = httpx.Client(base_url=serve.api_url, headers={"X-API-Key": key}, timeout=300)
    body = {"source": f"oci:{layout}:latest", "name": "bbrest", "enableInjectEnvd": True,
            "memoryMB": 128}  # fmt: skip
    r = api.post("/templates/from-image", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["templateID"] == "bbrest" and r.json()["envdInjected"] is True
    assert "bbrest" in {t["templateID"] for t in api.get("/templates").json()}
    assert api.post("/templates/from-image", json=body).status_code == 409
    bad = api.post("/templates/from-image", json={**body, "name": "x1", "source": "ftp://x"})
    assert bad.status_code == 400 and "transport" in bad.json()["message"]
    sneaky = api.post("/templates/from-image", json={**body, "name": "x2", "envdPath": "/etc"})
    assert sneaky.status_code == 400

    sbx = Sandbox.create("bbrest", timeout=120)
    try:
        check_image_sandbox(sbx, injected=True)
    finally:
        sbx.kill()
    assert api.delete("/templates/bbrest").status_code == 204
    assert api.delete("/templates/bbrest").status_code == 404


BASE_ROOTFS = Path("/var/lib/hutch/templates/base/rootfs")


def test_debian_image_with_injected_envd(serve: Serve, tmp_path: Path) -> None:
    """The base template's Debian tree as an image: envd injected, the image's command runs
    as ``user`` in its workdir with its env, and the SDK works as on ``base``."""
    if not (BASE_ROOTFS / "usr/bin/python3").exists():
        machine_lacks(f"the base template is not built at {BASE_ROOTFS} (install.sh)")
    archive = write_tree_docker_archive(
        BASE_ROOTFS, tmp_path / "debian.tar", cmd=["sleep", "infinity"], user="user",
        workdir="/home/user", env=["PATH=/usr/local/bin:/usr/bin:/bin", "FLAVOUR=debian"],
    )  # fmt: skip
    done = hutch(serve, "template", "create-from-image", f"docker-archive:{archive}",
                 "--name", "debimg", "--enable-inject-envd", "--envd-path",
                 str(serve.envd_bundle), "--memory-mb", "512", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    sbx = Sandbox.create("debimg", timeout=120)
    try:
        assert sbx.commands.run("whoami").stdout == "user\n"
        assert sbx.commands.run("pwd").stdout == "/home/user\n"
        assert sbx.commands.run("echo $FLAVOUR").stdout == "debian\n"
        assert sbx.commands.run("python3 -c 'print(6*7)'").stdout == "42\n"
        main = sbx.commands.run("ps -o user=,ppid=,args= -C sleep").stdout.split()
        assert main == ["user", "1", "sleep", "infinity"]
        sbx.files.write("hello.txt", "hi")
        assert sbx.files.read("/home/user/hello.txt") == "hi"
    finally:
        sbx.kill()
    assert hutch(serve, "template", "delete", "debimg").returncode == 0


def test_start_and_ready_commands(serve: Serve, archive: Path) -> None:
    """The start command runs in the background as the image's user; the sandbox is ready
    only once the ready command succeeds (here: once the start command wrote its file)."""
    done = hutch(serve, "template", "create-from-image", f"docker-archive:{archive}",
                 "--name", "bbstart", "--start-cmd", "sleep 1; id -u > /tmp/started",
                 "--ready-cmd", "test -s /tmp/started", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    sbx = Sandbox.create("bbstart", timeout=120)
    try:
        # No waiting here: create returned only after the ready command passed.
        assert sbx.files.read("/tmp/started") == "1001\n"
        assert sbx.commands.run("cat /tmp/main.txt").exit_code == 0
    finally:
        sbx.kill()
    assert hutch(serve, "template", "delete", "bbstart").returncode == 0


def test_delete_keeps_the_artifact_of_running_sandboxes(serve: Serve, archive: Path) -> None:
    done = hutch(serve, "template", "create-from-image", f"docker-archive:{archive}",
                 "--name", "bbdel", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    artifact = serve.home / "templates" / ".artifacts" / json.loads(done.stdout)["fingerprint"]
    sbx = Sandbox.create("bbdel", timeout=120)
    try:
        assert hutch(serve, "template", "delete", "bbdel").returncode == 0
        assert artifact.is_dir()  # its overlay still uses it
        assert sbx.files.read("/etc/motd") == "hello from the image\n"
    finally:
        sbx.kill()
    # The next prune (any delete) removes it once nothing mounts it.
    assert hutch(serve, "template", "create-from-image", f"docker-archive:{archive}",
                 "--name", "bbdel2", "--enable-inject-envd").returncode == 0  # fmt: skip
    assert hutch(serve, "template", "delete", "bbdel2").returncode == 0
    assert not artifact.exists()
