"""Build real OCI images in tests, with no registry and no docker: layers are tar files.

``Layer`` collects entries (files, dirs, symlinks, hard links, whiteouts); :func:`write_oci`
writes an OCI image layout (gzipped layers), :func:`write_docker_archive` a ``docker save``
tarball. The layers from :func:`busybox_layers` make a small but complete image from the
host's busybox-static, with a whiteout, an opaque directory, a symlink and a hard link.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")


@dataclass
class Layer:
    """One layer's entries, in order."""

    members: list[tuple[tarfile.TarInfo, bytes | None]] = field(default_factory=list)

    def dir(self, name: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Layer:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, mode, uid, gid, 1
        self.members.append((info, None))
        return self

    def file(
        self, name: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0,
        xattrs: dict[str, str] | None = None,
    ) -> Layer:  # fmt: skip
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, gid, 1
        if xattrs:
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
        self.members.append((info, data))
        return self

    def symlink(self, name: str, target: str) -> Layer:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, 1
        self.members.append((info, None))
        return self

    def hardlink(self, name: str, target: str) -> Layer:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mode, info.mtime = tarfile.LNKTYPE, target, 0o644, 1
        self.members.append((info, None))
        return self

    def whiteout(self, path: str) -> Layer:
        head, _, base = path.rpartition("/")
        return self.file(f"{head}/.wh.{base}" if head else f".wh.{base}", b"")

    def opaque(self, directory: str) -> Layer:
        return self.file(f"{directory}/.wh..wh..opq", b"")

    def tar_bytes(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for info, data in self.members:
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()


def config_doc(
    diff_ids: list[str], *, entrypoint: list[str] | None = None, cmd: list[str] | None = None,
    env: list[str] | None = None, workdir: str = "", user: str = "",
    exposed: list[str] | None = None, architecture: str = "amd64",
) -> dict[str, Any]:  # fmt: skip
    cfg: dict[str, Any] = {"Env": env or ["PATH=/usr/local/bin:/usr/bin:/bin"]}
    if entrypoint is not None:
        cfg["Entrypoint"] = entrypoint
    if cmd is not None:
        cfg["Cmd"] = cmd
    if workdir:
        cfg["WorkingDir"] = workdir
    if user:
        cfg["User"] = user
    if exposed:
        cfg["ExposedPorts"] = {p: {} for p in exposed}
    return {
        "architecture": architecture, "os": "linux", "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "hutch tests"} for _ in diff_ids],
    }  # fmt: skip


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_oci(out: Path, layers: list[Layer], *, gzip_layers: bool = True, **config: Any) -> Path:
    """Write an OCI image layout at ``out`` (tag ``latest``); return ``out``."""
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (out / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    descs, diff_ids = [], []
    for layer in layers:
        raw = layer.tar_bytes()
        diff_ids.append(_sha(raw))
        blob = gzip.compress(raw, mtime=0) if gzip_layers else raw
        (blobs / _sha(blob)[7:]).write_bytes(blob)
        media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzip_layers else "")
        descs.append({"mediaType": media, "digest": _sha(blob), "size": len(blob)})
    cfg = json.dumps(config_doc(diff_ids, **config)).encode()
    (blobs / _sha(cfg)[7:]).write_bytes(cfg)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _sha(cfg), "size": len(cfg)},
        "layers": descs,
    }).encode()  # fmt: skip
    (blobs / _sha(manifest)[7:]).write_bytes(manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": _sha(manifest), "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
    }  # fmt: skip
    (out / "index.json").write_text(json.dumps(index))
    return out


def write_docker_archive(out: Path, layers: list[Layer], **config: Any) -> Path:
    """Write a ``docker save``-style tarball at ``out``; return ``out``."""
    files: list[tuple[str, bytes]] = []
    names, diff_ids = [], []
    for layer in layers:
        raw = layer.tar_bytes()
        diff_ids.append(_sha(raw))
        name = f"{_sha(raw)[7:]}/layer.tar"
        names.append(name)
        files.append((name, raw))
    cfg = json.dumps(config_doc(diff_ids, **config)).encode()
    cfg_name = f"{_sha(cfg)[7:]}.json"
    files.append((cfg_name, cfg))
    manifest = [{"Config": cfg_name, "RepoTags": ["hutch-test:latest"], "Layers": names}]
    files.append(("manifest.json", json.dumps(manifest).encode()))
    with tarfile.open(out, "w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1
            tar.addfile(info, io.BytesIO(data))
    return out


def busybox_layers() -> list[Layer]:
    """Three layers of a busybox image with a whiteout, an opaque dir, a symlink, a hard link.

    Result: ``/bin/busybox`` and applet symlinks for sh, ls, cat, id, sleep, env, pwd...;
    ``/bin/bash`` a wrapper (the SDK runs commands through bash); users root and ``app``
    (uid 1001, home ``/home/app``); ``/etc/removed`` gone (whiteout); ``/opt/data`` holding
    only ``new.txt`` (opaque); ``/etc/motd.link -> motd`` (symlink); ``/etc/motd.hard`` a
    hard link of ``/etc/motd``; ``/srv/app/run.sh`` the image's command.
    """
    busybox = BUSYBOX.read_bytes()
    base = Layer()
    for d in ("bin", "etc", "home", "opt", "opt/data", "proc", "sys", "dev", "run", "var"):
        base.dir(d)
    base.dir("tmp", mode=0o1777).dir("root", mode=0o700)
    base.file("bin/busybox", busybox, mode=0o755)
    for applet in (
        "sh",
        "ls",
        "cat",
        "id",
        "sleep",
        "env",
        "pwd",
        "echo",
        "ps",
        "stat",
        "readlink",
        "getfattr",
        "true",
        "test",
        "mkdir",
        "touch",
        "rm",
        "whoami",
    ):
        base.symlink(f"bin/{applet}", "busybox")
    base.file("bin/bash", b'#!/bin/sh\nexec /bin/sh "$@"\n', mode=0o755)
    base.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
              b"app:x:1001:1001::/home/app:/bin/sh\n")  # fmt: skip
    base.file("etc/group", b"root:x:0:\napp:x:1001:\n")
    base.file("etc/removed", b"this file is deleted by a whiteout\n")
    base.file("opt/data/old.txt", b"hidden by the opaque directory\n")
    second = Layer()
    second.dir("home/app", uid=1001, gid=1001)
    second.file("etc/motd", b"hello from the image\n", xattrs={"user.origin": "layer2"})
    second.hardlink("etc/motd.hard", "etc/motd")
    second.symlink("etc/motd.link", "motd")
    second.dir("srv/app", uid=1001, gid=1001)
    second.file("srv/app/suid", b"x", mode=0o4755)
    third = Layer()
    third.whiteout("etc/removed")
    third.dir("opt/data")
    third.opaque("opt/data")
    third.file("opt/data/new.txt", b"after the opaque whiteout\n")
    # The image's command: records who/where/what it runs as, then stays up.
    third.file(
        "srv/app/run.sh",
        b"#!/bin/sh\n"
        b'echo "uid=$(id -u) gid=$(id -g) cwd=$(pwd) greeting=$GREETING args=$*" > /tmp/main.txt\n'
        b"echo $$ > /tmp/main.pid\n"
        b"exec sleep 100000\n",
        mode=0o755, uid=1001, gid=1001,
    )  # fmt: skip
    return [base, second, third]


BUSYBOX_CONFIG: dict[str, Any] = {
    "entrypoint": ["/srv/app/run.sh"],
    "cmd": ["first", "second"],
    "env": ["PATH=/bin", "GREETING=bonjour"],
    "workdir": "/srv/app",
    "user": "app",
    "exposed": ["8080/tcp"],
}


def tree_layer(root: Path) -> Layer:
    """One layer holding the whole tree at ``root`` (e.g. the Debian base rootfs)."""
    layer = Layer()
    seen: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames) + sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(full)
            if os.path.islink(full):
                layer.symlink(rel, os.readlink(full))
            elif os.path.isdir(full):
                layer.dir(rel, mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid)
            elif os.path.isfile(full):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in seen:
                    layer.hardlink(rel, seen[key])
                    continue
                seen[key] = rel
                layer.file(rel, Path(full).read_bytes(), mode=st.st_mode & 0o7777,
                           uid=st.st_uid, gid=st.st_gid)  # fmt: skip
    return layer


def write_tree_docker_archive(root: Path, out: Path, **config: Any) -> Path:
    """A one-layer ``docker save`` tarball of the tree at ``root``, streamed to disk."""
    layer_path = out.with_suffix(".layer.tar")
    with tarfile.open(layer_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(os.listdir(root)):
            tar.add(root / entry, arcname=entry)
    digest = hashlib.sha256()
    with layer_path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    diff_id = "sha256:" + digest.hexdigest()
    cfg = json.dumps(config_doc([diff_id], **config)).encode()
    cfg_name = f"{_sha(cfg)[7:]}.json"
    manifest = [{"Config": cfg_name, "RepoTags": ["hutch-debian:test"],
                 "Layers": [f"{diff_id[7:]}/layer.tar"]}]  # fmt: skip
    with tarfile.open(out, "w") as tar:
        tar.add(layer_path, arcname=f"{diff_id[7:]}/layer.tar")
        for name, data in ((cfg_name, cfg), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1
            tar.addfile(info, io.BytesIO(data))
    layer_path.unlink()
    return out
