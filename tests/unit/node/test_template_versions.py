"""Kept template builds (``.versions/<name>/<build>``) for E2B tags: written atomically,
opened as ``name@build``, counted by the artifact pruner, removed with their template."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from hutch.node.templates.artifact import (
    ARTIFACTS_DIR,
    SEAL_FILE,
    DirTemplateStore,
    TemplateNotFoundError,
    keep_version,
)
from hutch.node.templates.image import delete_template, prune_artifacts
from hutch.shared.errors import InvalidArgumentError
from hutch.shared.ids import template_version_name


def _sealed(templates: Path, fingerprint: str) -> None:
    sealed = templates / ARTIFACTS_DIR / fingerprint
    (sealed / "rootfs").mkdir(parents=True)
    (sealed / SEAL_FILE).write_text("{}")


def _publish(templates: Path, name: str, fingerprint: str) -> None:
    (templates / name).mkdir(parents=True, exist_ok=True)
    data = {
        "format": 1, "name": name, "default_user": "root", "workdir": "/", "env": {},
        "cpu_count": 1, "memory_mb": 256, "artifact": fingerprint,
    }  # fmt: skip
    (templates / name / "template.json").write_text(json.dumps(data))


def test_kept_builds_open_prune_and_go_with_their_template(tmp_path: Path) -> None:
    for fp in ("fp1", "fp2", "fp3"):
        _sealed(tmp_path, fp)
    _publish(tmp_path, "app", "fp1")
    keep_version(tmp_path, "app", "b-1")
    _publish(tmp_path, "app", "fp2")
    keep_version(tmp_path, "app", "b-2")
    store = DirTemplateStore(tmp_path)

    old = asyncio.run(store.get(template_version_name("app", "b-1")))
    assert old.rootfs == tmp_path / ARTIFACTS_DIR / "fp1" / "rootfs"
    assert old.name == "app@b-1" and old.artifact == "fp1"
    assert [t.name for t in asyncio.run(store.list())] == ["app"]

    # fp1 is only referenced by the kept build; fp3 by nothing.
    assert prune_artifacts(tmp_path) == ["fp3"]
    assert (tmp_path / ARTIFACTS_DIR / "fp1").is_dir()

    delete_template(tmp_path, "app")
    assert not (tmp_path / ".versions" / "app").exists()
    assert not (tmp_path / ARTIFACTS_DIR / "fp1").exists()


@pytest.mark.parametrize("name", ["app@nope", "app@", "../x@b", "app@../../etc"])
def test_unknown_or_bad_versions_are_not_found(tmp_path: Path, name: str) -> None:
    import asyncio

    _sealed(tmp_path, "fp1")
    _publish(tmp_path, "app", "fp1")
    with pytest.raises(TemplateNotFoundError):
        asyncio.run(DirTemplateStore(tmp_path).get(name))


def test_keep_version_refuses_bad_build_ids(tmp_path: Path) -> None:
    _sealed(tmp_path, "fp1")
    _publish(tmp_path, "app", "fp1")
    with pytest.raises(InvalidArgumentError):
        keep_version(tmp_path, "app", "../escape")
