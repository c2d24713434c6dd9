"""Celery tasks of the alerting side (registered by name on the shared Celery app).

Names: collapsewatch.evaluate_alerts(model_id), collapsewatch.check_liveness(),
collapsewatch.deliver_notification(notification_id), collapsewatch.sweep_outbox().

Every task takes ids, is idempotent (the database decides what is left to do) and enqueues
follow-up work only after its own transaction committed. A lost message costs a delay: the
``sweep_outbox`` beat task hands out every due notification again.
"""

from __future__ import annotations

from typing import Any

from service.broker import (
    CHECK_LIVENESS,
    DELIVER_NOTIFICATION,
    EVALUATE_ALERTS,
    SWEEP_OUTBOX,
    celery_app,
)
from service.delivery import outbox
from service.dispatch import enqueue_deliveries
from service.domain import alerts
from service.domain.db import session_scope
from service.domain.tables import MonitoredModel
from service.logging import get_logger

log = get_logger("collapsewatch.alerting.tasks")

# retries due sooner than this are also scheduled with a countdown; later ones are picked up
# by the sweeper, so no message has to sit in a worker's memory for long
COUNTDOWN_LIMIT_SECONDS = 300.0


def run_evaluate_alerts(model_id: int) -> dict[str, Any]:
    with session_scope() as session:
        outcome = alerts.evaluate_model(session, model_id)
    enqueue_deliveries(outcome.notification_ids)
    return {"model_id": model_id, "evaluations": outcome.evaluations_seen,
            "fired": outcome.fired, "resolved": outcome.resolved,
            "notifications": outcome.notification_ids}


def run_check_liveness() -> dict[str, Any]:
    total = alerts.Outcome()
    with session_scope() as session:
        ids = alerts.model_ids(session)
    for model_id in ids:
        # one transaction per model: a slow or failing model does not hold up the rest
        try:
            with session_scope() as session:
                model = session.get(MonitoredModel, model_id)
                if model is None:
                    continue
                outcome = alerts.check_model_liveness(session, model)
                # also the safety net for a lost evaluate_alerts message: finished windows
                # nobody counted yet are counted now (a no-op when there are none)
                outcome.merge(alerts.evaluate_model(session, model_id))
            total.merge(outcome)
            enqueue_deliveries(outcome.notification_ids)
        except Exception:
            log.exception("liveness check failed", extra={"model_id": model_id})
    return {"models": len(ids), "fired": total.fired, "resolved": total.resolved}


def run_deliver_notification(notification_id: int) -> dict[str, Any]:
    result = outbox.deliver(notification_id)
    if result.status in ("retry", "waiting") and result.delay is not None \
            and result.delay <= COUNTDOWN_LIMIT_SECONDS:
        enqueue_deliveries([notification_id], countdown=result.delay)
    return {"notification_id": notification_id, "status": result.status,
            "delay": result.delay, "error": result.error}


def run_sweep_outbox() -> dict[str, Any]:
    with session_scope() as session:
        ids = outbox.due_ids(session)
    return {"due": len(ids), "enqueued": enqueue_deliveries(ids)}


@celery_app.task(name=EVALUATE_ALERTS, ignore_result=True)
def evaluate_alerts(model_id: int) -> dict[str, Any]:
    return run_evaluate_alerts(int(model_id))


@celery_app.task(name=CHECK_LIVENESS, ignore_result=True)
def check_liveness() -> dict[str, Any]:
    return run_check_liveness()


@celery_app.task(name=DELIVER_NOTIFICATION, ignore_result=True)
def deliver_notification(notification_id: int) -> dict[str, Any]:
    return run_deliver_notification(int(notification_id))


@celery_app.task(name=SWEEP_OUTBOX, ignore_result=True)
def sweep_outbox() -> dict[str, Any]:
    return run_sweep_outbox()
