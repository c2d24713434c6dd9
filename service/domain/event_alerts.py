"""Event alerts: alerts raised by something that happened to a model, not by a window rule.

A window rule (``service.domain.alerts``) counts windows through hysteresis; an event alert
fires when the domain decides so (today: the automatic baseline was refused,
``baseline_rejected``) and resolves when the domain says the cause is gone (a baseline was
pinned). It has no rule (``rule_id`` NULL), at most one alert of a kind fires per model at
a time, and every change goes through the same outbox as the window alerts, in the caller's
transaction (the beat's outbox sweep delivers rows nobody enqueued).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from service.domain.alerts import _write_outbox, dedup_key, open_alert, resolve
from service.domain.clock import utcnow
from service.domain.tables import Alert, MonitoredModel
from service.logging import get_logger

log = get_logger("collapsewatch.alerting")

BASELINE_REJECTED = "baseline_rejected"
EVENT_KINDS = (BASELINE_REJECTED,)
EVENT_SEVERITY = {BASELINE_REJECTED: "warning"}
# an event kind's title is in service.domain.alerts.TITLES, with every other kind's: the
# payload builder and the resolve and acknowledgement texts read it there


def fire_event(session: Session, model: MonitoredModel, kind: str, summary: str,
               details: dict[str, Any]) -> tuple[Alert | None, list[int]]:
    """Fire ``kind`` for ``model`` unless one is already firing (then its summary and details
    are brought up to date and nothing is sent again). Returns (the new alert or None, outbox
    ids to enqueue after the commit). The caller holds the model's row lock and commits."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"{kind!r} is not an event alert kind")
    current = open_alert(session, model.id, kind)
    if current is not None:
        session.execute(update(Alert).where(Alert.id == current.id)
                        .values(summary=summary, details=details)
                        .execution_options(synchronize_session=False))
        return None, []
    alert = Alert(model_id=model.id, rule_id=None, kind=kind, severity=EVENT_SEVERITY[kind],
                  state="firing", dedup_key=dedup_key(model.name, kind), summary=summary,
                  details=details, started_at=utcnow())
    session.add(alert)
    session.flush()
    ids = _write_outbox(session, alert, model.name, "trigger")
    log.warning("alert firing", extra={"model": model.name, "kind": kind,
                                       "severity": alert.severity, "alert_id": alert.id,
                                       "notifications": len(ids)})
    return alert, ids


def resolve_event(session: Session, model_id: int, model_name: str, kind: str,
                  reason: str) -> list[int]:
    """Resolve the firing ``kind`` alert of a model, if any; outbox ids to enqueue."""
    current = open_alert(session, model_id, kind)
    if current is None:
        return []
    return resolve(session, current, model_name, reason)
