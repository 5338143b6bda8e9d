"""deploy/: the Kubernetes manifests pass the Kubernetes schemas offline
(``kubernetes-validate``, pinned, strict: no unknown fields), give the node exactly the
privileges docs/deploy.md lists and the api and edge none, and every manifest and systemd
unit runs a real ``hutch`` command with options it has and ``HUTCH_*`` settings that exist."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from hutch.api.settings import ApiSettings
from hutch.cli.main import cli
from hutch.cluster.settings import ClusterSettings
from hutch.dashboard.settings import DashboardSettings
from hutch.node.settings import NodeSettings

DEPLOY = Path(__file__).parents[2] / "deploy"
K8S_VERSION = "1.37.0"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def _docs() -> list[dict[str, Any]]:
    return [d for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d]


def _by_kind(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in _docs() if d["kind"] == kind and d["metadata"]["name"] == name)


def _known_settings() -> set[str]:
    names = {
        f"HUTCH_{f.upper()}" for f in (*ApiSettings.model_fields, *ClusterSettings.model_fields)
    }
    names |= {f"HUTCH_DASHBOARD_{f.upper()}" for f in DashboardSettings.model_fields}
    return names | {f"HUTCH_NODE_{f.upper()}" for f in NodeSettings.model_fields}


def _check_command(argv: list[str]) -> None:
    """``hutch <argv>`` parses: the command exists and takes these options."""
    group: click.Group = cli
    command = group.commands[argv[0]]
    command.make_context(argv[0], list(argv[1:]))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_deploy_manifest_passes_the_kubernetes_schema(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_deploy_manifests_cover_every_role() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in _docs()}
    assert {("Deployment", "hutch-api"), ("Deployment", "hutch-proxy"),
            ("DaemonSet", "hutch-node")} <= kinds  # fmt: skip


def test_deploy_node_has_exactly_the_privileges_it_needs() -> None:
    pod = _by_kind("DaemonSet", "hutch-node")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["hostPID"] is True
    assert "hostIPC" not in pod
    (container,) = pod["containers"]
    assert container["securityContext"] == {"privileged": True, "runAsUser": 0}
    paths = {v["hostPath"]["path"] for v in pod["volumes"]}
    assert paths == {"/var/lib/hutch", "/sys/fs/cgroup", "/run/netns"}


@pytest.mark.parametrize("name", ["hutch-api", "hutch-proxy"])
def test_deploy_api_and_edge_run_unprivileged(name: str) -> None:
    pod = _by_kind("Deployment", name)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert not pod.get("hostNetwork") and not pod.get("hostPID")
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["allowPrivilegeEscalation"] is False


def test_deploy_manifests_run_real_commands_with_real_settings() -> None:
    known = _known_settings()
    for doc in _docs():
        if doc["kind"] not in ("Deployment", "DaemonSet"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            _check_command(container["args"])
            names = {e["name"] for e in container["env"]}
            assert names <= known, names - known


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_deploy_systemd_unit_runs_a_real_command(path: Path) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(path.read_text())
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[0] == "/usr/local/bin/hutch"  # where install.sh puts it
    _check_command(argv[1:])
    env = [line.split("=", 2)[1] for line in path.read_text().splitlines()
           if line.startswith("Environment=")]  # fmt: skip
    assert set(env) <= _known_settings()
    example = (DEPLOY / "systemd" / "cluster.env.example").read_text().splitlines()
    names = {line.split("=", 1)[0] for line in example if line and not line.startswith("#")}
    assert names <= _known_settings()
