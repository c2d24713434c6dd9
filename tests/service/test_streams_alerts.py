"""The synthetic_share window rule: a stream's mixing-ratio guard fires (warning) when the
share's lower bound exceeds its max_synthetic_share and resolves when it no longer does."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from service.domain import alerts as engine
from service.domain.db import session_scope
from service.domain.tables import Alert, AlertRule, MonitoredModel
from tests.service.alert_fixtures import add_evaluation, make_model, score_json


def _window(low: float, health: str = "healthy") -> dict:
    estimate = low + 0.05
    return {**score_json(health), "synthetic_share": {
        "estimate": estimate, "low": low, "high": low + 0.1, "unexplained": 0.0,
        "by_source": {"gen": {"estimate": estimate, "low": low, "high": low + 0.1}}}}


@pytest.mark.parametrize(("low", "limit", "health", "verdict"), [
    (0.30, 0.10, "healthy", engine.BAD),
    (0.10, 0.10, "healthy", engine.GOOD),  # the bound must exceed the limit
    (0.02, 0.10, "collapse", engine.GOOD),  # judged on the share, whatever the health
    (0.30, 0.10, "insufficient_data", engine.BAD),
    (0.30, None, "healthy", None),  # no guard
])
def test_the_lower_bound_is_judged_against_the_limit(low, limit, health, verdict):
    params = {"max_synthetic_share": limit}
    assert engine.classify("synthetic_share", health, _window(low, health), params) == verdict


def test_a_window_without_a_share_is_uninformative():
    params = {"max_synthetic_share": 0.1}
    assert engine.classify("synthetic_share", "healthy", score_json("healthy"), params) is None
    no_estimate = {**score_json("healthy"), "synthetic_share_unavailable": "source gone"}
    assert engine.classify("synthetic_share", "healthy", no_estimate, params) is None


def _stream(name: str, max_share: float | None) -> int:
    model_id = make_model(name)
    with session_scope() as s:
        s.execute(update(MonitoredModel).where(MonitoredModel.id == model_id)
                  .values(kind="stream", sources=[1], max_synthetic_share=max_share))
    return model_id


def _evaluate(model_id: int) -> engine.Outcome:
    with session_scope() as s:
        return engine.evaluate_model(s, model_id)


def _alerts(model_id: int) -> list[tuple[str, str, str]]:
    with session_scope() as s:
        return [(a.kind, a.severity, a.state) for a in s.scalars(
            select(Alert).where(Alert.model_id == model_id).order_by(Alert.id))]


def test_the_guard_fires_a_warning_and_resolves(database_url, service_env):
    crawl = _stream("crawl", 0.1)
    add_evaluation(crawl, "healthy", result=_window(0.3))
    _evaluate(crawl)
    assert _alerts(crawl) == []  # one window is not enough (fire_after_windows = 2)
    add_evaluation(crawl, "healthy", result=_window(0.25))
    outcome = _evaluate(crawl)
    assert _alerts(crawl) == [("synthetic_share", "warning", "firing")]
    assert outcome.fired
    with session_scope() as s:
        alert = s.scalar(select(Alert).where(Alert.kind == "synthetic_share"))
        assert "synthetic share above its limit" in alert.summary, alert.summary
    # back under the limit for two windows: resolved
    for low in (0.05, 0.0):
        add_evaluation(crawl, "healthy", result=_window(low))
        _evaluate(crawl)
    assert _alerts(crawl) == [("synthetic_share", "warning", "resolved")]


def test_a_model_or_an_unguarded_stream_never_fires_the_guard(database_url, service_env):
    bot = make_model("bot")
    open_stream = _stream("crawl", None)
    for model_id in (bot, open_stream):
        for _ in range(3):
            add_evaluation(model_id, "healthy", result=_window(0.6))
        _evaluate(model_id)
        assert _alerts(model_id) == []
        with session_scope() as s:
            rule = s.scalar(select(AlertRule).where(AlertRule.model_id == model_id,
                                                    AlertRule.kind == "synthetic_share"))
            assert rule.enabled is False


def test_patching_the_limit_moves_the_rule_with_it(client, admin_headers, database_url,
                                                   stored_reference, baseline_profile):
    r = client.post("/api/v1/models", headers=admin_headers,
                    json={"name": "generator", "reference_id": stored_reference})
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/models/generator/baseline", headers=admin_headers,
                    files={"profile": ("b.cwp", baseline_profile.to_bytes(),
                                       "application/octet-stream")})
    source = r.json()["baseline"]["id"]
    r = client.post("/api/v1/models", headers=admin_headers, json={
        "name": "crawl", "reference_id": stored_reference, "kind": "stream",
        "sources": [source], "max_synthetic_share": 0.1})
    crawl = r.json()["id"]
    add_evaluation(crawl, "healthy", result=_window(0.3))
    _evaluate(crawl)  # creates the rules

    def rule() -> tuple[bool, float | None]:
        with session_scope() as s:
            row = s.scalar(select(AlertRule).where(AlertRule.model_id == crawl,
                                                   AlertRule.kind == "synthetic_share"))
            return row.enabled, row.params.get("max_synthetic_share")

    assert rule() == (True, 0.1)
    client.patch("/api/v1/models/crawl", headers=admin_headers,
                 json={"max_synthetic_share": 0.5})
    assert rule() == (True, 0.5)
    add_evaluation(crawl, "healthy", result=_window(0.3))
    _evaluate(crawl)
    assert _alerts(crawl) == []  # 0.3 is under the new limit
    client.patch("/api/v1/models/crawl", headers=admin_headers,
                 json={"max_synthetic_share": None})
    assert rule() == (False, None)
