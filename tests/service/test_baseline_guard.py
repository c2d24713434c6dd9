"""The baseline guard: a baseline that reads collapse against human is not pinned by itself.

Automatic: a model whose first windows are collapsed (low-temperature output of the seeded
word-trigram generator) is ``rejected`` with the reason, a ``baseline_rejected`` warning
reaches a loopback webhook, its windows keep being judged against human, and a later
human-like stream becomes the baseline and resolves the alert. REST: a collapsed baseline is
refused unless ``accept_collapsed`` is sent, which the pin records. SQLite and PostgreSQL
(``database_url``); windows are scored by the real pipeline functions.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from service.domain.tables import Alert, Baseline, BaselinePin, Evaluation, MonitoredModel
from tests.service.alert_fixtures import allow_loopback_channels, make_channel
from tests.service.api_fixtures import REFERENCE_SIZE, assert_problem, store_reference
from tests.service.pipeline_fixtures import add_model, count_rows, ingest, plan_now, score_now
from tests.support import recording_server

SIZE = 100  # two windows hold the 200 documents a baseline profile needs
K = 2
URL = "/api/v1/models/bot/baseline"


@pytest.fixture(scope="session")
def collapsed_documents(human_documents) -> list[str]:
    """Low-temperature (T = 0.3) samples of a word trigram trained on human text: the
    repetitive, narrow output of a model decoded near-greedily (about 0.5x human diversity
    and 3x human sameness as a baseline profile)."""
    from metrics.synthetic import NGramModel

    model = NGramModel.train(human_documents[1000:3000], order=3)
    return model.sample(6 * SIZE, seed=11, temperature=0.3)


@pytest.fixture
def _loopback(monkeypatch):
    allow_loopback_channels(monkeypatch)


def _score_all() -> list[int]:
    ids = plan_now()
    for evaluation_id in ids:
        assert score_now(evaluation_id).status == "done"
    return ids


def _deliver_due() -> list[str]:
    from service.delivery import outbox
    from service.domain.db import session_scope

    with session_scope() as session:
        ids = outbox.due_ids(session)
    return [outbox.deliver(nid).status for nid in ids]


def _rows(model_id: int):
    from service.domain.db import session_scope

    with session_scope() as session:
        model = session.get(MonitoredModel, model_id)
        alerts = session.scalars(select(Alert).where(Alert.model_id == model_id)
                                 .order_by(Alert.id)).all()
        evaluations = session.scalars(select(Evaluation).where(Evaluation.model_id == model_id)
                                      .order_by(Evaluation.window_index)).all()
        session.expunge_all()
        return model, alerts, evaluations


def test_collapsed_first_windows_are_refused_then_healthy_windows_become_the_baseline(
        pipeline_env, _loopback, client, reference_profile, reference_documents,
        collapsed_documents, window_documents):
    ref = store_reference(reference_profile, reference_documents)
    model_id = add_model("bot", ref, size=SIZE, auto_baseline_windows=K)
    with recording_server() as srv:
        make_channel("hook", "webhook", {"url": srv.url + "/hook"})

        ingest("bot", collapsed_documents[:K * SIZE])
        _score_all()
        model, alerts, evaluations = _rows(model_id)
        # the windows themselves read collapse against human: the guard's premise
        assert [e.health for e in evaluations] == ["collapse"] * K
        assert model.baseline_id is None and count_rows(Baseline) == 0
        assert "collapse against human" in model.baseline_rejection
        assert "diversity" in model.baseline_rejection
        (alert,) = alerts
        assert (alert.kind, alert.severity, alert.state, alert.rule_id) == (
            "baseline_rejected", "warning", "firing", None)

        # the model view, /health and the baseline view all say rejected, and why
        view = client.get("/api/v1/models/bot").json()
        assert view["baseline_status"] == "rejected"
        assert view["baseline_rejection"] == model.baseline_rejection
        health = client.get("/api/v1/models/bot/health").json()
        assert health["baseline_status"] == "rejected"
        assert health["baseline_rejection"] == model.baseline_rejection
        assert health["health"] == "collapse"
        baseline_view = client.get(URL).json()
        assert baseline_view["status"] == "rejected" and baseline_view["baseline"] is None
        assert baseline_view["baseline_rejection"] == model.baseline_rejection

        assert _deliver_due() == ["sent"]
        (trigger,) = srv.received("/hook")
        body = trigger.json()
        assert (body["event"], body["kind"], body["severity"]) == (
            "trigger", "baseline_rejected", "warning")
        assert "collapse against human" in body["summary"]

        # more collapsed windows: still judged against human, still one alert, nothing resent
        ingest("bot", collapsed_documents[K * SIZE:2 * K * SIZE], start=K * SIZE)
        _score_all()
        model, alerts, evaluations = _rows(model_id)
        assert [e.health for e in evaluations] == ["collapse"] * (2 * K)
        assert all(e.baseline_id is None for e in evaluations)
        assert model.baseline_id is None and model.baseline_rejection
        assert [(a.kind, a.state) for a in alerts] == [("baseline_rejected", "firing")]
        assert _deliver_due() == []

        # the model recovers: the next windows are human-like and become the baseline
        ingest("bot", window_documents[:K * SIZE], start=2 * K * SIZE)
        _score_all()
        model, alerts, evaluations = _rows(model_id)
        assert model.baseline_id is not None
        assert model.baseline_rejection is None and model.baseline_rejected_at is None
        (alert,) = alerts
        assert alert.state == "resolved"
        assert _deliver_due() == ["sent"]
        assert [r.json()["event"] for r in srv.received("/hook")] == ["trigger", "resolve"]

    from service.domain.db import session_scope

    with session_scope() as session:
        baseline = session.get(Baseline, model.baseline_id)
        (pin,) = session.scalars(select(BaselinePin)).all()
        # the baseline is the human-like windows, not the collapsed ones
        last_human = session.scalar(select(Evaluation.last_sample_id)
                                    .where(Evaluation.window_index == 2 * K + K - 1))
        assert baseline.last_sample_id == last_human
        assert baseline.human_ratios["diversity"] > 0.9
        assert (pin.actor, pin.accept_collapsed) == ("auto", False)
    assert client.get("/api/v1/models/bot").json()["baseline_status"] == "set"


def test_a_healthy_stream_still_pins_its_first_windows(pipeline_env, client, reference_profile,
                                                       reference_documents, window_documents):
    ref = store_reference(reference_profile, reference_documents)
    model_id = add_model("bot", ref, size=SIZE, auto_baseline_windows=K)
    ingest("bot", window_documents[:(K + 1) * SIZE])
    _score_all()
    model, alerts, evaluations = _rows(model_id)
    assert model.baseline_id is not None and model.baseline_rejection is None
    assert alerts == []
    assert evaluations[-1].baseline_id == model.baseline_id  # the window after is judged by it
    assert client.get("/api/v1/models/bot").json()["baseline_status"] == "set"


def test_a_collapsed_baseline_is_refused_without_accept_collapsed(
        client, model_name, admin_headers, collapsed_documents):
    docs = collapsed_documents[:220]
    r = client.post(URL, headers=admin_headers, json={"documents": docs})
    assert_problem(r, 422, "collapse against human", "accept_collapsed")
    assert count_rows(Baseline) == 0 and count_rows(BaselinePin) == 0

    r = client.post(URL, headers=admin_headers,
                    json={"documents": docs, "accept_collapsed": True, "reason": "greedy bot"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "set"
    assert body["baseline"]["human_ratios"]["diversity"] <= 0.85
    (pin,) = body["history"]
    assert pin["accept_collapsed"] is True and pin["reason"] == "greedy bot"
    from service.domain.db import session_scope

    with session_scope() as session:
        (row,) = session.scalars(select(BaselinePin)).all()
        assert row.accept_collapsed is True


def test_a_collapsed_profile_upload_needs_the_flag_and_a_human_one_does_not(
        client, model_name, admin_headers, collapsed_documents, reference_profile,
        human_documents):
    import metrics

    collapsed = metrics.build_baseline(collapsed_documents[:220], reference_profile, "greedy")

    def upload(profile, **fields):
        return client.post(URL, headers=admin_headers,
                           data={k: str(v).lower() for k, v in fields.items()},
                           files={"profile": ("b.cwp", profile.to_bytes(),
                                              "application/octet-stream")})

    assert_problem(upload(collapsed), 422, "collapse against human", "accept_collapsed")
    assert count_rows(BaselinePin) == 0
    r = upload(collapsed, accept_collapsed=True)
    assert r.status_code == 201, r.text
    assert r.json()["history"][0]["accept_collapsed"] is True

    # a human-like baseline needs no flag, and its pin records none
    human = human_documents[REFERENCE_SIZE + 1000:REFERENCE_SIZE + 1220]
    r = client.post(URL, headers=admin_headers, json={"documents": human, "replace": True})
    assert r.status_code == 201, r.text
    assert [p["accept_collapsed"] for p in r.json()["history"]] == [False, True]
