"""Templates from OCI images, end to end: ``hutch template`` CLI and REST import into the
serve's home, then the official SDK starts sandboxes from them through ``hutch serve``.

With and without envd injection: envd answers, and the image's own command is the main
process with the image's env, working directory and user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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

from .serveproc import Serve, free_port

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
    assert name in {t["templateID"] for t in listed}

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


def test_cli_acts_on_the_named_instance(serve: Serve, archive: Path) -> None:
    """``HUTCH_HOME`` / ``HUTCH_API_PORT`` (or ``--home`` / ``--api-port``) name the serve the
    template commands talk to; its API's errors are the commands' errors."""
    env = {**serve.env, "HUTCH_HOME": str(serve.home)}
    run = [sys.executable, "-m", "hutch", "template"]
    args = ["create-from-image", f"docker-archive:{archive}", "--name", "bbnamed"]
    done = subprocess.run([*run, *args], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "template bbnamed ready" in done.stdout
    assert "seal" in done.stderr  # the progress display (on stderr)
    listed = subprocess.run([*run, "list", "--json"], env=env, capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    assert "bbnamed" in {json.loads(line)["templateID"] for line in listed.splitlines()}
    # The instance's API sees it: the commands did not act on files behind its back.
    key = serve.hutch("keys", "create").strip()
    r = httpx.get(f"{serve.api_url}/templates", headers={"X-API-Key": key})
    assert "bbnamed" in {t["templateID"] for t in r.json()}

    # Another port (nothing listens there): a clear failure, nothing done.
    for args in (
        ["list"],
        ["delete", "bbnamed"],
        ["create-from-image", f"docker-archive:{archive}", "--name", "bbnowhere"],
    ):
        elsewhere = subprocess.run([*run, *args, "--api-port", str(free_port())], env=env,
                                   capture_output=True, text=True, check=False)  # fmt: skip
        assert elsewhere.returncode == 2, elsewhere.stderr
        assert "cannot reach the API at http://127.0.0.1:" in elsewhere.stderr
    assert "bbnowhere" not in hutch(serve, "template", "list", "--json").stdout

    # The API's messages: a bad source, a bad name, a taken name, an unknown template.
    bad = hutch(serve, "template", "create-from-image", "ftp://nowhere", "--name", "bbbad")
    assert bad.returncode == 1 and "hutch: 400:" in bad.stderr and "transport" in bad.stderr
    missing = hutch(serve, "template", "create-from-image", "docker-archive:/nonexistent.tar",
                    "--name", "bbmissing")  # fmt: skip
    assert missing.returncode == 1 and "hutch: 400:" in missing.stderr, missing.stderr
    taken = hutch(serve, "template", "create-from-image", f"docker-archive:{archive}",
                  "--name", "bbnamed")  # fmt: skip
    assert taken.returncode == 1 and "hutch: 409:" in taken.stderr
    assert "already exists" in taken.stderr
    assert "Traceback" not in bad.stderr + missing.stderr + taken.stderr

    assert hutch(serve, "template", "delete", "bbnamed").returncode == 0
    gone = hutch(serve, "template", "delete", "bbnamed")
    assert gone.returncode == 1 and "hutch: 404:" in gone.stderr


def test_rest_import_streams_progress(serve: Serve, archive: Path) -> None:
    """``Accept: application/x-ndjson``: progress lines, then the result or the error."""
    key = serve.hutch("keys", "create").strip()
    headers = {"X-API-Key": key, "Accept": "application/x-ndjson"}
    body = {"source": f"docker-archive:{archive}", "name": "bbstream"}

    def events(payload: dict[str, object]) -> list[dict[str, object]]:
        with httpx.stream("POST", f"{serve.api_url}/templates/from-image", json=payload,
                          headers=headers, timeout=300) as r:  # fmt: skip
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/x-ndjson")
            return [json.loads(line) for line in r.iter_lines() if line]

    got = events(body)
    stages = {e["stage"] for e in got if e["type"] == "progress"}
    assert any(str(s).startswith("layer ") for s in stages) and "seal" in stages, stages
    assert got[-1]["type"] == "result"
    assert got[-1]["template"]["templateID"] == "bbstream"  # type: ignore[index]
    assert [e["type"] for e in got].count("result") == 1
    # Errors end the stream with the status and message a plain request gets.
    assert events(body)[-1] == {"type": "error", "code": 409,
                                "message": "template 'bbstream' already exists"}  # fmt: skip
    bad = events({**body, "name": "bbstream2", "source": "ftp://x"})[-1]
    assert bad["type"] == "error" and bad["code"] == 400 and "transport" in str(bad["message"])
    # A body that does not parse is refused before any stream starts.
    r = httpx.post(f"{serve.api_url}/templates/from-image", json={"name": 1}, headers=headers)
    assert r.status_code == 400 and r.json()["code"] == 400
    assert httpx.delete(f"{serve.api_url}/templates/bbstream",
                        headers={"X-API-Key": key}).status_code == 204  # fmt: skip

    # A client that leaves after the first line does not stop the import halfway.
    with httpx.stream("POST", f"{serve.api_url}/templates/from-image", timeout=300,
                      json={**body, "name": "bbleft"}, headers=headers) as r:  # fmt: skip
        first = json.loads(next(r.iter_lines()))
        assert first["type"] in ("progress", "result")
    for _ in range(600):
        names = {t["templateID"] for t in httpx.get(f"{serve.api_url}/templates",
                                                    headers={"X-API-Key": key}).json()}  # fmt: skip
        if "bbleft" in names:
            break
        time.sleep(0.1)
    assert "bbleft" in names
    sbx = Sandbox.create("bbleft", timeout=120)
    try:
        assert sbx.files.read("/etc/motd") == "hello from the image\n"
    finally:
        sbx.kill()
    assert httpx.delete(f"{serve.api_url}/templates/bbleft",
                        headers={"X-API-Key": key}).status_code == 204  # fmt: skip


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
    # A host path needs the home's root-only CLI key as proof of host access.
    forged = api.post("/templates/from-image", json={**body, "name": "x3", "envdPath": "/etc"},
                      headers={"X-Hutch-Host-Key": key})  # fmt: skip
    assert forged.status_code == 400 and "envdPath" in forged.json()["message"]

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


def test_delete_keeps_the_artifact_of_running_sandboxes(
    serve: Serve, archive: Path, tmp_path: Path
) -> None:
    # An image of its own (one more variable in its config, so its own artifact): with the
    # module's image, a template another module imported from the same image and kept
    # (test_template_builds ran first) held the artifact and the prune rightly kept it.
    config = {**BUSYBOX_CONFIG, "env": [*BUSYBOX_CONFIG["env"], "IMAGE_OF=test_delete_keeps"]}
    own = write_docker_archive(tmp_path / "own.tar", busybox_layers(), **config)
    done = hutch(serve, "template", "create-from-image", f"docker-archive:{own}",
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


def test_template_asks_for_a_larger_disk_up_to_the_node_limit(serve: Serve, archive: Path) -> None:
    """An imported template's ``diskSizeMB`` is what its sandboxes get (ADR 0023); one above
    the node's limit is refused with 400 naming it, before anything is imported."""
    limit = serve.node_settings().max_disk_mb
    too_big = hutch(serve, "template", "create-from-image", f"docker-archive:{archive}",
                    "--name", "bbhuge", "--disk-size-mb", str(limit + 1))  # fmt: skip
    assert too_big.returncode != 0 and f"limit of {limit} MB" in too_big.stderr, too_big.stderr
    done = hutch(serve, "template", "create-from-image", f"docker-archive:{archive}",
                 "--name", "bbdisk", "--disk-size-mb", "2048", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    key = {"X-API-Key": os.environ["E2B_API_KEY"]}
    shown = httpx.get(f"{serve.api_url}/templates", headers=key).json()
    assert {t["templateID"]: t["diskSizeMB"] for t in shown}["bbdisk"] == 2048
    sbx = Sandbox.create("bbdisk", timeout=120)
    try:
        assert httpx.get(f"{serve.api_url}/sandboxes/{sbx.sandbox_id}",
                         headers=key).json()["diskSizeMB"] == 2048  # fmt: skip
        size = int(sbx.commands.run("df -k / | tail -1").stdout.split()[1])
        assert 1900 * 1024 < size <= 2048 * 1024, size
    finally:
        sbx.kill()
    assert hutch(serve, "template", "delete", "bbdisk").returncode == 0
