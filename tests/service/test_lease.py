"""Scoring lease and time limits with real worker processes (PostgreSQL + Redis): a slow
window keeps its lease through the heartbeat, a killed worker's window is re-scored within a
minute, a stuck task is stopped by the soft time limit and retried once. The scorer is
slowed down by the ``scoring_delay_seconds`` setting, not by a mock."""

from __future__ import annotations

import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import pytest

from service.domain.tables import Evaluation
from tests.service.api_fixtures import assert_problem
from tests.service.pipeline_fixtures import add_model, ingest, wait_until
from tests.service.test_pipeline_processes import (  # noqa: F401 - fixtures
    _evaluations,
    _statuses,
    make_stack,
    reference_id,
)

pytestmark = pytest.mark.slow

WINDOW = 60


def test_a_slow_window_keeps_its_lease_while_two_workers_and_the_reaper_run(
        make_stack, postgres_url, redis_url, reference_id, human_documents):  # noqa: F811
    # the lease (2 s) is much shorter than the scoring (6 s); only the heartbeat keeps the
    # second worker and the reaper (every 2 s) from taking the window over
    stack = make_stack(postgres_url, redis_url, scoring_lease_seconds=2,
                       scoring_delay_seconds=6)
    model_id = add_model("bot", reference_id(), size=WINDOW, min_size=1)
    with stack.beat(), stack.worker("w1"), stack.worker("w2"):
        ingest("bot", human_documents[6000:6000 + WINDOW])
        wait_until(lambda: _statuses(model_id) == {"done": 1}, 120, "the window to be scored",
                   on_timeout=stack.log_tail)
    (done,) = _evaluations(model_id)
    assert done.attempts == 1, stack.log_tail()
    assert done.duration_seconds >= 6


def test_a_killed_workers_window_is_rescored_within_a_minute(
        make_stack, postgres_url, redis_url, reference_id, human_documents):  # noqa: F811
    # default lease (30 s) and reaper period; the delay only keeps the window running long
    # enough to kill its worker mid-window
    stack = make_stack(postgres_url, redis_url, scoring_delay_seconds=3)
    model_id = add_model("bot", reference_id(), size=WINDOW, min_size=1)
    with stack.beat(), ExitStack() as workers:
        first = workers.enter_context(stack.worker("w1"))
        ingest("bot", human_documents[6000:6000 + WINDOW])
        wait_until(lambda: _statuses(model_id).get("running"), 60, "scoring to start",
                   interval=0.05, on_timeout=stack.log_tail)
        first.kill9()
        killed_at = time.monotonic()
        workers.enter_context(stack.worker("w2"))
        # taken over: claimed again by the second worker (how long scoring itself then takes
        # depends on the machine's load, not on the lease)
        wait_until(lambda: _evaluations(model_id)[0].attempts == 2, 90,
                   "the window to be claimed again", on_timeout=stack.log_tail)
        took = time.monotonic() - killed_at
        wait_until(lambda: _statuses(model_id) == {"done": 1}, 240, "the window to be scored",
                   on_timeout=stack.log_tail)
    (done,) = _evaluations(model_id)
    assert done.attempts == 2
    assert took <= 60, f"taken over {took:.0f} s after the kill"

def test_a_stuck_window_is_stopped_by_the_soft_time_limit_and_retried_once(
        make_stack, postgres_url, redis_url, reference_id, human_documents):  # noqa: F811
    stack = make_stack(postgres_url, redis_url, scoring_delay_seconds=30,
                       score_soft_time_limit_seconds=2, score_time_limit_seconds=20)
    model_id = add_model("bot", reference_id(), size=WINDOW, min_size=1)
    with stack.beat(), stack.worker("w1"):
        ingest("bot", human_documents[6000:6000 + WINDOW])
        wait_until(lambda: _statuses(model_id) == {"failed": 1}, 90, "the window to fail",
                   on_timeout=stack.log_tail)
        log = stack.log_tail()
    (failed,) = _evaluations(model_id)
    assert failed.timeouts == 2 and failed.attempts == 2
    assert "soft time limit" in failed.error
    # the worker logs one line per stop, no traceback
    assert "Traceback" not in log
    assert log.count("scoring hit the soft time limit; retrying once") == 1


def test_renewing_a_lease_keeps_another_claim_out(database_url, service_env):
    from service.domain import evaluation
    from service.domain.db import session_factory
    from service.settings import get_settings
    from tests.service.alert_fixtures import add_evaluation, make_model

    settings = get_settings()
    ev = add_evaluation(make_model("bot"), None, status="pending")
    maker = session_factory()
    t0 = datetime.now(UTC)
    lease = timedelta(seconds=settings.scoring_lease_seconds)
    with maker() as s, s.begin():
        first = evaluation.claim(s, ev, settings, now=t0)
    assert first is not None
    with maker() as s, s.begin():
        assert evaluation.renew_lease(s, ev, first, settings, now=t0 + lease * 0.9)
    with maker() as s, s.begin():
        # past the first lease, inside the renewed one: not claimable
        assert evaluation.claim(s, ev, settings, now=t0 + lease * 1.5) is None
    with maker() as s, s.begin():
        assert evaluation.claim(s, ev, settings, now=t0 + lease * 2) == first + 1
    with maker() as s, s.begin():
        # the first worker's lease is gone: its heartbeat says so
        assert not evaluation.renew_lease(s, ev, first, settings)
        assert s.get(Evaluation, ev).attempts == first + 1

def test_a_window_larger_than_the_cap_is_refused(client, admin_headers, stored_reference,
                                                  monkeypatch):
    from service.settings import get_settings

    monkeypatch.setenv("COLLAPSEWATCH_MAX_WINDOW_SIZE", "1000")
    get_settings.cache_clear()
    r = client.post("/api/v1/models", json={"name": "big", "reference_id": stored_reference,
                                            "window": {"size": 1001}}, headers=admin_headers)
    assert_problem(r, 422, "1000", "window.size")
    r = client.post("/api/v1/models", json={"name": "ok", "reference_id": stored_reference,
                                            "window": {"size": 1000}}, headers=admin_headers)
    assert r.status_code == 201, r.text
    assert_problem(client.patch("/api/v1/models/ok", json={"window": {"size": 5000}},
                                headers=admin_headers), 422, "window.size")
