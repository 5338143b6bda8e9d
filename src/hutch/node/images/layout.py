"""Read an OCI image layout (``index.json``, ``blobs/sha256/...``): manifest, config, layers.

Every JSON document read is checked against the digest that names it, the platform must be
this host's, and the config must list one ``diff_id`` per layer. What a template keeps of
the image is :class:`ImageConfig`; layers are applied by :mod:`hutch.node.images.unpack`.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hutch.shared.errors import ImageError

_DIGEST_RE: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
_INDEX_TYPES: Final = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_GOARCH: Final = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
                  "s390x": "s390x", "riscv64": "riscv64"}  # fmt: skip


def host_architecture() -> str:
    """This host's architecture in OCI (GOARCH) terms."""
    machine = platform.machine()
    return _GOARCH.get(machine, machine)


@dataclass(frozen=True, slots=True, kw_only=True)
class Layer:
    """One layer: its blob, media type, digests and compressed size."""

    path: Path
    media_type: str
    digest: str
    diff_id: str
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageConfig:
    """The parts of an image's config a template keeps (OCI ``config`` object)."""

    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = ""
    user: str = ""
    exposed_ports: Sequence[str] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``template.json``'s ``image`` section)."""
        return {
            "entrypoint": list(self.entrypoint),
            "cmd": list(self.cmd),
            "env": dict(self.env),
            "workdir": self.workdir,
            "user": self.user,
            "exposed_ports": list(self.exposed_ports),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageConfig:
        """Inverse of :meth:`to_json`."""
        return cls(
            entrypoint=tuple(data.get("entrypoint") or ()),
            cmd=tuple(data.get("cmd") or ()),
            env=dict(data.get("env") or {}),
            workdir=str(data.get("workdir") or ""),
            user=str(data.get("user") or ""),
            exposed_ports=tuple(data.get("exposed_ports") or ()),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    """An image in a local OCI layout, checked and ready to unpack."""

    manifest_digest: str
    config_digest: str
    architecture: str
    config: ImageConfig
    layers: Sequence[Layer]


def read_image(layout: Path) -> Image:
    """Open the single image in the OCI layout ``layout``; raise :class:`ImageError`."""
    layout = Path(layout)
    try:
        index = json.loads((layout / "index.json").read_text())
    except FileNotFoundError:
        raise ImageError(f"{layout}: not an OCI layout (no index.json)") from None
    except (ValueError, OSError) as exc:
        raise ImageError(f"{layout}/index.json is unreadable: {exc}") from exc
    manifest_desc = _pick_manifest(layout, index)
    manifest = _read_json_blob(layout, manifest_desc, what="manifest")
    if manifest.get("mediaType") in _INDEX_TYPES or "manifests" in manifest:
        manifest_desc = _pick_manifest(layout, manifest)
        manifest = _read_json_blob(layout, manifest_desc, what="manifest")
    config_desc = manifest.get("config")
    if not isinstance(config_desc, dict):
        raise ImageError("the image manifest has no config")
    config = _read_json_blob(layout, config_desc, what="image config")
    arch = str(config.get("architecture") or "")
    if arch != host_architecture():
        raise ImageError(
            f"the image is for {config.get('os', '?')}/{arch or '?'}, "
            f"this host runs linux/{host_architecture()}"
        )
    if config.get("os", "linux") != "linux":
        raise ImageError(f"the image is for {config.get('os')}, not linux")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    descs = manifest.get("layers") or []
    if len(diff_ids) != len(descs):
        raise ImageError(
            f"the manifest lists {len(descs)} layers but the config {len(diff_ids)} diff_ids"
        )
    layers = []
    for desc, diff_id in zip(descs, diff_ids, strict=True):
        digest = _digest(desc)
        if not isinstance(diff_id, str) or not _DIGEST_RE.match(diff_id):
            raise ImageError(f"invalid diff_id {diff_id!r}")
        path = _blob_path(layout, digest)
        if not path.is_file():
            raise ImageError(f"layer {digest} is missing from the layout")
        layers.append(
            Layer(
                path=path,
                media_type=str(desc.get("mediaType", "")),
                digest=digest,
                diff_id=diff_id,
                size=path.stat().st_size,
            )
        )
    return Image(
        manifest_digest=_digest(manifest_desc),
        config_digest=_digest(config_desc),
        architecture=arch,
        config=_image_config(config.get("config") or {}),
        layers=layers,
    )


def _pick_manifest(layout: Path, index: Mapping[str, Any]) -> Mapping[str, Any]:
    manifests = index.get("manifests")
    if not isinstance(manifests, list) or not manifests:
        raise ImageError(f"{layout}: the index lists no manifest")
    if len(manifests) == 1:
        return manifests[0]  # type: ignore[no-any-return]
    arch = host_architecture()
    for desc in manifests:
        plat = desc.get("platform") or {}
        if plat.get("architecture") == arch and plat.get("os", "linux") == "linux":
            return desc  # type: ignore[no-any-return]
    found = sorted({str((d.get("platform") or {}).get("architecture")) for d in manifests})
    raise ImageError(f"no manifest for linux/{arch} in the index (it has {', '.join(found)})")


def _digest(desc: Mapping[str, Any]) -> str:
    digest = desc.get("digest")
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise ImageError(f"unsupported or invalid digest {digest!r} (sha256 only)")
    return digest


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def _read_json_blob(layout: Path, desc: Mapping[str, Any], *, what: str) -> dict[str, Any]:
    digest = _digest(desc)
    try:
        data = _blob_path(layout, digest).read_bytes()
    except FileNotFoundError:
        raise ImageError(f"the {what} {digest} is missing from the layout") from None
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise ImageError(f"the {what}'s digest {actual} does not match {digest}")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ImageError(f"the {what} {digest} is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ImageError(f"the {what} {digest} is not a JSON object")
    return doc


def _image_config(cfg: Mapping[str, Any]) -> ImageConfig:
    env: dict[str, str] = {}
    for item in cfg.get("Env") or []:
        key, sep, value = str(item).partition("=")
        if sep and key:
            env[key] = value
    return ImageConfig(
        entrypoint=tuple(str(a) for a in cfg.get("Entrypoint") or ()),
        cmd=tuple(str(a) for a in cfg.get("Cmd") or ()),
        env=env,
        workdir=str(cfg.get("WorkingDir") or ""),
        user=str(cfg.get("User") or ""),
        exposed_ports=tuple(sorted(str(p) for p in (cfg.get("ExposedPorts") or {}))),
    )
