"""Image sources in skopeo's transport syntax, copied into a local OCI layout with skopeo.

Accepted: ``docker-archive:PATH`` (``docker save``), ``oci-archive:PATH``, ``oci:DIR[:TAG]``
and ``docker://REF`` (a registry, wherever one is reachable). skopeo does the format
conversion; hutch reads and checks the resulting layout itself (``layout.py``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Final

from hutch.shared.errors import ImageError, NotFoundError

TRANSPORTS: Final = ("docker-archive:", "oci-archive:", "oci:", "docker://")
_LOCAL_TAG: Final = "hutch"


def check_source(source: str) -> str:
    """Return ``source`` if its transport is supported and its local path exists."""
    if not source.startswith(TRANSPORTS):
        raise ImageError(
            f"unknown image transport in {source!r}: use docker-archive:PATH, "
            "oci-archive:PATH, oci:DIR[:TAG] or docker://REF"
        )
    if source.startswith("docker://"):
        if len(source) == len("docker://"):
            raise ImageError("docker:// needs an image reference")
        return source
    transport, _, rest = source.partition(":")
    path = rest.split(":", 1)[0] if transport == "oci" else rest
    if not path or not Path(path).exists():
        raise ImageError(f"{source!r}: {path or '(empty path)'} does not exist")
    return source


def copy_to_layout(source: str, layout: Path, *, timeout_s: float = 3600.0) -> Path:
    """``skopeo copy SOURCE oci:LAYOUT:hutch``; return ``layout``.

    Raises :class:`ImageError` with skopeo's own message when it refuses the source (corrupt
    or truncated archive, missing manifest, digest mismatch, unreachable registry).
    """
    check_source(source)
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise NotFoundError("skopeo is missing (apt-get install skopeo)")
    argv = [skopeo, "--insecure-policy", "copy", "--quiet", source, f"oci:{layout}:{_LOCAL_TAG}"]
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"skopeo copy {source} took longer than {timeout_s:.0f}s") from exc
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise ImageError(f"cannot read image {source}: {' '.join(message)[-1500:]}")
    return layout
