"""Shared by the dashboards tests and the end-to-end test: files, Grafana targets, promtool."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.support import REPO

DASHBOARDS = REPO / "dashboards"
PROMETHEUS = DASHBOARDS / "prometheus"
RULES = PROMETHEUS / "collapsewatch.rules.yml"
RULE_TESTS = PROMETHEUS / "tests"
ALERTMANAGER = DASHBOARDS / "alertmanager" / "alertmanager.yml"
GRAFANA = DASHBOARDS / "grafana"
GRAFANA_DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
METRIC_NAME = re.compile(r"\bcollapsewatch_[a-z0-9_]+\b")


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a checker; the assertion message carries its output."""
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd or REPO, timeout=120,
                          check=False)


def all_panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard: dict) -> Iterator[tuple[dict, dict]]:
    """(panel, target) for every PromQL target of a dashboard."""
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel, target


def load_dashboard(path: Path) -> dict:
    return json.loads(path.read_text())


# what Grafana substitutes before a query reaches Prometheus
def substitute(expr: str, model: str = "bot", rate_interval: str = "1m") -> str:
    return (expr.replace("$__rate_interval", rate_interval).replace("$__interval", "15s")
            .replace("${model}", model).replace("$model", model))


def rule_names(rules: dict) -> list[str]:
    return [r.get("alert") or r.get("record") for g in rules["groups"] for r in g["rules"]]


def check_exprs_with_promtool(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Parse PromQL with promtool: each expression becomes a recording rule."""
    rules = {"groups": [{"name": "grafana_targets", "rules": [
        {"record": f"grafana:target_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "grafana_targets.rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return run(["promtool", "check", "rules", str(path)])


def exported_text() -> str:
    """A /metrics body with every family /metrics can emit (a stream with a baseline and a
    scored window)."""
    from datetime import UTC, datetime

    from service.exporter.prometheus import ModelSnapshot, Snapshot, families, render
    from tests.service.alert_fixtures import score_json

    model = ModelSnapshot(name="bot", reference_name="ref", reference_sha256="a" * 64,
                          baseline_name="base", baseline_sha256="b" * 64,
                          result=score_json("healthy"), health="healthy",
                          last_evaluation_at=datetime.now(UTC),
                          # a stream's series too (synthetic share)
                          stream_sources=["gen"], max_synthetic_share=0.1)
    snap = Snapshot(taken_at=datetime.now(UTC), models=[model], metric_names=["distinct_2"],
                    notifications={}, dead_letters={("pager", "pagerduty", "critical"): 0})

    return render(families(snap)).decode()


def exported_metric_names() -> set[str]:
    """Every sample name /metrics can emit."""
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name for f in text_string_to_metric_families(exported_text()) for s in f.samples}
