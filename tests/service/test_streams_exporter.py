"""/metrics for streams: collapsewatch_synthetic_share{model,source} (+ _low, _high), the
guard's collapsewatch_synthetic_share_max and the unexplained share, from the latest window."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import update

from service.domain.db import session_scope
from service.domain.tables import Baseline, MonitoredModel
from service.exporter.prometheus import CACHE
from tests.service.alert_fixtures import add_evaluation, make_model, score_json
from tests.service.test_exporter import scrape, value

SHARE = ("collapsewatch_synthetic_share", "collapsewatch_synthetic_share_low",
         "collapsewatch_synthetic_share_high")


@pytest.fixture(autouse=True)
def _fresh_cache():
    CACHE.clear()
    yield
    CACHE.clear()


def _baseline(model_id: int, name: str) -> int:
    with session_scope() as s:
        model = s.get(MonitoredModel, model_id)
        row = Baseline(model_id=model_id, reference_id=model.reference_id, name=name,
                       sha256=name.ljust(64, "0"), source="upload", document_count=300,
                       token_count=9000, profile=b"placeholder", human_ratios={})
        s.add(row)
        s.flush()
        return row.id


def _stream(name: str, sources: list[int], max_share: float | None) -> int:
    model_id = make_model(name)
    with session_scope() as s:
        s.execute(update(MonitoredModel).where(MonitoredModel.id == model_id)
                  .values(kind="stream", sources=sources, max_synthetic_share=max_share))
    return model_id


def _with_share(estimate, low, high, by_source) -> dict:
    return {**score_json("healthy"), "synthetic_share": {
        "estimate": estimate, "low": low, "high": high, "unexplained": 0.02,
        "by_source": {k: {"estimate": e, "low": lo, "high": hi}
                      for k, (e, lo, hi) in by_source.items()}}}


def test_a_streams_series_exist_before_its_first_window(client, database_url):
    generator = make_model("generator")
    a = _baseline(generator, "gen-a")
    _stream("crawl", [a], 0.1)
    m = scrape(client)
    for name in SHARE:
        assert {lab["source"] for lab, _ in m[name] if lab["model"] == "crawl"} == {"all",
                                                                                   "gen-a"}
        assert all(math.isnan(v) for _, v in m[name])
    assert value(m, "collapsewatch_synthetic_share_max", model="crawl") == pytest.approx(0.1)
    # a model (not a stream) has none of them
    assert not [lab for name in SHARE for lab, _ in m[name] if lab["model"] == "generator"]
    assert [lab["model"] for lab, _ in m["collapsewatch_synthetic_share_max"]] == ["crawl"]


def test_the_latest_windows_share_is_exported_per_source_and_in_total(client, database_url):
    generator = make_model("generator")
    a, b = _baseline(generator, "gen-a"), _baseline(generator, "gen-b")
    crawl = _stream("crawl", [a, b], None)
    add_evaluation(crawl, "healthy", result=_with_share(
        0.9, 0.8, 0.95, {"gen-a": (0.9, 0.8, 0.95), "gen-b": (0.0, 0.0, 0.01)}))
    add_evaluation(crawl, "healthy", result=_with_share(
        0.31, 0.25, 0.38, {"gen-a": (0.2, 0.15, 0.26), "gen-b": (0.11, 0.07, 0.16)}))
    m = scrape(client)
    expected = {"all": (0.31, 0.25, 0.38), "gen-a": (0.2, 0.15, 0.26),
                "gen-b": (0.11, 0.07, 0.16)}
    for source, numbers in expected.items():
        for name, number in zip(SHARE, numbers, strict=True):
            assert value(m, name, model="crawl", source=source) == pytest.approx(number)
    assert value(m, "collapsewatch_synthetic_share_unexplained", model="crawl") == \
        pytest.approx(0.02)
    assert math.isnan(value(m, "collapsewatch_synthetic_share_max", model="crawl"))


def test_a_window_without_an_estimate_reads_nan(client, database_url):
    generator = make_model("generator")
    crawl = _stream("crawl", [_baseline(generator, "gen-a")], 0.2)
    add_evaluation(crawl, "healthy", result={**score_json("healthy"),
                                             "synthetic_share_unavailable": "gone"})
    m = scrape(client)
    assert math.isnan(value(m, "collapsewatch_synthetic_share_low", model="crawl",
                            source="all"))
    assert math.isnan(value(m, "collapsewatch_synthetic_share", model="crawl",
                            source="gen-a"))
