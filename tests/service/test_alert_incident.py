"""The page an on-call engineer gets: one incident per model, through the real pipeline.

A stream into a model with a pinned baseline goes from early collapse to collapse and back to
early collapse. Windows are ingested, planned and scored with the metrics library, the alert
engine counts them, and the outbox delivers to loopback servers standing in for a webhook
receiver, Slack and PagerDuty. A stream with a mixing-ratio guard pages with the synthetic
share the mixture estimated, and resolves with the share of the windows that cleared it.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from service.delivery import outbox
from service.domain import alerts as engine
from service.domain.db import session_scope
from service.domain.tables import Alert, Evaluation, Notification
from tests.service.alert_fixtures import allow_loopback_channels, make_channel
from tests.service.api_fixtures import store_reference
from tests.service.pipeline_fixtures import add_model, ingest, plan_now, score_now
from tests.service.test_streams_pipeline import stream_corpus  # noqa: F401 - a fixture
from tests.support import recording_server

SIZE = 200
MODEL = "pager-test"


@pytest.fixture(autouse=True)
def _loopback_receivers(monkeypatch):
    allow_loopback_channels(monkeypatch)


def stream_window(human_documents: list[str], i: int, share: float) -> list[str]:
    """Fresh human documents with ``share`` of the window replaced by eight repeated ones
    (duplicates and a narrower vocabulary: the more, the deeper the collapse)."""
    few = human_documents[5000:5008]
    bad = int(SIZE * share)
    start = 5600 + i * SIZE
    return human_documents[start:start + SIZE - bad] + [few[j % 8] for j in range(bad)]


@pytest.fixture
def model_with_baseline(pipeline_env, reference_profile, reference_documents, human_documents):
    import metrics
    from service.domain.baselines import pin_profile

    ref = store_reference(reference_profile, reference_documents)
    model_id = add_model(MODEL, ref, size=SIZE)
    baseline = metrics.build_baseline(human_documents[300:510], reference_profile, "launch")
    with session_scope() as s:
        pin_profile(s, model_id, baseline, source="upload", actor="test")
    return model_id


def test_a_collapsing_stream_pages_each_channel_once(model_with_baseline, human_documents):
    model_id = model_with_baseline
    with recording_server() as srv:
        make_channel("hook", "webhook", {"url": srv.url + "/hook"})
        make_channel("slack", "slack", {"webhook_url": srv.url + "/slack"})
        pd_id = make_channel("pd", "pagerduty", {"routing_key": "R" * 32,
                                                 "url": srv.url + "/pd"},
                             min_severity="critical")
        healths = []
        # light, light, heavy, heavy, light, light: warning, escalation, downgrade (the last
        # two windows reuse the first two's human documents: their verdict is known)
        for i, (part, share) in enumerate([(0, 0.1), (1, 0.1), (2, 0.4), (3, 0.4), (0, 0.1),
                                           (1, 0.1)]):
            ingest(MODEL, stream_window(human_documents, part, share), start=i * SIZE)
            (evaluation_id,) = plan_now()
            assert score_now(evaluation_id).status == "done"
            with session_scope() as s:
                healths.append(s.get(Evaluation, evaluation_id).health)
                ids = engine.evaluate_model(s, model_id).notification_ids
            for nid in ids:
                assert outbox.deliver(nid).status == "sent"
        # the scorer's verdicts this test is about (a change in the metrics shows here first)
        assert healths == ["early_collapse"] * 2 + ["collapse"] * 2 + ["early_collapse"] * 2

        hook, slack, pd = (srv.received(p) for p in ("/hook", "/slack", "/pd"))
        # one page per channel for the whole incident; the escalation and the downgrade are
        # updates of it, and nothing was sent that reads like recovery where the warning goes
        # on; the critical-only pager got the critical and, once it was over, its resolve
        assert [r.json()["event"] for r in hook] == ["trigger", "update", "update"]
        assert len(slack) == 3 and all("RESOLVED" not in r.json()["text"] for r in slack)
        # Slack shows the escalation and the downgrade as updates, not as new pages
        texts = [r.json()["text"] for r in slack]
        assert "FIRING [warning]" in texts[0]
        assert texts[1].startswith(":arrow_up: UPDATED [critical] escalated to collapse")
        assert texts[2].startswith(":arrow_down: UPDATED [warning] downgraded to early collapse")
        assert all("FIRING" not in t for t in texts[1:])
        assert [r.json()["event_action"] for r in pd] == ["trigger", "resolve"]
        assert {r.json()["dedup_key"] for r in pd} == {hook[0].json()["dedup_key"]}
        assert [r.json()["severity"] for r in hook] == ["warning", "critical", "warning"]

    with session_scope() as s:
        rows = s.scalars(select(Alert).where(Alert.model_id == model_id)
                         .order_by(Alert.id)).all()
        assert [(a.kind, a.state) for a in rows] == [
            ("early_collapse", "resolved"), ("collapse", "resolved"),
            ("early_collapse", "firing")]
        assert rows[0].details["superseded_by"] == rows[1].id
        assert rows[1].details["superseded_by"] == rows[2].id
        assert len({a.dedup_key for a in rows}) == 1
        resolves = s.scalars(select(Notification)
                             .where(Notification.event == "resolve")).all()
        assert [(n.alert_id, n.channel_id) for n in resolves] == [(rows[1].id, pd_id)]
        collapse = rows[1]
        fired_on = s.get(Evaluation, collapse.last_evaluation_id)
        # the warning's text is not the critical's
        assert "is in collapse" not in rows[0].summary and "is in collapse" in collapse.summary

    # the line on the phone names the worst signal of the window that fired, and its size
    signals = fired_on.result["signals"]
    falls = engine.SIGNAL_FALLS
    worst = max(signals, key=lambda k: -signals[k]["z"] if falls[k] else signals[k]["z"])
    line = pd[0].json()["payload"]["summary"]
    assert line.startswith(f"{MODEL}: collapse — {worst.replace('_', ' ')} "
                           f"{signals[worst]['baseline_ratio']:.2f}× baseline (band "), line
    assert line.endswith(", 2 windows"), line


# ---------------------------------------------------------------------------- a stream's guard


def test_a_streams_guard_pages_with_the_share_it_measured_and_resolves_with_the_share_now(
        pipeline_env, stream_corpus, human_documents):  # noqa: F811 - the imported fixture
    """Half of two windows written by the stream's source: the guard (limit 0.1) fires with
    the share the mixture estimated; two human windows later it resolves with theirs."""
    import re

    from service.domain.profiles import MIXTURES
    from tests.service.test_streams_pipeline import (
        WINDOW,
        _half_synthetic,
        _make_stream,
        _store_baseline,
    )

    MIXTURES.clear()
    reference, reference_docs, baseline, _, _ = stream_corpus
    ref = store_reference(reference, reference_docs)
    source = _store_baseline(add_model("generator", ref), ref, baseline, "trigram-v1")
    stream_id = _make_stream("crawl", ref, [source], max_share=0.1)
    fresh_human = human_documents[6400:6400 + 2 * WINDOW]
    windows = [_half_synthetic(stream_corpus, 0), _half_synthetic(stream_corpus, 1),
               fresh_human[:WINDOW], fresh_human[WINDOW:]]
    shares = []
    with recording_server() as srv:
        make_channel("hook", "webhook", {"url": srv.url + "/hook"})
        make_channel("slack", "slack", {"webhook_url": srv.url + "/slack"})
        for i, texts in enumerate(windows):
            ingest("crawl", texts, start=i * WINDOW)
            (evaluation_id,) = plan_now()
            assert score_now(evaluation_id).status == "done"
            with session_scope() as s:
                shares.append(s.get(Evaluation, evaluation_id).result["synthetic_share"])
                ids = engine.evaluate_model(s, stream_id).notification_ids
            for nid in ids:
                assert outbox.deliver(nid).status == "sent"
        # the stream's collapse rules run too (its collapse scores stand): only the guard's
        # notifications are about the share
        hook = [r.json() for r in srv.received("/hook")
                if r.json()["kind"] == "synthetic_share"]
        slack = [r.json()["text"] for r in srv.received("/slack")
                 if "synthetic share" in r.json()["text"]]
    # the premise: the mixture sees the half-synthetic windows above the limit, not the human
    assert [s["low"] > 0.1 for s in shares] == [True, True, False, False], shares
    assert [h["event"] for h in hook] == ["trigger", "resolve"]
    fired, now = shares[1], shares[3]

    def interval(share: dict) -> str:
        return f"{share['estimate']:.2f} (95% {share['low']:.2f}–{share['high']:.2f})"

    title = f"crawl: synthetic share {interval(fired)} above its limit 0.10, 2 windows"
    assert hook[0]["title"] == title
    assert re.search(r"by source: trigram-v1 0\.\d\d \(95% 0\.\d\d–0\.\d\d\)", hook[0]["summary"])
    assert hook[0]["details"]["synthetic_share"]["by_source"]["trigram-v1"] == \
        fired["by_source"]["trigram-v1"]
    assert title in slack[0] and "FIRING [warning]" in slack[0]
    assert hook[1]["summary"].startswith(
        f"crawl: synthetic share above its limit resolved — synthetic share now "
        f"{interval(now)}, its 95% lower bound not above the limit 0.10 for 2 consecutive "
        "window(s) (windows 2–3)")
    assert "RESOLVED" in slack[1] and interval(now) in slack[1]
