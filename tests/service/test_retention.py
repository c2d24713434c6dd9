"""Retention: old rows go in bounded batches (frozen clock: ``now`` is passed explicitly),
deleted models are purged, references in use cannot be deleted, ``gc --dry-run``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from service.domain import retention
from service.domain.db import session_factory, session_scope
from service.domain.errors import Conflict
from service.domain.tables import (
    Alert,
    Evaluation,
    ModelStats,
    MonitoredModel,
    Notification,
    Reference,
    Sample,
    Score,
)
from service.settings import get_settings
from tests.service.alert_fixtures import (
    add_evaluation,
    add_samples,
    make_channel,
    make_model,
)
from tests.service.api_fixtures import assert_problem

DAY = timedelta(days=1)


def _count(table, *where) -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(table).where(*where))


def _scored_window(model_id: int, n: int = 10, received_at: datetime | None = None,
                   status: str = "done") -> int:
    """A window of ``n`` new samples, scored (score rows; add_evaluation keeps model_stats
    like store())."""
    ids = add_samples(model_id, n, received_at=received_at)
    ev = add_evaluation(model_id, "healthy", status=status, sample_ids=ids)
    if status == "done":
        with session_scope() as s:
            s.add_all(Score(evaluation_id=ev, kind="metric", name=f"m{i}", value=0.5)
                      for i in range(3))
    return ev


def _run(now: datetime, **kw) -> retention.RetentionReport:
    return retention.run(session_factory(), get_settings(), now=now, **kw)


def test_old_samples_go_once_scored_and_unscored_windows_keep_theirs(database_url, service_env):
    model_id = make_model("bot")
    _scored_window(model_id)                      # samples 1-10: scored
    _scored_window(model_id, status="pending")    # 11-20: waiting to be scored
    add_samples(model_id, 5)                      # 21-25: not in a window yet
    now = datetime.now(UTC) + 31 * DAY
    with session_scope() as s:
        assert retention.dry_run(s, get_settings(), now).rows["samples"] == 10
    assert _count(Sample) == 25                   # a dry run changes nothing
    report = _run(now)
    assert report.rows["samples"] == 10 and report.complete
    with session_scope() as s:
        assert min(s.scalars(select(Sample.id))) == 11
    # 29 days old is younger than the 30-day default: kept
    assert _run(datetime.now(UTC) + 29 * DAY).rows["samples"] == 0


def test_a_models_own_retention_overrides_the_default(database_url, service_env):
    model_id = make_model("bot")
    _scored_window(model_id)
    with session_scope() as s:
        s.get(MonitoredModel, model_id).samples_days = 60
    assert _run(datetime.now(UTC) + 31 * DAY).rows["samples"] == 0
    assert _run(datetime.now(UTC) + 61 * DAY).rows["samples"] == 10


def test_old_evaluations_and_their_scores_go_except_the_newest(database_url, service_env):
    model_id = make_model("bot")
    evs = [_scored_window(model_id) for _ in range(3)]
    assert _run(datetime.now(UTC) + 399 * DAY).rows["evaluations"] == 0
    report = _run(datetime.now(UTC) + 401 * DAY)
    assert report.rows["evaluations"] == 2
    with session_scope() as s:
        assert list(s.scalars(select(Evaluation.id))) == [evs[-1]]
        assert set(s.scalars(select(Score.evaluation_id))) == {evs[-1]}
        # counters survive retention (Prometheus counters never go down)
        assert s.get(ModelStats, model_id).evaluations_done == 3


def test_resolved_alerts_and_delivered_notifications_go_after_90_days(database_url,
                                                                       service_env):
    model_id = make_model("bot")
    channel_id = make_channel("hook", "webhook", {"url": "https://example.invalid/hook"})
    now = datetime.now(UTC)
    with session_scope() as s:
        for state in ("resolved", "firing"):
            alert = Alert(model_id=model_id, kind=f"k-{state}", severity="warning", state=state,
                          dedup_key=state, summary="s", details={}, started_at=now,
                          resolved_at=now if state == "resolved" else None)
            s.add(alert)
            s.flush()
            s.add(Notification(alert_id=alert.id, channel_id=channel_id, event="trigger",
                               payload={}, status="sent", attempts=1, next_attempt_at=now,
                               created_at=now))
    assert _run(now + 89 * DAY).rows == dict.fromkeys(retention.CATEGORIES, 0)
    report = _run(now + 91 * DAY)
    assert report.rows["alerts"] == 1
    # the firing alert stays; its delivered trigger goes with the notifications rule
    assert report.rows["notifications"] == 1
    with session_scope() as s:
        assert list(s.scalars(select(Alert.state))) == ["firing"]
    assert _count(Notification) == 0


def test_a_pass_deletes_at_most_its_batch_budget(database_url, service_env, monkeypatch):
    monkeypatch.setenv("COLLAPSEWATCH_RETENTION_BATCH_ROWS", "3")
    get_settings.cache_clear()
    model_id = make_model("bot")
    _scored_window(model_id)
    now = datetime.now(UTC) + 31 * DAY
    first = _run(now, max_batches=2)
    assert first.rows["samples"] == 6 and not first.complete
    rest = _run(now, max_batches=100)
    assert rest.rows["samples"] == 4 and rest.complete


def test_a_deleted_model_disappears_at_once_and_is_purged_later(client, admin_headers,
                                                                 model_name, stored_reference):
    r = client.post(f"/api/v1/models/{model_name}/samples",
                    json={"samples": [{"id": "a", "text": "one output"}]},
                    headers=admin_headers)
    assert r.status_code == 202, r.text
    assert client.delete(f"/api/v1/models/{model_name}", headers=admin_headers).status_code == 204
    assert_problem(client.get(f"/api/v1/models/{model_name}", headers=admin_headers), 404)
    assert model_name not in [m["name"] for m in
                              client.get("/api/v1/models", headers=admin_headers).json()["models"]]
    assert_problem(client.post(f"/api/v1/models/{model_name}/samples",
                               json={"samples": [{"id": "b", "text": "x"}]},
                               headers=admin_headers), 404)
    # the reference is still held by the model being purged
    assert_problem(client.delete(f"/api/v1/references/{stored_reference}",
                                 headers=admin_headers), 409)
    # the name is free again at once
    r = client.post("/api/v1/models", json={"name": model_name, "reference_id": stored_reference},
                    headers=admin_headers)
    assert r.status_code == 201, r.text
    assert _count(MonitoredModel) == 2
    report = _run(datetime.now(UTC))
    assert report.rows["deleted_models"] == 1 and report.complete
    assert _count(MonitoredModel) == 1 and _count(Sample) == 0
    assert client.delete("/api/v1/models/nope", headers=admin_headers).status_code == 404


def test_a_reference_in_use_cannot_be_deleted(client, admin_headers, model_name,
                                              stored_reference):
    body = assert_problem(client.delete(f"/api/v1/references/{stored_reference}",
                                        headers=admin_headers), 409, model_name)
    assert "in use" in body["detail"]
    client.delete(f"/api/v1/models/{model_name}", headers=admin_headers)
    _run(datetime.now(UTC))
    assert client.delete(f"/api/v1/references/{stored_reference}",
                         headers=admin_headers).status_code == 204
    assert _count(Reference) == 0
    assert_problem(client.delete(f"/api/v1/references/{stored_reference}",
                                 headers=admin_headers), 404)


def test_deleting_needs_an_admin_key(client, make_key, model_name, stored_reference):
    read = {"Authorization": f"Bearer {make_key('read')}"}
    assert client.delete(f"/api/v1/models/{model_name}", headers=read).status_code == 403
    assert client.delete(f"/api/v1/references/{stored_reference}",
                         headers=read).status_code == 403


def test_delete_reference_domain_error_names_the_users(database_url, service_env):
    model_id = make_model("bot")
    with session_scope() as s:
        ref_id = s.get(MonitoredModel, model_id).reference_id
    with session_scope() as s, pytest.raises(Conflict, match="bot"):
        retention.delete_reference(s, ref_id)


def test_gc_dry_run_prints_what_would_go_and_changes_nothing(database_url, service_env,
                                                             capsys):
    from service.cli import main

    model_id = make_model("bot")
    _scored_window(model_id, received_at=datetime.now(UTC) - 2 * DAY)
    with session_scope() as s:
        s.get(MonitoredModel, model_id).samples_days = 1
    assert main(["gc", "--dry-run", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dry_run"] is True and out["samples"] == 10 and out["evaluations"] == 0
    assert _count(Sample) == 10
    assert main(["gc"]) == 0
    assert "deleted         10 samples" in capsys.readouterr().out
    assert _count(Sample) == 0



def test_many_quiet_models_do_not_use_up_a_pass(database_url, service_env, monkeypatch):
    # more models than the pass has batches: checking a model with nothing to delete is
    # free, so the pass reaches the last model and finishes
    monkeypatch.setenv("COLLAPSEWATCH_RETENTION_MAX_BATCHES", "3")
    get_settings.cache_clear()
    reference_id = None
    for i in range(8):
        model_id = make_model(f"quiet{i}", reference_id=reference_id)
        with session_scope() as s:
            reference_id = s.get(MonitoredModel, model_id).reference_id
    busy = make_model("zz-busy", reference_id=reference_id)
    _scored_window(busy)
    report = _run(datetime.now(UTC) + 31 * DAY)
    assert report.complete and report.rows["samples"] == 10
