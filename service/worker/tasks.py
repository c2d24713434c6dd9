"""Celery tasks of the scoring pipeline: plan_windows (beat), score_window(id), reap_stuck
(beat). Tasks take ids and are idempotent; the database decides what is left to do, so a
lost or repeated message costs a delay, never data or a second score set.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service import scoring, windows
from service.db import session_factory
from service.logging import get_logger
from service.models import Evaluation
from service.settings import Settings, get_settings
from service.worker.celery_app import (
    BROKER_ERRORS,
    EVALUATE_ALERTS,
    PLAN_WINDOWS,
    REAP_STUCK,
    SCORE_WINDOW,
    celery_app,
)

log = get_logger("collapsewatch.worker")

# an evaluation whose message never went out (broker down at the time) is sent again after
# this long; shorter than the reaper timeout, which is about messages that went out and
# were lost or whose worker died
UNSENT_GRACE_SECONDS = 30.0


def _now() -> datetime:
    return datetime.now(UTC)


def enqueue_scoring(evaluation_ids: Iterable[int]) -> list[int]:
    """Send score_window for committed evaluations; record when. Stops at the first broker
    error (the rest stay unsent and the reaper sends them later)."""
    sent: list[int] = []
    for evaluation_id in evaluation_ids:
        try:
            celery_app.send_task(SCORE_WINDOW, args=[evaluation_id])
        except BROKER_ERRORS as exc:
            log.warning("could not enqueue score_window; it will be sent again later",
                        extra={"evaluation_id": evaluation_id, "error": str(exc)})
            break
        sent.append(evaluation_id)
    if sent:
        with session_factory()() as session, session.begin():
            session.execute(update(Evaluation).where(Evaluation.id.in_(sent))
                            .values(enqueued_at=_now())
                            .execution_options(synchronize_session=False))
    return sent


def plan_and_enqueue(model_id: int, now: datetime | None = None) -> list[int]:
    """Plan one model's due windows in their own transaction, then enqueue them."""
    try:
        with session_factory()() as session, session.begin():
            ids = windows.plan_model(session, model_id, now)
    except IntegrityError as exc:
        # another planner closed the same window first (the unique constraint says so)
        log.warning("window already planned elsewhere", extra={"model_id": model_id,
                                                               "error": str(exc.orig)})
        return []
    enqueue_scoring(ids)
    return ids


def plan_due_windows(now: datetime | None = None) -> list[int]:
    """Plan every model's due windows (one transaction per model) and enqueue them."""
    with session_factory()() as session:
        model_ids = windows.models_with_unwindowed_samples(session)
    created: list[int] = []
    for model_id in model_ids:
        created.extend(plan_and_enqueue(model_id, now))
    return created


def plan_after_ingest(model_name: str) -> None:
    """Close a window as soon as ingest fills it, instead of at beat's next planning pass.

    Runs after an ingest request has committed and answered. Only full windows are
    planned here (windows closed by age are beat's); any failure is logged and left to
    beat, which plans the same window a moment later.
    """
    try:
        with session_factory()() as session:
            model_id = windows.full_window_waiting(session, model_name)
        if model_id is not None:
            plan_and_enqueue(model_id)
    except SQLAlchemyError as exc:
        log.warning("planning after ingest failed; beat will plan the window",
                    extra={"model": model_name, "error": str(exc)})


def _stuck_rows(session, settings: Settings, now: datetime):
    timeout = now - timedelta(seconds=settings.reaper_timeout_seconds)
    unsent_before = now - timedelta(seconds=min(UNSENT_GRACE_SECONDS,
                                                settings.reaper_timeout_seconds))
    not_recently_sent = or_(Evaluation.enqueued_at.is_(None), Evaluation.enqueued_at < timeout)
    stmt = select(Evaluation.id, Evaluation.status, Evaluation.attempts, Evaluation.error).where(
        or_(
            # a worker claimed it and has not finished within the lease: it died or hangs
            and_(Evaluation.status == "running", Evaluation.started_at < timeout,
                 not_recently_sent),
            # never sent (the broker was down)
            and_(Evaluation.status == "pending", Evaluation.enqueued_at.is_(None),
                 Evaluation.created_at < unsent_before),
            # sent long ago and still pending: the message was lost
            and_(Evaluation.status == "pending", Evaluation.enqueued_at < timeout),
            # released after errors until out of attempts
            and_(Evaluation.status == "pending",
                 Evaluation.attempts >= settings.evaluation_max_attempts),
        )
    ).order_by(Evaluation.id).limit(1000)
    if session.bind.dialect.name == "postgresql":
        # several reapers (several beat hosts) split the rows instead of double-sending
        stmt = stmt.with_for_update(skip_locked=True)
    return session.execute(stmt).all()


def reap(settings: Settings | None = None, now: datetime | None = None) -> dict[str, list[int]]:
    """Re-enqueue evaluations stuck in pending/running; fail those out of attempts."""
    settings = settings or get_settings()
    now = now or _now()
    requeue: list[int] = []
    failed: list[int] = []
    with session_factory()() as session, session.begin():
        for row in _stuck_rows(session, settings, now):
            if row.attempts >= settings.evaluation_max_attempts:
                why = (f"gave up after {row.attempts} attempts: "
                       + (f"last error: {row.error}" if row.error else
                          "the worker scoring it died or timed out each time; "
                          "see the worker logs"))
                if scoring.fail(session, row.id, why):
                    failed.append(row.id)
            else:
                requeue.append(row.id)
    if failed:
        log.error("evaluations failed for good", extra={"evaluations": failed})
    sent = enqueue_scoring(requeue)
    if requeue:
        log.warning("stuck evaluations re-enqueued", extra={"evaluations": sent,
                                                            "unsent": len(requeue) - len(sent)})
    if settings.embedded_broker:
        _purge_delivered_messages(settings.resolved_broker_url)
    try:
        from service.bandstore import purge_unused

        purge_unused(settings.band_cache_keep_days, now)
    except SQLAlchemyError as exc:  # housekeeping only: never fail the reaper for it
        log.info("band cache housekeeping skipped", extra={"error": str(exc)})
    return {"requeued": sent, "failed": failed}


def _purge_delivered_messages(broker_url: str, older_than_hours: float = 1.0) -> None:
    """The kombu SQL transport keeps delivered messages (visible = false) forever; drop
    those older than an hour (their work is done or was re-sent by the reaper)."""
    from sqlalchemy import text

    from service.db import get_engine

    url = broker_url.removeprefix("sqla+")
    cutoff = datetime.now() - timedelta(hours=older_than_hours)  # kombu stores local time
    try:
        with get_engine(url).begin() as conn:
            conn.execute(text("DELETE FROM kombu_message WHERE visible = 0 AND timestamp < :t"),
                         {"t": cutoff})
    except SQLAlchemyError as exc:  # housekeeping only: never fail the reaper for it
        log.info("broker housekeeping skipped", extra={"error": str(exc)})


def notify_alerting(model_id: int) -> None:
    try:
        celery_app.send_task(EVALUATE_ALERTS, args=[model_id])
    except BROKER_ERRORS as exc:
        # check_liveness and the next evaluation catch up; the scores are stored
        log.warning("could not enqueue evaluate_alerts", extra={"model_id": model_id,
                                                                "error": str(exc)})


@celery_app.task(name=PLAN_WINDOWS, ignore_result=True)
def plan_windows() -> dict[str, Any]:
    created = plan_due_windows()
    return {"planned": created}


@celery_app.task(name=SCORE_WINDOW, bind=True, ignore_result=True, max_retries=None)
def score_window(self, evaluation_id: int) -> dict[str, Any]:
    settings = get_settings()
    try:
        outcome = scoring.score_window(int(evaluation_id), settings, session_factory())
    except scoring.TransientError as exc:
        # the claim was released; retry soon (the attempts cap in the database bounds this)
        countdown = min(60.0, 2.0 ** exc.attempt)
        log.warning("scoring failed, retrying", extra={"evaluation_id": evaluation_id,
                                                       "error": str(exc),
                                                       "countdown": countdown})
        raise self.retry(countdown=countdown, exc=exc) from exc
    if outcome.status == "done":
        notify_alerting(outcome.model_id)
    return {"evaluation_id": outcome.evaluation_id, "status": outcome.status,
            "health": outcome.health}


@celery_app.task(name=REAP_STUCK, ignore_result=True)
def reap_stuck() -> dict[str, list[int]]:
    return reap()
