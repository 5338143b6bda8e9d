"""Shared read-only template directories (issue 18 gap 9): another home's templates are
offered beside the node's own, shadowed by own ones, hidden by a whiteout on delete, and
never written."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from hutch.node.settings import NodeSettings
from hutch.node.templates.artifact import DirTemplateStore, TemplateNotFoundError
from hutch.node.templates.manager import TemplateManager


def _publish(templates: Path, name: str, **extra: object) -> Path:
    (templates / name / "rootfs").mkdir(parents=True)
    data = {
        "format": 1, "name": name, "default_user": "user", "workdir": "/home/user",
        "env": {}, "cpu_count": 1, "memory_mb": 256, **extra,
    }  # fmt: skip
    (templates / name / "template.json").write_text(json.dumps(data))
    return templates / name


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_shared_templates_are_offered_and_own_ones_shadow_them(tmp_path: Path) -> None:
    shared, own = tmp_path / "install" / "templates", tmp_path / "home" / "templates"
    _publish(shared, "base")
    _publish(shared, "busybox")
    _publish(shared, "snap", layers=[str(tmp_path / "layer")])  # the other home's snapshot
    _publish(own, "busybox", memory_mb=128)
    store = DirTemplateStore(own, shared=[shared])

    listed = {t.name: t for t in asyncio.run(store.list())}
    assert sorted(listed) == ["base", "busybox"]
    assert listed["base"].rootfs == shared / "base" / "rootfs"
    assert listed["busybox"].rootfs == own / "busybox" / "rootfs"
    assert listed["busybox"].memory_mb == 128
    assert asyncio.run(store.get("base")).rootfs == shared / "base" / "rootfs"
    with pytest.raises(TemplateNotFoundError):
        asyncio.run(store.get("snap"))
    with pytest.raises(TemplateNotFoundError):
        asyncio.run(store.get("nope"))


def test_deleting_a_shared_template_hides_it_here_and_leaves_it_alone(tmp_path: Path) -> None:
    shared, own = tmp_path / "install" / "templates", tmp_path / "home" / "templates"
    _publish(shared, "base")
    before = _tree(shared)
    builder = TemplateManager(
        templates_dir=own, envd_bundle=tmp_path / "envd", shared_templates=[shared]
    )
    asyncio.run(builder.delete("base"))

    assert _tree(shared) == before
    store = DirTemplateStore(own, shared=[shared])
    assert asyncio.run(store.list()) == []
    with pytest.raises(TemplateNotFoundError):
        asyncio.run(store.get("base"))
    # Another home sharing the same directory still sees it.
    other = DirTemplateStore(tmp_path / "other", shared=[shared])
    assert [t.name for t in asyncio.run(other.list())] == ["base"]
    # An own template of that name (an import after the delete) is served again.
    _publish(own, "base")
    assert asyncio.run(store.get("base")).rootfs == own / "base" / "rootfs"
    # Deleting it removes the own one and the shared one stays hidden.
    asyncio.run(builder.delete("base"))
    assert not (own / "base").exists()
    assert asyncio.run(store.list()) == []
    assert _tree(shared) == before


def test_settings_share_the_install_templates_unless_it_is_the_own_home(tmp_path: Path) -> None:
    assert NodeSettings(home=tmp_path).shared_templates_dirs == (Path("/var/lib/hutch/templates"),)
    assert NodeSettings(home=Path("/var/lib/hutch")).shared_templates_dirs == ()
    assert NodeSettings(home=tmp_path, shared_templates_dir="").shared_templates_dirs == ()  # type: ignore[arg-type]
    other = tmp_path / "t"
    assert NodeSettings(home=tmp_path, shared_templates_dir=other).shared_templates_dirs == (other,)
    with pytest.raises(ValidationError, match="absolute"):
        NodeSettings(home=tmp_path, shared_templates_dir=Path("rel"))


def test_settings_read_the_shared_directory_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUTCH_NODE_SHARED_TEMPLATES_DIR", "")
    assert NodeSettings(home=tmp_path).shared_templates_dirs == ()
    monkeypatch.setenv("HUTCH_NODE_SHARED_TEMPLATES_DIR", str(tmp_path / "x"))
    assert NodeSettings(home=tmp_path).shared_templates_dirs == (tmp_path / "x",)
