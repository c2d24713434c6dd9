"""GET /metrics: names and labels from DESIGN.md, read from the database."""

from __future__ import annotations

import math

import pytest
from prometheus_client import REGISTRY as GLOBAL_REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from service.domain import alerts as engine
from service.domain.db import session_scope
from service.domain.tables import Baseline, MonitoredModel
from service.exporter.prometheus import CACHE
from tests.service.alert_fixtures import add_evaluation, add_samples, make_model

SIGNALS = ("diversity", "tail_coverage", "sameness")
HEALTH = ("healthy", "early_collapse", "collapse", "insufficient_data")


@pytest.fixture(autouse=True)
def _fresh_cache():
    CACHE.clear()
    yield
    CACHE.clear()


@pytest.fixture
def per_metric_series(monkeypatch):
    """Per-metric series for every model (COLLAPSEWATCH_METRICS_PER_METRIC_SERIES=1)."""
    from service.settings import get_settings

    monkeypatch.setenv("COLLAPSEWATCH_METRICS_PER_METRIC_SERIES", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def scrape(client, **headers) -> dict[str, list]:
    CACHE.clear()
    r = client.get("/metrics", headers=headers, follow_redirects=False)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(samples, name, **labels) -> float:
    matches = [v for lab, v in samples.get(name, []) if all(lab.get(k) == x
                                                            for k, x in labels.items())]
    assert len(matches) == 1, (name, labels, samples.get(name))
    return matches[0]


def test_metrics_answers_without_redirect(client, database_url):
    r = client.get("/metrics", follow_redirects=False)
    assert r.status_code == 200
    assert "collapsewatch_notifications" in r.text


def test_every_series_exists_as_soon_as_a_model_exists(client, database_url,
                                                       per_metric_series):
    import metrics

    make_model("bot")
    m = scrape(client)
    for s in SIGNALS:
        assert math.isnan(value(m, f"collapsewatch_{s}_ratio", model="bot"))
        assert math.isnan(value(m, f"collapsewatch_{s}_baseline_ratio", model="bot"))
    names = {spec.name for spec in metrics.REGISTRY}
    assert {lab["metric"] for lab, _ in m["collapsewatch_metric_value"]} == names
    assert {(lab["metric"], lab["bound"]) for lab, _ in m["collapsewatch_metric_human_band"]} == {
        (n, b) for n in names for b in ("low", "mean", "high")}
    assert {lab["state"]: v for lab, v in m["collapsewatch_health_state"]} == {
        "healthy": 0, "early_collapse": 0, "collapse": 0, "insufficient_data": 1}
    assert value(m, "collapsewatch_samples_ingested_total", model="bot") == 0
    assert {lab["severity"]: v for lab, v in m["collapsewatch_alerts_firing"]} == {
        "warning": 0, "critical": 0}
    assert math.isnan(value(m, "collapsewatch_last_evaluation_timestamp_seconds", model="bot"))
    assert value(m, "collapsewatch_evaluation_duration_seconds_count", model="bot") == 0
    assert value(m, "collapsewatch_evaluation_lag_seconds", model="bot") == 0
    (ref,) = m["collapsewatch_reference_info"]
    assert ref[0]["model"] == "bot" and ref[0]["reference"] == "ref" and ref[1] == 1


def test_latest_evaluation_is_exported(client, database_url, per_metric_series):
    model_id = make_model("bot")
    add_samples(model_id, 25)
    add_evaluation(model_id, "healthy", duration=0.3)
    add_evaluation(model_id, "collapse", duration=4.0)
    add_evaluation(model_id, "collapse", duration=4.0)
    add_evaluation(model_id, None, status="pending")  # not finished: not "latest"
    with session_scope() as s:
        engine.evaluate_model(s, model_id)
    m = scrape(client)
    assert value(m, "collapsewatch_diversity_ratio", model="bot") == pytest.approx(0.45)
    assert value(m, "collapsewatch_tail_coverage_baseline_ratio", model="bot") == pytest.approx(0.2)
    assert value(m, "collapsewatch_sameness_ratio", model="bot") == pytest.approx(2.4)
    assert value(m, "collapsewatch_signal_human_band", model="bot", signal="sameness",
                 bound="high") == pytest.approx(1.1)
    assert value(m, "collapsewatch_signal_outside_band", model="bot", signal="diversity",
                 band="baseline") == 1
    assert value(m, "collapsewatch_health_state", model="bot", state="collapse") == 1
    assert value(m, "collapsewatch_health_state", model="bot", state="healthy") == 0
    assert value(m, "collapsewatch_metric_value", model="bot", metric="distinct_2"
                 ) == pytest.approx(0.27)
    assert value(m, "collapsewatch_metric_human_band", model="bot", metric="distinct_2",
                 bound="low") == pytest.approx(0.57)
    assert value(m, "collapsewatch_samples_ingested_total", model="bot") == 25
    assert value(m, "collapsewatch_last_evaluation_timestamp_seconds", model="bot") > 1.7e9
    assert value(m, "collapsewatch_evaluations_total", model="bot", status="done") == 3
    assert value(m, "collapsewatch_evaluations_pending", model="bot") == 1
    assert value(m, "collapsewatch_alerts_firing", model="bot", severity="critical") == 1
    # the critical inhibits the warning (one incident per model)
    assert value(m, "collapsewatch_alerts_firing", model="bot", severity="warning") == 0
    assert value(m, "collapsewatch_evaluation_duration_seconds_bucket", model="bot", le="0.5") == 1
    assert value(m, "collapsewatch_evaluation_duration_seconds_bucket", model="bot", le="5.0") == 3
    assert value(m, "collapsewatch_evaluation_duration_seconds_sum", model="bot"
                 ) == pytest.approx(8.3)


def test_baseline_info_appears_with_a_baseline(client, database_url):
    model_id = make_model("bot")
    assert "collapsewatch_baseline_info" not in scrape(client)
    with session_scope() as s:
        model = s.get(MonitoredModel, model_id)
        b = Baseline(model_id=model_id, reference_id=model.reference_id, name="good-week",
                     sha256="c" * 64, source="upload", document_count=200, token_count=9000,
                     profile=b"x", human_ratios={})
        s.add(b)
        s.flush()
        model.baseline_id = b.id
    (info,) = scrape(client)["collapsewatch_baseline_info"]
    assert info[0] == {"model": "bot", "baseline": "good-week", "sha256": "c" * 64}


def test_labels_are_bounded(client, database_url, per_metric_series):
    model_id = make_model("bot")
    make_model("other")
    for _ in range(3):
        add_evaluation(model_id, "healthy")
    allowed = {"model", "metric", "signal", "state", "severity", "bound", "band", "status",
               "reference", "baseline", "sha256", "le"}
    m = scrape(client)
    for name, samples in m.items():
        assert name.startswith("collapsewatch_"), name
        for labels, _ in samples:
            assert set(labels) <= allowed, (name, labels)
    # one series per model and label combination, whatever the number of evaluations
    assert len(m["collapsewatch_diversity_ratio"]) == 2
    assert len(m["collapsewatch_metric_value"]) == len(m["collapsewatch_metric_ratio"])


def test_openmetrics_is_negotiated(client, database_url):
    make_model("bot")
    r = client.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")
    assert "collapsewatch_samples_ingested_total{model=\"bot\"} 0.0" in r.text


def test_snapshot_is_cached_briefly(client, database_url):
    model_id = make_model("bot")
    CACHE.clear()
    first = client.get("/metrics").text
    add_samples(model_id, 5)
    assert client.get("/metrics").text == first  # within metrics_cache_seconds
    CACHE.clear()
    assert 'collapsewatch_samples_ingested_total{model="bot"} 5.0' in client.get("/metrics").text


def test_each_form_is_encoded_once_per_snapshot_and_forms_agree(client, database_url):
    """Within the cache ttl a scrape reuses the encoded body of its form (text or
    OpenMetrics, gzip or not); the gzip body is the plain body compressed."""
    from service.exporter.prometheus import SnapshotCache

    builds, encodes = [], []
    cache = SnapshotCache()

    def build():
        builds.append(1)
        return []

    def encode(form):
        def run(fams):
            encodes.append(form)
            return form.encode()
        return run

    for form in ("text|identity", "text|gzip", "text|identity", "text|gzip"):
        assert cache.encoded("db", 60.0, build, form, encode(form)) == form.encode()
    assert builds == [1] and encodes == ["text|identity", "text|gzip"]
    cache.clear()
    cache.encoded("db", 60.0, build, "text|identity", encode("text|identity"))
    assert len(builds) == 2 and len(encodes) == 3
    cache.encoded("db", 0.0, build, "text|identity", encode("text|identity"))  # cache off
    assert len(builds) == 3 and len(encodes) == 4

    make_model("bot")
    CACHE.clear()
    plain = client.get("/metrics", headers={"Accept-Encoding": "identity"})
    zipped = client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in plain.headers
    assert zipped.headers["Content-Encoding"] == "gzip"
    # the client decodes the gzip body: the same exposition as the plain one
    assert zipped.text == plain.text and "collapsewatch_samples_ingested_total" in plain.text


def test_global_registry_is_untouched(client, database_url):
    before = {m.name for m in GLOBAL_REGISTRY.collect()}
    make_model("bot")
    client.get("/metrics")
    after = {m.name for m in GLOBAL_REGISTRY.collect()}
    assert before == after and not any(n.startswith("collapsewatch") for n in after)


def test_read_key_is_required_when_configured(client, database_url, monkeypatch, make_key):
    from service.settings import get_settings

    monkeypatch.setenv("COLLAPSEWATCH_REQUIRE_READ_KEY", "1")
    get_settings.cache_clear()
    assert client.get("/metrics").status_code == 401
    key = make_key("read")
    assert client.get("/metrics", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def _series_per_model(m: dict[str, list], model: str) -> int:
    return sum(1 for samples in m.values() for labels, _ in samples
               if labels.get("model") == model)


def test_per_metric_series_are_opt_in_per_model(client, database_url):
    import metrics

    quiet = make_model("quiet")
    detailed = make_model("detailed")
    for model_id in (quiet, detailed):
        add_evaluation(model_id, "healthy")
    with session_scope() as s:
        s.get(MonitoredModel, detailed).metric_series = True
    m = scrape(client)
    assert {lab["model"] for lab, _ in m["collapsewatch_metric_value"]} == {"detailed"}
    base = _series_per_model(m, "quiet")
    # signals, health and pipeline series only; the per-metric families add six per metric
    assert base <= 60, base
    names = {lab["metric"] for lab, _ in m["collapsewatch_metric_value"]}
    assert names >= {spec.name for spec in metrics.REGISTRY}
    assert _series_per_model(m, "detailed") == base + 6 * len(names)
    assert value(m, "collapsewatch_health_state", model="quiet", state="healthy") == 1


def test_metrics_are_gzipped_when_the_scraper_accepts_it(client, database_url):
    import gzip

    for i in range(3):
        add_evaluation(make_model(f"m{i}"), "healthy")
    CACHE.clear()
    plain = client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    raw = client.get("/metrics", headers={"Accept-Encoding": "gzip, deflate"},
                     follow_redirects=False)
    # httpx decodes transparently; the header and a smaller body on the wire say it was gzip
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.text == plain.text
    assert len(gzip.compress(plain.content)) < len(plain.content) / 3
    refused = client.get("/metrics", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


def test_counters_and_latest_window_survive_retention(client, database_url):
    from datetime import UTC, datetime, timedelta

    from service.domain import retention
    from service.domain.db import session_factory
    from service.settings import get_settings

    model_id = make_model("bot")
    for health in ("healthy", "collapse", "collapse"):
        add_evaluation(model_id, health, duration=0.3)
    retention.run(session_factory(), get_settings(), now=datetime.now(UTC) + timedelta(days=401))
    m = scrape(client)
    assert value(m, "collapsewatch_evaluations_total", model="bot", status="done") == 3
    assert value(m, "collapsewatch_evaluation_duration_seconds_count", model="bot") == 3
    assert value(m, "collapsewatch_health_state", model="bot", state="collapse") == 1


def test_the_trend_statistic_and_its_threshold_are_exported(client, database_url):
    from tests.service.alert_fixtures import score_json

    model_id = make_model("bot")
    result = score_json("early_collapse")
    result["trend"] = {s: {"statistic": 0.0, "threshold": 5.1, "alarm": False} for s in SIGNALS}
    result["trend"]["tail_coverage"].update(statistic=7.25, alarm=True)
    add_evaluation(model_id, "early_collapse", result=result)
    make_model("quiet")  # no scored window yet: NaN, so no rule can fire on it
    m = scrape(client)
    assert value(m, "collapsewatch_signal_trend", model="bot", signal="tail_coverage") == 7.25
    assert value(m, "collapsewatch_signal_trend", model="bot", signal="sameness") == 0.0
    assert value(m, "collapsewatch_signal_trend_threshold", model="bot",
                 signal="tail_coverage") == 5.1
    assert math.isnan(value(m, "collapsewatch_signal_trend", model="quiet", signal="diversity"))


def test_evaluation_lag_is_read_per_model_from_its_oldest_unwindowed_sample(client,
                                                                            database_url):
    """The lag of a model whose windows close by age runs from its oldest sample not yet in
    a window plus the age limit; models without such samples, or without an age limit,
    read 0 (the exporter reads all of them in one statement)."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    late = make_model("late", window_max_age_seconds=600)
    add_samples(late, 2, received_at=now - timedelta(seconds=1800))
    add_samples(late, 2, received_at=now - timedelta(seconds=60))
    due = make_model("due", window_max_age_seconds=3600)
    add_samples(due, 1, received_at=now - timedelta(seconds=4000))
    make_model("idle", window_max_age_seconds=600)
    sized = make_model("sized", window_max_age_seconds=None)
    add_samples(sized, 3, received_at=now - timedelta(days=2))
    m = scrape(client)
    # oldest late sample 1,800 s ago, due after 600 s: owed for ~1,200 s
    assert 1190 <= value(m, "collapsewatch_evaluation_lag_seconds", model="late") <= 1260
    assert 390 <= value(m, "collapsewatch_evaluation_lag_seconds", model="due") <= 460
    assert value(m, "collapsewatch_evaluation_lag_seconds", model="idle") == 0
    assert value(m, "collapsewatch_evaluation_lag_seconds", model="sized") == 0


def _samples(families) -> dict[tuple, float | str]:
    """(sample name, sorted labels) -> value (NaN as a string, so that NaN equals NaN)."""
    out = {}
    for family in families:
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = (
                "NaN" if math.isnan(s.value) else s.value)
    return out


def test_openmetrics_and_text_carry_the_same_samples_and_escape_labels(client, database_url,
                                                                     per_metric_series):
    """The exporter writes both formats itself: OpenMetrics passes the strict parser, with
    the same samples as the text format, and label values with quotes, backslashes and line
    feeds survive both."""
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as openmetrics_families,
    )

    from tests.service.alert_fixtures import score_json

    odd = 'say "hi"\\there\nnext'
    model_id = make_model(odd)
    add_samples(model_id, 3)
    add_evaluation(model_id, "early_collapse", result=score_json("early_collapse"))
    make_model("quiet")
    CACHE.clear()
    text = client.get("/metrics").text
    om = client.get("/metrics", headers={"accept": "application/openmetrics-text; "
                                                   "version=1.0.0"}).text
    as_text = _samples(text_string_to_metric_families(text))
    as_om = _samples(openmetrics_families(om))
    assert as_om == as_text and len(as_text) > 100
    assert as_text[("collapsewatch_samples_ingested_total", (("model", odd),))] == 3
    assert as_text[("collapsewatch_health_state",
                    (("model", odd), ("state", "early_collapse")))] == 1
    # a counter's family is named without _total in OpenMetrics, with it in the text format
    assert "# TYPE collapsewatch_samples_ingested counter" in om
    assert "# TYPE collapsewatch_samples_ingested_total counter" in text


def test_the_latest_window_is_read_from_its_summary_or_else_from_its_result(client,
                                                                           database_url):
    """model_stats keeps the exported parts of the latest result when a window is stored; a
    summary not written (a window stored before the summary existed) is read from the
    evaluation's result instead."""
    from sqlalchemy import update

    from service.domain.tables import Evaluation, ModelStats
    from tests.service.alert_fixtures import score_json

    model_id = make_model("bot")
    eval_id = add_evaluation(model_id, "collapse")
    with session_scope() as s:
        stats = s.get(ModelStats, model_id)
        assert stats.latest_evaluation_id == eval_id
        assert set(stats.latest_summary) >= {"signals", "documents"}
        assert "metrics" not in stats.latest_summary and "evidence" not in stats.latest_summary
    assert value(scrape(client), "collapsewatch_diversity_ratio", model="bot"
                 ) == pytest.approx(0.45)
    # the result changes under the summary: the scrape follows the summary ...
    changed = score_json("collapse")
    changed["signals"]["diversity"]["ratio"] = 0.5
    with session_scope() as s:
        s.execute(update(Evaluation).where(Evaluation.id == eval_id).values(result=changed))
    assert value(scrape(client), "collapsewatch_diversity_ratio", model="bot"
                 ) == pytest.approx(0.45)
    # ... and without a summary, the result
    with session_scope() as s:
        s.execute(update(ModelStats).where(ModelStats.model_id == model_id)
                  .values(latest_summary=None))
    m = scrape(client)
    assert value(m, "collapsewatch_diversity_ratio", model="bot") == pytest.approx(0.5)
    assert value(m, "collapsewatch_health_state", model="bot", state="collapse") == 1


def test_the_served_app_moves_its_start_up_objects_out_of_the_collectors_view(tmp_path):
    """`collapsewatch api` and `serve` run the app from create_served_app, which freezes the
    objects of start-up (gc.freeze) so that collections during a large scrape do not walk
    them; create_app, used by the tests, does not."""
    import subprocess
    import sys

    code = ("import gc; from service.api.app import create_app, create_served_app; "
            "create_app(); before = gc.get_freeze_count(); create_served_app(); "
            "print(before, gc.get_freeze_count())")
    env = {"COLLAPSEWATCH_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env, check=True).stdout.split()
    before, after = map(int, out)
    assert before == 0 and after > 10_000
