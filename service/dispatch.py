"""What gets sent to the workers, and when: the producer side of the pipeline.

The API (after an ingest fills a window, after an acknowledgement) and the worker's own
tasks (beat's planning, follow-ups after scoring) enqueue through here, so no transport
imports another. Every function sends only ids of rows that are already committed; a broker
error is logged and left to beat's planning, the reaper or the outbox sweeper.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.broker import (
    BROKER_ERRORS,
    DELIVER_NOTIFICATION,
    EVALUATE_ALERTS,
    REFERENCE_BANDS,
    SCORE_WINDOW,
    celery_app,
)
from service.domain import windows
from service.domain.clock import utcnow
from service.domain.db import session_factory
from service.domain.tables import Evaluation
from service.logging import get_logger

log = get_logger("collapsewatch.dispatch")


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
                            .values(enqueued_at=utcnow())
                            .execution_options(synchronize_session=False))
    return sent


def enqueue_reference_bands(reference_id: int) -> bool:
    """Send reference_bands for a committed reference: a worker computes its band grid
    (``REFERENCE_BAND_SIZES``). A broker error is logged; the bands are then computed on
    first use, as without the grid."""
    try:
        celery_app.send_task(REFERENCE_BANDS, args=[int(reference_id)])
    except BROKER_ERRORS as exc:
        log.warning("could not enqueue reference_bands; bands are computed on first use",
                    extra={"reference_id": reference_id, "error": str(exc)})
        return False
    return True


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


def notify_alerting(model_id: int) -> None:
    try:
        celery_app.send_task(EVALUATE_ALERTS, args=[model_id])
    except BROKER_ERRORS as exc:
        # check_liveness and the next evaluation catch up; the scores are stored
        log.warning("could not enqueue evaluate_alerts", extra={"model_id": model_id,
                                                                "error": str(exc)})


def enqueue_deliveries(notification_ids: list[int], countdown: float | None = None) -> int:
    """Send delivery messages; a broker failure is logged and left to the sweeper."""
    sent = 0
    for nid in notification_ids:
        try:
            celery_app.send_task(DELIVER_NOTIFICATION, args=[nid], countdown=countdown)
            sent += 1
        except BROKER_ERRORS as exc:  # broker down: the row stays pending; swept later
            log.warning("could not enqueue notification; the sweeper will retry",
                        extra={"notification_id": nid, "error": str(exc)})
    return sent
