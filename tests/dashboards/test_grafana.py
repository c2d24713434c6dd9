"""dashboards/grafana: provisioning and dashboards (Grafana does not run here)."""

from __future__ import annotations

import pytest

from tests.conftest import need_program
from tests.dashboards.helpers import (
    GRAFANA,
    GRAFANA_DASHBOARDS,
    METRIC_NAME,
    all_panels,
    check_exprs_with_promtool,
    exported_metric_names,
    load_dashboard,
    load_yaml,
    substitute,
    targets,
)
from tests.support import REPO

NAMES = [p.name for p in GRAFANA_DASHBOARDS]


def datasource_uid() -> str:
    (ds,) = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert ds["type"] == "prometheus"
    return ds["uid"]


def test_both_dashboards_exist():
    assert set(NAMES) == {"fleet-overview.json", "model-detail.json"}


@pytest.mark.parametrize("path", GRAFANA_DASHBOARDS, ids=NAMES)
def test_dashboard_structure(path):
    d = load_dashboard(path)
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    panels = list(all_panels(d))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert p["type"] and p["title"], p
        grid = p["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p.get("targets"), f"panel {p['title']!r} has no query"
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs)), p["title"]


def test_dashboard_uids_are_unique():
    uids = [load_dashboard(p)["uid"] for p in GRAFANA_DASHBOARDS]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", GRAFANA_DASHBOARDS, ids=NAMES)
def test_every_datasource_is_the_provisioned_one(path):
    uid = datasource_uid()
    d = load_dashboard(path)
    for panel in all_panels(d):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
    for var in d["templating"]["list"]:
        if var["type"] == "query":
            assert var["datasource"]["uid"] == uid


@pytest.mark.parametrize("path", GRAFANA_DASHBOARDS, ids=NAMES)
def test_every_promql_target_parses(path, tmp_path):
    need_program("promtool")
    exprs = [substitute(t["expr"]) for _, t in targets(load_dashboard(path))]
    assert exprs
    result = check_exprs_with_promtool(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_a_broken_expression_is_caught(tmp_path):
    need_program("promtool")
    result = check_exprs_with_promtool(["rate(collapsewatch_samples_ingested_total[5m]"], tmp_path)
    assert result.returncode != 0


@pytest.mark.parametrize("path", GRAFANA_DASHBOARDS, ids=NAMES)
def test_targets_use_only_exported_metrics(path):
    exported = exported_metric_names()
    used = {m for _, t in targets(load_dashboard(path)) for m in METRIC_NAME.findall(t["expr"])}
    assert used and used <= exported, used - exported


def test_model_detail_has_the_model_variable_and_the_required_panels():
    d = load_dashboard(GRAFANA / "dashboards" / "model-detail.json")
    (var,) = [v for v in d["templating"]["list"] if v["name"] == "model"]
    assert "label_values(collapsewatch_reference_info, model)" in var["definition"]
    exprs = [t["expr"] for _, t in targets(d)]
    assert all('model="$model"' in e for e in exprs if "collapsewatch_" in e)
    text = "\n".join(exprs)
    for needed in ("collapsewatch_diversity_ratio", "collapsewatch_tail_coverage_ratio",
                   "collapsewatch_sameness_ratio", "collapsewatch_signal_human_band",
                   "collapsewatch_metric_value", "collapsewatch_metric_human_band",
                   "collapsewatch_samples_ingested_total",
                   "collapsewatch_last_evaluation_timestamp_seconds", "ALERTS"):
        assert needed in text, needed


def test_fleet_overview_shows_every_model():
    d = load_dashboard(GRAFANA / "dashboards" / "fleet-overview.json")
    text = "\n".join(t["expr"] for _, t in targets(d))
    assert "collapsewatch_health_state" in text
    assert not any("$model" in t["expr"] for _, t in targets(d))


def test_provisioning_matches_the_compose_mounts():
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "collapsewatch.yml")
    (provider,) = providers["providers"]
    compose = load_yaml(REPO / "docker-compose.yml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./dashboards/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./dashboards/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_model_detail_shows_the_semantic_metrics():
    d = load_dashboard(GRAFANA / "dashboards" / "model-detail.json")
    text = "\n".join(t["expr"] for _, t in targets(d))
    for metric in ("semantic_similarity", "semantic_vendi", "semantic_recall", "topic_recall",
                   "rare_topic_recall", "topic_entropy"):
        assert metric in text, metric
