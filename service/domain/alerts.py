"""Alert engine: per-model rules, hysteresis counters, alerts and their outbox rows.

Window rules (``early_collapse``, ``collapse``) look at every finished evaluation once, in
window order; a rule fires after ``fire_after_windows`` consecutive windows in its state and
resolves after ``resolve_after_windows`` consecutive healthy ones. Time rules
(``no_samples``, ``evaluations_stale``) are checked by the liveness beat task and fire as soon
as their condition has held for ``threshold_seconds``.

Every alert change writes its notification rows (the outbox) in the same transaction, so a
crash can neither lose a notification nor send one for a change that was rolled back. The
caller enqueues the delivery tasks after the commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from metrics.trend import describe as describe_trend
from service.domain.clock import as_utc_or_none, utcnow
from service.domain.db import insert_missing, is_postgres
from service.domain.tables import (
    Alert,
    AlertRule,
    AlertState,
    Channel,
    Evaluation,
    MonitoredModel,
    Notification,
    Sample,
)
from service.logging import get_logger
from service.settings import Settings, get_settings

log = get_logger("collapsewatch.alerting")

WINDOW_KINDS = ("early_collapse", "collapse")
TIME_KINDS = ("no_samples", "evaluations_stale")
RULE_KINDS = WINDOW_KINDS + TIME_KINDS
SEVERITIES = ("warning", "critical")
DEFAULT_SEVERITY = {
    "early_collapse": "warning",
    "collapse": "critical",
    "no_samples": "warning",
    "evaluations_stale": "warning",
}
SIGNALS = ("diversity", "tail_coverage", "sameness")
# the direction each signal moves under collapse (sameness rises, the others fall)
SIGNAL_FALLS = {"diversity": True, "tail_coverage": True, "sameness": False}
TITLES = {
    "early_collapse": "early collapse (tails thinning)",
    "collapse": "collapse",
    "no_samples": "no samples received",
    "evaluations_stale": "evaluations are stale",
}

BAD, GOOD = "bad", "good"


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


def dedup_key(model_name: str, kind: str) -> str:
    """Deterministic per model and alert kind (PagerDuty folds repeats into one incident)."""
    key = f"collapsewatch/{model_name}/{kind}"
    if len(key) <= 128:
        return key
    return f"collapsewatch/{hashlib.sha256(model_name.encode()).hexdigest()[:40]}/{kind}"


# ---------------------------------------------------------------------------------------------
# rules


def default_rules(model: MonitoredModel, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The rules a model gets unless someone edits them."""
    s = settings or get_settings()
    out = []
    for kind in RULE_KINDS:
        out.append({
            "kind": kind,
            "severity": DEFAULT_SEVERITY[kind],
            "enabled": True,
            "fire_after_windows": s.alert_fire_after_windows,
            "resolve_after_windows": s.alert_resolve_after_windows,
            "threshold_seconds": {"no_samples": s.alert_no_samples_seconds,
                                  "evaluations_stale": s.alert_evaluations_stale_seconds
                                  }.get(kind),
            "params": {},
        })
    return out


def ensure_rules(session: Session, model: MonitoredModel) -> dict[str, AlertRule]:
    """Create the default rules a model lacks (idempotent); return them by kind."""
    insert_missing(session, AlertRule.__table__, [
        {"model_id": model.id, "created_at": utcnow(), "updated_at": utcnow(), **rule}
        for rule in default_rules(model)
    ], keys=("model_id", "kind"))
    rules = session.scalars(select(AlertRule).where(AlertRule.model_id == model.id)).all()
    return {r.kind: r for r in rules}


def _lock_states(session: Session, model_id: int, kinds: Sequence[str]) -> dict[str, AlertState]:
    """Create and lock this model's counter rows for ``kinds``.

    On SQLite a no-op UPDATE takes the write lock before anything is read; on PostgreSQL
    the missing rows are inserted first so that they exist for SELECT ... FOR UPDATE. Either
    way two workers evaluating the same model run one after the other, and each evaluation
    is counted once. Rows that exist are not inserted again (no sequence value is drawn).
    """
    if not is_postgres(session):
        session.execute(text("UPDATE alert_states SET kind = kind WHERE model_id = :id"),
                        {"id": model_id})
    insert_missing(session, AlertState.__table__, [
        {"model_id": model_id, "kind": k, "consecutive_bad": 0, "consecutive_good": 0,
         "updated_at": utcnow()} for k in kinds
    ], keys=("model_id", "kind"))
    stmt = (select(AlertState)
            .where(AlertState.model_id == model_id, AlertState.kind.in_(kinds))
            .order_by(AlertState.kind)
            .execution_options(populate_existing=True))
    if is_postgres(session):
        stmt = stmt.with_for_update()
    return {s.kind: s for s in session.scalars(stmt).all()}


# ---------------------------------------------------------------------------------------------
# classification and hysteresis (pure)


def signal_ratio(result: dict[str, Any] | None, signal: str,
                 against: str = "baseline") -> float | None:
    """A signal's ratio from Score JSON: vs the baseline when asked and present, else vs human."""
    sig = ((result or {}).get("signals") or {}).get(signal) or {}
    if against == "baseline" and sig.get("baseline_ratio") is not None:
        return float(sig["baseline_ratio"])
    return float(sig["ratio"]) if sig.get("ratio") is not None else None


def crossed_thresholds(result: dict[str, Any] | None, params: dict[str, Any]) -> list[str]:
    """Signals past the rule's optional ratio thresholds, e.g. ``{"tail_coverage": 0.8}``.

    A threshold on a falling signal (diversity, tail_coverage) is a floor, on sameness a
    ceiling. Ratios are taken against the baseline when the window has one
    (``params["against"] = "human"`` changes that).
    """
    out = []
    against = params.get("against", "baseline")
    for signal, limit in (params.get("thresholds") or {}).items():
        ratio = signal_ratio(result, signal, against)
        if ratio is None:
            continue
        if (ratio < limit) if SIGNAL_FALLS.get(signal, True) else (ratio > limit):
            out.append(signal)
    return out


def classify(kind: str, health: str | None, result: dict[str, Any] | None,
             params: dict[str, Any] | None = None) -> str | None:
    """Is one window bad, good, or uninformative for a window rule?

    ``early_collapse`` counts early and full collapse as bad and only healthy as good;
    ``collapse`` counts only collapse as bad, so it resolves when the model is back to early
    collapse (the warning then stays). ``insufficient_data`` changes no counter: too few
    samples say nothing either way. Optional thresholds in ``params`` add bad windows.
    """
    if health is None or health == "insufficient_data":
        return None
    if crossed_thresholds(result, params or {}):
        return BAD
    if kind == "early_collapse":
        return BAD if health in ("early_collapse", "collapse") else GOOD
    if kind == "collapse":
        return BAD if health == "collapse" else GOOD
    raise ValueError(f"{kind!r} is not a window rule")


@dataclass
class Counters:
    bad: int = 0
    good: int = 0


def step(counters: Counters, verdict: str | None, firing: bool, fire_after: int,
         resolve_after: int) -> tuple[Counters, str | None]:
    """Advance the hysteresis counters by one window; return (counters, 'fire'|'resolve'|None)."""
    if verdict == BAD:
        counters = Counters(bad=counters.bad + 1, good=0)
    elif verdict == GOOD:
        counters = Counters(bad=0, good=counters.good + 1)
    if not firing and counters.bad >= fire_after:
        return counters, "fire"
    if firing and counters.good >= resolve_after:
        return counters, "resolve"
    return counters, None


# ---------------------------------------------------------------------------------------------
# alerts and outbox


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def window_summary(model_name: str, kind: str, evaluation: Evaluation, windows: int) -> str:
    result = evaluation.result or {}
    parts = []
    for signal in SIGNALS:
        human = signal_ratio(result, signal, "human")
        base = signal_ratio(result, signal, "baseline") if result.get("baseline") else None
        text = f"{signal} {_fmt(human)}x human"
        if base is not None:
            text += f" / {_fmt(base)}x baseline"
        parts.append(text)
    text = (f"model '{model_name}' is in {evaluation.health} for {windows} consecutive "
            f"window(s) (latest window {evaluation.window_index}): " + "; ".join(parts))
    # a sustained shift (the sequential detector) says which signal, since when, how much
    sustained = describe_trend(result.get("trend") or {})
    if sustained:
        text += "; sustained: " + "; ".join(sustained)
    return text


def alert_payload(alert: Alert, model_name: str, event: str, settings: Settings | None = None
                  ) -> dict[str, Any]:
    """Everything a channel needs, frozen into the outbox row."""
    s = settings or get_settings()
    return {
        "event": event,
        "alert_id": alert.id,
        "dedup_key": alert.dedup_key,
        "model": model_name,
        "kind": alert.kind,
        "severity": alert.severity,
        "state": alert.state,
        "title": f"{model_name}: {TITLES.get(alert.kind, alert.kind)}",
        "summary": alert.summary,
        "details": alert.details or {},
        "started_at": _iso(alert.started_at),
        "resolved_at": _iso(alert.resolved_at),
        "acknowledged_at": _iso(alert.acknowledged_at),
        "acknowledged_by": alert.acknowledged_by,
        "url": f"{s.public_url.rstrip('/')}/api/v1/alerts?model={model_name}",
    }


def _iso(ts: datetime | None) -> str | None:
    ts = as_utc_or_none(ts)
    return ts.isoformat() if ts else None


def matching_channels(session: Session, model_name: str, severity: str) -> list[Channel]:
    channels = session.scalars(select(Channel).where(Channel.enabled.is_(True))
                               .order_by(Channel.id)).all()
    return [c for c in channels
            if severity_rank(severity) >= severity_rank(c.min_severity)
            and (not c.models or model_name in c.models)]


def _write_outbox(session: Session, alert: Alert, model_name: str, event: str) -> list[int]:
    """Outbox rows for one alert event; an acknowledgement or a resolve goes to the channels
    that got the trigger."""
    if event in ("acknowledge", "resolve"):
        channel_ids = session.scalars(
            select(Notification.channel_id)
            .where(Notification.alert_id == alert.id, Notification.event == "trigger")).all()
    else:
        channel_ids = [c.id for c in matching_channels(session, model_name, alert.severity)]
    if not channel_ids:
        return []
    payload = alert_payload(alert, model_name, event)
    now = utcnow()
    insert_missing(session, Notification.__table__, [
        {"alert_id": alert.id, "channel_id": cid, "event": event, "payload": payload,
         "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}
        for cid in channel_ids
    ], keys=("alert_id", "channel_id", "event"))
    return list(session.scalars(
        select(Notification.id).where(Notification.alert_id == alert.id,
                                      Notification.event == event,
                                      Notification.status == "pending")).all())


def open_alert(session: Session, model_id: int, kind: str) -> Alert | None:
    return session.scalar(select(Alert).where(Alert.model_id == model_id, Alert.kind == kind,
                                              Alert.state == "firing")
                          .order_by(Alert.id.desc()).limit(1))


def fire(session: Session, model: MonitoredModel, rule: AlertRule, summary: str,
         details: dict[str, Any], evaluation_id: int | None = None) -> tuple[Alert, list[int]]:
    alert = Alert(model_id=model.id, rule_id=rule.id, kind=rule.kind, severity=rule.severity,
                  state="firing", dedup_key=dedup_key(model.name, rule.kind), summary=summary,
                  details=details, started_at=utcnow(), last_evaluation_id=evaluation_id)
    session.add(alert)
    session.flush()
    ids = _write_outbox(session, alert, model.name, "trigger")
    log.warning("alert firing", extra={"model": model.name, "kind": rule.kind,
                                       "severity": rule.severity, "alert_id": alert.id,
                                       "notifications": len(ids)})
    return alert, ids


def resolve(session: Session, alert: Alert, model_name: str, reason: str,
            evaluation_id: int | None = None) -> list[int]:
    alert.state = "resolved"
    alert.resolved_at = utcnow()
    alert.details = {**(alert.details or {}), "resolved_because": reason}
    if evaluation_id is not None:
        alert.last_evaluation_id = evaluation_id
    session.flush()
    ids = _write_outbox(session, alert, model_name, "resolve")
    log.info("alert resolved", extra={"model": model_name, "kind": alert.kind,
                                      "alert_id": alert.id, "notifications": len(ids)})
    return ids


@dataclass
class Outcome:
    """What one engine call changed; ``notification_ids`` are enqueued after the commit."""

    fired: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    notification_ids: list[int] = field(default_factory=list)
    evaluations_seen: int = 0

    def merge(self, other: Outcome) -> None:
        self.fired += other.fired
        self.resolved += other.resolved
        self.notification_ids += other.notification_ids
        self.evaluations_seen += other.evaluations_seen


def _starting_point(session: Session, model_id: int, rule: AlertRule) -> int:
    """For a new counter row: start a few windows back instead of replaying all history."""
    keep = max(rule.fire_after_windows, rule.resolve_after_windows)
    ids = session.scalars(select(Evaluation.id)
                          .where(Evaluation.model_id == model_id, Evaluation.status == "done")
                          .order_by(Evaluation.id.desc()).limit(keep + 1)).all()
    return ids[-1] if len(ids) > keep else 0


def evaluate_model(session: Session, model_id: int) -> Outcome:
    """Feed every not-yet-seen finished evaluation of one model through the window rules.

    Evaluations are taken in id (window) order and counted once per rule
    (``alert_states.last_evaluation_id``). A pending or running evaluation stops the walk, so
    windows that finish out of order are still counted in order; failed ones are skipped.
    """
    outcome = Outcome()
    model = session.get(MonitoredModel, model_id)
    if model is None:
        return outcome
    states = _lock_states(session, model_id, WINDOW_KINDS)
    rules = ensure_rules(session, model)
    for kind in WINDOW_KINDS:
        state = states[kind]
        if state.last_evaluation_id is None:
            state.last_evaluation_id = _starting_point(session, model_id, rules[kind])
    start = min(states[k].last_evaluation_id or 0 for k in WINDOW_KINDS)
    evaluations = session.scalars(
        select(Evaluation).where(Evaluation.model_id == model_id, Evaluation.id > start)
        .order_by(Evaluation.id).limit(1000)).all()
    for ev in evaluations:
        if ev.status in ("pending", "running"):
            break
        if ev.status != "done":
            for kind in WINDOW_KINDS:
                states[kind].last_evaluation_id = max(states[kind].last_evaluation_id or 0, ev.id)
            continue
        outcome.evaluations_seen += 1
        for kind in WINDOW_KINDS:
            state, rule = states[kind], rules[kind]
            if ev.id <= (state.last_evaluation_id or 0):
                continue
            state.last_evaluation_id = ev.id
            if not rule.enabled:
                continue
            verdict = classify(kind, ev.health, ev.result, rule.params)
            current = open_alert(session, model_id, kind)
            counters, action = step(Counters(state.consecutive_bad, state.consecutive_good),
                                    verdict, current is not None, rule.fire_after_windows,
                                    rule.resolve_after_windows)
            state.consecutive_bad, state.consecutive_good = counters.bad, counters.good
            if action == "fire":
                details = {"evaluation_id": ev.id, "window_index": ev.window_index,
                           "health": ev.health, "windows": counters.bad,
                           "signals": (ev.result or {}).get("signals"),
                           "thresholds_crossed": crossed_thresholds(ev.result, rule.params or {})}
                summary = window_summary(model.name, kind, ev, counters.bad)
                alert, ids = fire(session, model, rule, summary, details, ev.id)
                outcome.fired.append(alert.id)
                outcome.notification_ids += ids
            elif action == "resolve" and current is not None:
                outcome.notification_ids += resolve(
                    session, current, model.name,
                    f"{counters.good} consecutive healthy window(s)", ev.id)
                outcome.resolved.append(current.id)
            elif current is not None and verdict == BAD:
                current.last_evaluation_id = ev.id
    session.flush()
    return outcome


# ---------------------------------------------------------------------------------------------
# time rules (liveness)


def last_activity(session: Session, model: MonitoredModel) -> datetime:
    """When the model last sent a sample (its creation time if it never did)."""
    return as_utc_or_none(model.last_sample_at) or as_utc_or_none(model.created_at) or utcnow()


def evaluation_owed_since(session: Session, model: MonitoredModel) -> datetime | None:
    """Since when the pipeline owes this model an evaluation (None: nothing is owed).

    Owed work is a planned window not finished yet (pending, running, or failed after the
    newest finished one), or stored samples that already fill a window under the model's
    policy (``size`` samples, or ``min_size`` samples the oldest of which is ``max_age``
    old) but were not planned. A quiet model whose partial window is not due owes nothing.
    """
    candidates: list[datetime] = []
    newest_done = session.scalar(select(func.max(Evaluation.id))
                                 .where(Evaluation.model_id == model.id,
                                        Evaluation.status == "done")) or 0
    owed = session.scalar(select(func.min(Evaluation.created_at))
                          .where(Evaluation.model_id == model.id, Evaluation.id > newest_done,
                                 Evaluation.status.in_(("pending", "running", "failed"))))
    if owed is not None:
        candidates.append(as_utc_or_none(owed))
    received = [as_utc_or_none(r) for r in session.scalars(
        select(Sample.received_at)
        .where(Sample.model_id == model.id, Sample.id > model.windowed_through_sample_id)
        .order_by(Sample.id).limit(max(1, model.window_size))).all()]
    if received and len(received) >= model.window_size:
        candidates.append(received[model.window_size - 1])
    elif (received and model.window_max_age_seconds is not None
          and len(received) >= model.window_min_size):
        candidates.append(received[0] + timedelta(seconds=model.window_max_age_seconds))
    return min(candidates) if candidates else None


def time_condition(session: Session, model: MonitoredModel, rule: AlertRule,
                   now: datetime) -> tuple[bool, str, dict[str, Any]]:
    """(condition holds, summary, details) for a time rule."""
    limit = rule.threshold_seconds or 0
    if rule.kind == "no_samples":
        since = last_activity(session, model)
        age = (now - since).total_seconds()
        return (age > limit,
                f"model '{model.name}' has sent no samples for {int(age)}s (threshold {limit}s)",
                {"last_sample_at": _iso(model.last_sample_at), "threshold_seconds": limit})
    if rule.kind == "evaluations_stale":
        since = evaluation_owed_since(session, model)
        age = max(0.0, (now - since).total_seconds()) if since else 0.0
        return (since is not None and age > limit,
                (f"model '{model.name}' has a due window waiting {int(age)}s for its "
                 f"evaluation (threshold {limit}s)"),
                {"evaluation_owed_since": _iso(since), "threshold_seconds": limit})
    raise ValueError(f"{rule.kind!r} is not a time rule")


def check_model_liveness(session: Session, model: MonitoredModel,
                         now: datetime | None = None) -> Outcome:
    now = now or utcnow()
    outcome = Outcome()
    _lock_states(session, model.id, TIME_KINDS)
    rules = ensure_rules(session, model)
    for kind in TIME_KINDS:
        rule = rules[kind]
        current = open_alert(session, model.id, kind)
        if not rule.enabled:
            continue
        holds, summary, details = time_condition(session, model, rule, now)
        if holds and current is None:
            alert, ids = fire(session, model, rule, summary, details)
            outcome.fired.append(alert.id)
            outcome.notification_ids += ids
        elif not holds and current is not None:
            outcome.notification_ids += resolve(session, current, model.name,
                                                "condition no longer holds")
            outcome.resolved.append(current.id)
    session.flush()
    return outcome


def model_ids(session: Session) -> list[int]:
    return list(session.scalars(select(MonitoredModel.id)
                                .where(MonitoredModel.deleted_at.is_(None))
                                .order_by(MonitoredModel.id)).all())


# ---------------------------------------------------------------------------------------------
# operator actions


class AlertActionError(ValueError):
    """An operator action that cannot apply (the API answers 409)."""


def acknowledge(session: Session, alert: Alert, model_name: str, actor: str) -> list[int]:
    """Mark a firing alert as seen; acknowledging twice keeps the first acknowledgement.

    The first acknowledgement is also sent to the channels that got the trigger
    (PagerDuty's ``acknowledge`` stops the incident's escalation); returns the outbox ids
    to enqueue after the commit.
    """
    if alert.state != "firing":
        raise AlertActionError(f"alert {alert.id} is {alert.state}; only firing alerts can be "
                               "acknowledged")
    if alert.acknowledged_at is not None:
        return []
    alert.acknowledged_at = utcnow()
    alert.acknowledged_by = actor
    session.flush()
    ids = _write_outbox(session, alert, model_name, "acknowledge")
    log.info("alert acknowledged", extra={"alert_id": alert.id, "actor": actor,
                                          "notifications": len(ids)})
    return ids


def update_rule(session: Session, model: MonitoredModel, rule: AlertRule,
                changes: dict[str, Any]) -> tuple[AlertRule, list[int]]:
    """Apply validated changes; disabling a rule resolves its open alert and clears counters."""
    for key, value in changes.items():
        setattr(rule, key, value)
    ids: list[int] = []
    if changes.get("enabled") is False:
        current = open_alert(session, model.id, rule.kind)
        if current is not None:
            ids = resolve(session, current, model.name, "rule disabled")
        state = session.scalar(select(AlertState).where(AlertState.model_id == model.id,
                                                        AlertState.kind == rule.kind))
        if state is not None:
            state.consecutive_bad = state.consecutive_good = 0
    session.flush()
    return rule, ids


def firing_counts(session: Session) -> dict[tuple[int, str], int]:
    """Firing alerts per (model id, severity)."""
    rows = session.execute(select(Alert.model_id, Alert.severity, func.count())
                           .where(Alert.state == "firing")
                           .group_by(Alert.model_id, Alert.severity)).all()
    return {(m, s): n for m, s, n in rows}

