"""The Grafana dashboard and the alert rules (deploy/observability/) only use metrics
hutch really exports, and the exposition parses (docs/observability.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import hutch.api.metrics
import hutch.node.metrics
import hutch.proxy.metrics  # noqa: F401 - registers the proxy's metrics

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy" / "observability"
_NAME = re.compile(r"\bhutch_[a-z_]+")


def _exported() -> set[str]:
    names = set()
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        names.add(family.name)
        names.update(s.name for s in family.samples)
        names.update(f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_count", "_sum"))
    # The node's gauges are read at scrape time by NodeCollector (no node in this process).
    names.update(_NAME.findall((ROOT / "src/hutch/node/metrics.py").read_text()))
    return names


def test_observability_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in _NAME.findall(target["expr"])
    }
    assert used and used <= _exported(), used - _exported()


def test_observability_alerts_use_only_exported_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {
        "HutchNodeDown", "HutchPoolEmpty", "HutchCreateSlow", "HutchDiskFilling",
    }  # fmt: skip
    used = {name for r in rules for name in _NAME.findall(r["expr"])}
    assert used and used <= _exported(), used - _exported()
