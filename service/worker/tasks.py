"""Celery tasks of the scoring pipeline: plan_windows (beat), score_window(id), reap_stuck
(beat). Tasks take ids and are idempotent; the database decides what is left to do, so a
lost or repeated message costs a delay, never data or a second score set.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import SQLAlchemyError

from service.broker import (
    APPLY_RETENTION,
    PLAN_WINDOWS,
    REAP_STUCK,
    REFERENCE_BANDS,
    SCORE_WINDOW,
    celery_app,
)
from service.dispatch import (
    enqueue_reference_bands,
    enqueue_scoring,
    notify_alerting,
    plan_due_windows,
)
from service.domain import evaluation, retention
from service.domain.clock import as_utc, utcnow
from service.domain.db import is_postgres, session_factory
from service.domain.tables import Evaluation, Reference
from service.logging import get_logger
from service.settings import Settings, get_settings

log = get_logger("collapsewatch.worker")

# an evaluation whose message never went out (broker down at the time) is sent again after
# this long; shorter than the reaper timeout, which is about messages that went out and
# were lost or whose worker died
UNSENT_GRACE_SECONDS = 30.0


def _stuck_rows(session, settings: Settings, now: datetime):
    timeout = now - timedelta(seconds=settings.reaper_timeout_seconds)
    unsent_before = now - timedelta(seconds=min(UNSENT_GRACE_SECONDS,
                                                settings.reaper_timeout_seconds))
    # a running window whose lease ran out is sent again at most once per lease
    lease_ago = now - timedelta(seconds=settings.scoring_lease_seconds)
    not_recently_sent = or_(Evaluation.enqueued_at.is_(None), Evaluation.enqueued_at < lease_ago)
    stmt = select(Evaluation.id, Evaluation.status, Evaluation.attempts, Evaluation.error).where(
        or_(
            # its worker stopped renewing the lease (heartbeat): it died or was killed
            and_(Evaluation.status == "running", evaluation.lease_expired(settings, now),
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
    if is_postgres(session):
        # several reapers (several beat hosts) split the rows instead of double-sending
        stmt = stmt.with_for_update(skip_locked=True)
    return session.execute(stmt).all()


def reap(settings: Settings | None = None, now: datetime | None = None) -> dict[str, list[int]]:
    """Re-enqueue evaluations stuck in pending/running; fail those out of attempts."""
    settings = settings or get_settings()
    now = now or utcnow()
    requeue: list[int] = []
    failed: list[int] = []
    with session_factory()() as session, session.begin():
        for row in _stuck_rows(session, settings, now):
            if row.attempts >= settings.evaluation_max_attempts:
                why = (f"gave up after {row.attempts} attempts: "
                       + (f"last error: {row.error}" if row.error else
                          "the worker scoring it died or timed out each time; "
                          "see the worker logs"))
                if evaluation.fail(session, row.id, why):
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
        from service.domain.band_cache import purge_unused

        purge_unused(settings.band_cache_keep_days, now)
    except SQLAlchemyError as exc:  # housekeeping only: never fail the reaper for it
        log.info("band cache housekeeping skipped", extra={"error": str(exc)})
    return {"requeued": sent, "failed": failed}


def _purge_delivered_messages(broker_url: str, older_than_hours: float = 1.0) -> None:
    """The kombu SQL transport keeps delivered messages (visible = false) forever; drop
    those older than an hour (their work is done or was re-sent by the reaper)."""
    from sqlalchemy import text

    from service.domain.db import get_engine

    url = broker_url.removeprefix("sqla+")
    cutoff = datetime.now() - timedelta(hours=older_than_hours)  # kombu stores local time
    try:
        with get_engine(url).begin() as conn:
            conn.execute(text("DELETE FROM kombu_message WHERE visible = 0 AND timestamp < :t"),
                         {"t": cutoff})
    except SQLAlchemyError as exc:  # housekeeping only: never fail the reaper for it
        log.info("broker housekeeping skipped", extra={"error": str(exc)})


@celery_app.task(name=PLAN_WINDOWS, ignore_result=True)
def plan_windows() -> dict[str, Any]:
    created = plan_due_windows()
    return {"planned": created}


_SETTINGS = get_settings()


@celery_app.task(name=SCORE_WINDOW, bind=True, ignore_result=True, max_retries=None,
                 soft_time_limit=_SETTINGS.score_soft_time_limit_seconds,
                 time_limit=_SETTINGS.score_time_limit_seconds)
def score_window(self, evaluation_id: int) -> dict[str, Any]:
    settings = get_settings()
    try:
        outcome = evaluation.score_window(int(evaluation_id), settings, session_factory())
    except evaluation.TransientError as exc:
        if isinstance(exc.__cause__, SoftTimeLimitExceeded):
            return _timed_out(self, int(evaluation_id), settings)
        # the claim was released; retry soon (the attempts cap in the database bounds this)
        countdown = min(60.0, 2.0 ** exc.attempt)
        log.warning("scoring failed, retrying", extra={"evaluation_id": evaluation_id,
                                                       "error": str(exc),
                                                       "countdown": countdown})
        raise self.retry(countdown=countdown, exc=exc) from exc
    if outcome.status == "done":
        notify_alerting(outcome.model_id)
        _complete_reference_grid(int(evaluation_id), settings)
    return {"evaluation_id": outcome.evaluation_id, "status": outcome.status,
            "health": outcome.health}


# references whose band grid this worker process has checked (_complete_reference_grid)
_GRID_CHECKED: set[int] = set()
# a reference younger than this is left to the reference_bands task POST /references sent
GRID_GRACE_SECONDS = 600.0


def _complete_reference_grid(evaluation_id: int, settings: Settings) -> None:
    """Once per worker process and reference, after a window scored against it: when its
    band grid (REFERENCE_BAND_SIZES) is incomplete in the band cache — a reference stored
    before grids were computed at POST /references, or whose grid task was lost — send
    reference_bands, so later windows between two grid sizes get interpolated bands. A
    reference younger than GRID_GRACE_SECONDS is not checked yet (its own grid task is
    likely still at work). Best effort: a failure leaves the bands to be computed on first
    use."""
    sizes = settings.reference_band_grid
    if not sizes:
        return
    try:
        with session_factory()() as session:
            row = session.execute(
                select(Reference.id, Reference.created_at)
                .join(Evaluation, Evaluation.reference_id == Reference.id)
                .where(Evaluation.id == evaluation_id)).first()
        if row is None or row.id in _GRID_CHECKED:
            return
        reference_id, created_at = row
        if (utcnow() - as_utc(created_at)).total_seconds() < GRID_GRACE_SECONDS:
            return  # its own grid task may still be running: look again later
        _GRID_CHECKED.add(reference_id)
        from service.domain.profiles import missing_reference_grid

        missing = missing_reference_grid(reference_id, sizes)
    except (LookupError, SQLAlchemyError) as exc:
        log.warning("could not check a reference's band grid",
                    extra={"evaluation_id": evaluation_id, "error": str(exc)})
        return
    if missing:
        log.info("reference band grid incomplete; sending reference_bands",
                 extra={"reference_id": reference_id, "missing": [list(k) for k in missing]})
        enqueue_reference_bands(reference_id)


def _timed_out(task, evaluation_id: int, settings: Settings) -> dict[str, Any]:
    """The soft time limit stopped scoring (the claim is already given back): retry the
    window once more, on whichever worker takes the message; the second time, fail it."""
    with session_factory()() as session, session.begin():
        times = evaluation.note_timeout(session, evaluation_id)
        if times >= 2:
            evaluation.fail(session, evaluation_id,
                            f"scoring exceeded the soft time limit "
                            f"({settings.score_soft_time_limit_seconds:.0f} s) twice; use a "
                            "smaller window (PATCH /api/v1/models/{name} window.size)")
    if times >= 2:
        log.error("evaluation failed: time limit", extra={"evaluation_id": evaluation_id})
        return {"evaluation_id": evaluation_id, "status": "failed", "health": None}
    log.warning("scoring hit the soft time limit; retrying once",
                extra={"evaluation_id": evaluation_id,
                       "soft_time_limit_seconds": settings.score_soft_time_limit_seconds})
    raise task.retry(countdown=0, max_retries=None)


@celery_app.task(name=REFERENCE_BANDS, ignore_result=True,
                 soft_time_limit=_SETTINGS.score_soft_time_limit_seconds,
                 time_limit=_SETTINGS.score_time_limit_seconds)
def reference_bands(reference_id: int) -> dict[str, Any]:
    """A new reference's human bands at REFERENCE_BAND_SIZES, into the database band
    cache. Best effort: any failure leaves the bands to be computed on first use."""
    from service.domain.profiles import compute_reference_grid

    sizes = get_settings().reference_band_grid
    started = time.monotonic()
    try:
        keys = compute_reference_grid(int(reference_id), sizes)
    except (LookupError, SQLAlchemyError, SoftTimeLimitExceeded) as exc:
        log.warning("reference bands not computed; they are computed on first use",
                    extra={"reference_id": reference_id, "error": str(exc)})
        return {"reference_id": reference_id, "bands": []}
    log.info("reference bands computed", extra={
        "reference_id": reference_id, "bands": [list(k) for k in keys],
        "seconds": round(time.monotonic() - started, 2)})
    return {"reference_id": reference_id, "bands": [list(k) for k in keys]}


@celery_app.task(name=REAP_STUCK, ignore_result=True)
def reap_stuck() -> dict[str, list[int]]:
    return reap()


@celery_app.task(name=APPLY_RETENTION, ignore_result=True)
def apply_retention() -> dict[str, object]:
    """One bounded retention pass (service.domain.retention); the rest waits for the next."""
    return retention.run(session_factory(), get_settings()).as_dict()
