"""dashboards/grafana: provisioning and dashboards (Grafana does not run here)."""

from __future__ import annotations

import time

import httpx
import pytest
import yaml

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
from tests.support import REPO, free_port, process, recording_server, wait_http

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


# ---------------------------------------------------------------------------- streams


def stream_targets() -> list[tuple[dict, dict]]:
    d = load_dashboard(GRAFANA / "dashboards" / "model-detail.json")
    return [(p, t) for p, t in targets(d) if "collapsewatch_synthetic_share" in t["expr"]]


def test_model_detail_shows_a_streams_share_with_its_interval_and_limit():
    found = stream_targets()
    text = "\n".join(t["expr"] for _, t in found)
    for series in ("collapsewatch_synthetic_share{", "collapsewatch_synthetic_share_low{",
                   "collapsewatch_synthetic_share_high{", "collapsewatch_synthetic_share_max{",
                   "collapsewatch_synthetic_share_unexplained{"):
        assert series in text, series
    assert all('model="$model"' in t["expr"] for _, t in found)
    # the interval is shaded between its bounds, as the signal panels shade their band
    (panel,) = {id(p): p for p, t in found if "_low" in t["expr"]}.values()
    legends = {t["legendFormat"] for t in panel["targets"]}
    fills = [(o["matcher"]["options"], prop["value"])
             for o in panel["fieldConfig"]["overrides"] for prop in o["properties"]
             if prop["id"] == "custom.fillBelowTo"]
    assert len(fills) == 1 and set(fills[0]) <= legends


def _share(estimate: float, sources: dict[str, float]) -> dict:
    from tests.service.alert_fixtures import score_json

    return {**score_json("healthy"), "synthetic_share": {
        "estimate": estimate, "low": estimate - 0.05, "high": estimate + 0.05,
        "unexplained": 0.01,
        "by_source": {k: {"estimate": v, "low": v - 0.05, "high": v + 0.05}
                      for k, v in sources.items()}}}


def _streams_metrics(client) -> str:
    """/metrics of a model and of two streams (one and three sources), each with one
    scored window."""
    from sqlalchemy import update

    from service.domain.db import session_scope
    from service.domain.tables import Baseline, MonitoredModel
    from service.exporter.prometheus import CACHE
    from tests.service.alert_fixtures import add_evaluation, make_model

    generator = make_model("generator")
    ids = {}
    with session_scope() as s:
        model = s.get(MonitoredModel, generator)
        for name in ("gen-a", "gen-b", "gen-c"):
            row = Baseline(model_id=generator, reference_id=model.reference_id, name=name,
                           sha256=name.ljust(64, "0"), source="upload", document_count=300,
                           token_count=9000, profile=b"placeholder", human_ratios={})
            s.add(row)
            s.flush()
            ids[name] = row.id
    shares = {"crawl-1": {"gen-a": 0.3}, "crawl-3": {"gen-a": 0.2, "gen-b": 0.1, "gen-c": 0.05}}
    for name, by_source in shares.items():
        model_id = make_model(name)
        with session_scope() as s:
            s.execute(update(MonitoredModel).where(MonitoredModel.id == model_id)
                      .values(kind="stream", sources=[ids[k] for k in by_source],
                              max_synthetic_share=0.1))
        add_evaluation(model_id, "healthy", result=_share(sum(by_source.values()), by_source))
    add_evaluation(generator, "healthy")
    CACHE.clear()
    r = client.get("/metrics")
    assert r.status_code == 200
    return r.text


def _series(text: str, model: str) -> int:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(1 for f in text_string_to_metric_families(text) for s in f.samples
               if s.labels.get("model") == model)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_streams_share_panels_answer_from_a_real_prometheus(client, database_url, tmp_path):
    prometheus = need_program("prometheus")
    text = _streams_metrics(client)
    # what a stream costs in series, measured on /metrics (dashboards/README.md): its
    # sources and "all", three series each (estimate, low, high), plus the limit and the
    # unexplained share
    model = _series(text, "generator")
    assert _series(text, "crawl-1") - model == 3 * (1 + 1) + 2
    assert _series(text, "crawl-3") - model == 3 * (3 + 1) + 2

    def serve(_req):
        return 200, {"content-type": "text/plain; version=0.0.4"}, text.encode()

    with recording_server(serve) as exporter:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "collapsewatch", "scrape_timeout": "1s",
                                "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}],
        }))
        url = f"http://127.0.0.1:{port}"
        with process([prometheus, f"--config.file={config}",
                      f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                      f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                     tmp_path / "prometheus.log") as prom:
            wait_http(f"{url}/-/ready", timeout=60, proc=prom.popen)

            def query(expr: str) -> list[dict]:
                r = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
                assert r.status_code == 200, (expr, r.text)
                return r.json()["data"]["result"]

            deadline = time.monotonic() + 60
            while not query('up{job="collapsewatch"} == 1'):
                assert time.monotonic() < deadline, prom.log()
                time.sleep(0.2)
            for stream, sources in (("crawl-1", {"gen-a"}), ("crawl-3", {"gen-a", "gen-b",
                                                                         "gen-c"})):
                for panel, target in stream_targets():
                    expr = substitute(target["expr"], model=stream)
                    result = query(expr)
                    assert result, f"{panel['title']}: {expr}"
                    if "source!=" in expr:  # one line per source
                        assert {r["metric"]["source"] for r in result} == sources
                    else:
                        assert len(result) == 1, (expr, result)
            (limit,) = query('collapsewatch_synthetic_share_max{model="crawl-3"}')
            assert float(limit["value"][1]) == pytest.approx(0.1)
            (share,) = query('collapsewatch_synthetic_share{model="crawl-3", source="all"}')
            assert float(share["value"][1]) == pytest.approx(0.35)
            # a model that is not a stream has none of these series
            assert not query('{__name__=~"collapsewatch_synthetic_share.*", model="generator"}')
