"""score_window and the reaper, in this process against SQLite and PostgreSQL.

The tasks' logic runs here directly (the real functions the Celery tasks call); the
process tests (test_pipeline_processes.py) run the same code in real Celery workers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text, update

from service.domain.tables import Evaluation, Score
from tests.service.api_fixtures import store_reference
from tests.service.pipeline_fixtures import (
    WINDOW,
    add_model,
    count_rows,
    evaluation,
    ingest,
    plan_now,
    score_now,
)


def _score_keys(evaluation_id: int) -> list[tuple[str, str]]:
    from service.domain.db import session_scope

    with session_scope() as session:
        return sorted(session.execute(select(Score.kind, Score.name)
                                      .where(Score.evaluation_id == evaluation_id)).all())


@pytest.fixture
def one_window(pipeline_env, reference_profile, reference_documents, window_documents):
    """A model with one planned (pending) window of real human documents."""
    ref = store_reference(reference_profile, reference_documents)
    add_model("bot", ref, size=WINDOW)
    ingest("bot", window_documents[:WINDOW])
    (evaluation_id,) = plan_now()
    return evaluation_id


def test_score_window_stores_the_score_json_and_flat_scores_once(one_window):
    import metrics

    outcome = score_now(one_window)
    assert outcome.status == "done"
    row = evaluation(one_window)
    assert row.status == "done" and row.attempts == 1 and row.error is None
    result = row.result
    assert set(result) >= {"reference", "baseline", "documents", "tokens", "health",
                           "signals", "metrics"}
    assert result["health"] in metrics.HEALTH_STATES
    assert row.health == result["health"] and row.documents == result["documents"] == WINDOW
    assert row.tokens == result["tokens"] and row.duration_seconds > 0
    assert result["baseline"] is None and row.baseline_id is None
    keys = _score_keys(one_window)
    expected = sorted([("metric", m) for m in result["metrics"]]
                      + [("signal", s) for s in result["signals"]])
    assert keys == expected
    assert {s for k, s in keys if k == "signal"} == set(metrics.SIGNALS)

    # delivered again: nothing is scored or written twice
    assert score_now(one_window).status == "skipped"
    assert _score_keys(one_window) == expected
    assert evaluation(one_window).attempts == 1


def test_flat_scores_match_the_score_json(one_window):
    from service.domain.db import session_scope

    score_now(one_window)
    result = evaluation(one_window).result
    with session_scope() as session:
        rows = {(r.kind, r.name): r for r in session.scalars(select(Score))}
    for name, met in result["metrics"].items():
        row = rows[("metric", name)]
        assert row.value == pytest.approx(met["value"]) if met["value"] is not None \
            else row.value is None
        assert row.human_mean == pytest.approx(met["human_mean"])
        assert row.ratio == pytest.approx(met["ratio"]) if met["ratio"] is not None \
            else row.ratio is None
        assert row.signal == met.get("signal")
    for name, sig in result["signals"].items():
        row = rows[("signal", name)]
        assert row.ratio == pytest.approx(sig["ratio"])
        assert row.outside_band == sig["outside_band"]


def test_a_live_lease_is_not_taken_and_an_expired_one_is(one_window, window_result):
    from service.domain import evaluation as scoring
    from service.domain.db import session_factory
    from service.settings import get_settings

    settings = get_settings()
    maker = session_factory()
    with maker() as session, session.begin():
        first = scoring.claim(session, one_window, settings)
    with maker() as session, session.begin():
        assert scoring.claim(session, one_window, settings) is None  # a worker holds it
    later = datetime.now(UTC) + timedelta(seconds=settings.reaper_timeout_seconds + 1)
    with maker() as session, session.begin():
        second = scoring.claim(session, one_window, settings, now=later)
    assert (first, second) == (1, 2)
    # the first worker comes back late: its result is discarded, the new owner's is kept
    with maker() as session, session.begin():
        assert not scoring.store(session, one_window, first, None, window_result, 1.0)
    assert count_rows(Score) == 0
    with maker() as session, session.begin():
        assert scoring.store(session, one_window, second, None, window_result, 1.0)
    assert evaluation(one_window).status == "done"
    assert count_rows(Score) == len(window_result["metrics"]) + len(window_result["signals"])


def test_transient_error_releases_the_claim(one_window):
    from service.domain import evaluation as scoring
    from service.domain.db import session_factory
    from service.settings import get_settings

    maker = session_factory()
    with maker() as session, session.begin():
        attempt = scoring.claim(session, one_window, get_settings())
    with maker() as session, session.begin():
        assert scoring.release(session, one_window, attempt, "OperationalError: gone")
    row = evaluation(one_window)
    assert row.status == "pending" and row.error == "OperationalError: gone"
    assert score_now(one_window).status == "done"
    assert evaluation(one_window).attempts == 2


def test_a_corrupt_profile_fails_the_evaluation_with_a_reason(pipeline_env,
                                                              window_documents):
    from tests.service.pipeline_fixtures import add_reference

    ref = add_reference("broken")  # its profile is not a readable profile
    add_model("bot", ref, size=WINDOW)
    ingest("bot", window_documents[:WINDOW])
    (evaluation_id,) = plan_now()
    assert score_now(evaluation_id).status == "failed"
    row = evaluation(evaluation_id)
    assert row.status == "failed" and "ProfileError" in row.error
    assert count_rows(Score) == 0
    assert score_now(evaluation_id).status == "skipped"  # failed for good


def test_profiles_are_loaded_once_per_sha256(pipeline_env, reference_profile,
                                             reference_documents, window_documents):
    from service.domain.profiles import PROFILES

    ref = store_reference(reference_profile, reference_documents)
    add_model("bot", ref, size=WINDOW)
    ingest("bot", window_documents[:2 * WINDOW])
    ids = plan_now()
    PROFILES.clear()
    before = PROFILES.loads
    for evaluation_id in ids:
        assert score_now(evaluation_id).status == "done"
    assert PROFILES.loads - before == 1


# ---------------------------------------------------------------- the reaper


def _set(evaluation_id: int, **values) -> None:
    from service.domain.db import session_scope

    with session_scope() as session:
        session.execute(update(Evaluation).where(Evaluation.id == evaluation_id).values(**values))


def _broker_messages(broker_url: str) -> list[str]:
    from sqlalchemy import create_engine

    engine = create_engine(broker_url.removeprefix("sqla+"))
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(text("SELECT payload FROM kombu_message"))]
    finally:
        engine.dispose()


def test_reaper_resends_stuck_work_and_gives_up_after_the_attempt_cap(pipeline_env):
    from service.domain.evaluation import utcnow
    from service.settings import get_settings
    from service.worker.tasks import reap
    from tests.service.pipeline_fixtures import add_reference

    settings = get_settings()
    add_model("bot", add_reference(), size=5)
    ingest("bot", [f"t{i}" for i in range(25)])
    died, lost, unsent, fresh, exhausted = plan_now()
    now = utcnow()
    old = now - timedelta(seconds=settings.reaper_timeout_seconds + 5)
    _set(died, status="running", attempts=1, started_at=old, enqueued_at=old)
    _set(lost, enqueued_at=old, created_at=old)
    _set(unsent, enqueued_at=None, created_at=old)
    _set(fresh, enqueued_at=now, created_at=now)
    _set(exhausted, status="running", attempts=settings.evaluation_max_attempts,
         started_at=old)

    outcome = reap(settings, now=now)
    assert sorted(outcome["requeued"]) == sorted([died, lost, unsent])
    assert outcome["failed"] == [exhausted]
    gone = evaluation(exhausted)
    assert gone.status == "failed" and "gave up after" in gone.error
    assert evaluation(died).enqueued_at is not None
    # the messages really are on the broker
    messages = _broker_messages(settings.resolved_broker_url)
    assert len(messages) == 3
    # just re-sent: the next pass leaves them alone
    assert reap(settings, now=now + timedelta(seconds=1))["requeued"] == []


def test_reaper_fails_work_released_until_out_of_attempts(pipeline_env):
    from service.settings import get_settings
    from service.worker.tasks import reap
    from tests.service.pipeline_fixtures import add_reference

    settings = get_settings()
    add_model("bot", add_reference(), size=5)
    ingest("bot", [f"t{i}" for i in range(5)])
    (evaluation_id,) = plan_now()
    _set(evaluation_id, status="pending", attempts=settings.evaluation_max_attempts,
         error="OperationalError: the database went away")
    assert reap(settings)["failed"] == [evaluation_id]
    row = evaluation(evaluation_id)
    assert row.status == "failed"
    assert "last error: OperationalError" in row.error
