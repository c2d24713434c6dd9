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

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.domain.alerts import _write_outbox, dedup_key, open_alert, resolve
from service.domain.clock import utcnow
from service.domain.tables import Alert, MonitoredModel, Notification
from service.logging import get_logger

log = get_logger("collapsewatch.alerting")

BASELINE_REJECTED = "baseline_rejected"
EVENT_KINDS = (BASELINE_REJECTED,)
EVENT_SEVERITY = {BASELINE_REJECTED: "warning"}
# the window rules' titles live in service.domain.alerts; an event kind's title is here
EVENT_TITLES = {BASELINE_REJECTED: "automatic baseline refused (its windows read collapse)"}


def _retitle(session: Session, ids: list[int], model_name: str, kind: str) -> None:
    """Give the outbox rows just written the event's own title (the shared payload builder
    knows only the window rules' titles)."""
    title = f"{model_name}: {EVENT_TITLES[kind]}"
    for row in session.scalars(select(Notification).where(Notification.id.in_(ids))):
        row.payload = {**(row.payload or {}), "title": title}
    session.flush()


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
    _retitle(session, ids, model.name, kind)
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
    ids = resolve(session, current, model_name, reason)
    _retitle(session, ids, model_name, kind)
    return ids
