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
import math
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

WINDOW_KINDS = ("early_collapse", "collapse", "synthetic_share")
TIME_KINDS = ("no_samples", "evaluations_stale")
RULE_KINDS = WINDOW_KINDS + TIME_KINDS
SEVERITIES = ("warning", "critical")
DEFAULT_SEVERITY = {
    "early_collapse": "warning",
    "collapse": "critical",
    "no_samples": "warning",
    "evaluations_stale": "warning",
    "synthetic_share": "warning",
}
SIGNALS = ("diversity", "tail_coverage", "sameness")
# the direction each signal moves under collapse (sameness rises, the others fall)
SIGNAL_FALLS = {"diversity": True, "tail_coverage": True, "sameness": False}
TITLES = {
    "early_collapse": "early collapse (tails thinning)",
    "collapse": "collapse",
    "no_samples": "no samples received",
    "evaluations_stale": "evaluations are stale",
    "synthetic_share": "synthetic share above its limit",
    # event alerts (service.domain.event_alerts): no rule, the same payloads and texts
    "baseline_rejected": "automatic baseline refused (its windows read collapse)",
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
        if kind == "synthetic_share":
            # every model has the row (the engine walks every window kind), but only a
            # stream with a mixing-ratio guard has it enabled; catalog.update_model keeps
            # both in step with the stream's max_synthetic_share
            out[-1]["enabled"] = model.kind == "stream" and model.max_synthetic_share is not None
            out[-1]["params"] = {"max_synthetic_share": model.max_synthetic_share}
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
    if kind == "synthetic_share":
        # a stream's mixing-ratio guard: bad only when even the interval's lower bound is
        # above the limit (the share is then above it with 97.5% confidence); judged on the
        # share alone, whatever the window's health
        share = (result or {}).get("synthetic_share") or {}
        limit = (params or {}).get("max_synthetic_share")
        if limit is None or share.get("low") is None:
            return None
        return BAD if float(share["low"]) > float(limit) else GOOD
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


def _phrase(signal: str) -> str:
    return signal.replace("_", " ")


def signal_view(result: dict[str, Any] | None, signal: str) -> dict[str, Any] | None:
    """One signal of a Score JSON as the alert texts show it: the ratio and band it is judged
    by (the baseline's when the window has one, else the human reference's) and how far it
    sits outside that band in its collapse direction (``excess``, > 0 means outside).

    ``excess`` is the stored ``z`` turned towards collapse when present (the scorer's
    standardised log-ratio deviation), else the log distance from the band edge, so that
    signals with bands of different widths compare on one scale.
    """
    sig = ((result or {}).get("signals") or {}).get(signal) or {}
    with_baseline = bool((result or {}).get("baseline")) and sig.get("baseline_ratio") is not None
    against = "baseline" if with_baseline else "human"
    ratio = sig.get("baseline_ratio") if with_baseline else sig.get("ratio")
    if ratio is None:
        return None
    low = sig.get("baseline_low") if with_baseline else sig.get("human_low")
    high = sig.get("baseline_high") if with_baseline else sig.get("human_high")
    falls = SIGNAL_FALLS.get(signal, True)
    z = sig.get("z")
    if z is not None and (sig.get("z_against") in (None, against)):
        excess = -float(z) if falls else float(z)
    else:
        edge = low if falls else high
        if edge is None or edge <= 0 or ratio <= 0:
            edge = 1.0
        # a ratio of 0 (a signal gone entirely) is as far outside as anything gets
        excess = (math.log(edge / ratio) if falls else math.log(ratio / edge)) \
            if ratio > 0 else 1e6
    return {"signal": signal, "ratio": float(ratio), "against": against, "low": low,
            "high": high, "excess": excess}


def _describe_signal(view: dict[str, Any], band: bool = True) -> str:
    text = f"{_phrase(view['signal'])} {_fmt(view['ratio'])}× {view['against']}"
    if band and view["low"] is not None and view["high"] is not None:
        text += f" (band {_fmt(view['low'])}–{_fmt(view['high'])})"
    return text


def worst_signal(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The signal furthest outside its band in its collapse direction (None: no signals)."""
    views = [v for v in (signal_view(result, s) for s in SIGNALS) if v is not None]
    return max(views, key=lambda v: v["excess"]) if views else None


def _share_interval(share: dict[str, Any]) -> str:
    return f"{_fmt(share.get('estimate'))} (95% {_fmt(share.get('low'))}–{_fmt(share.get('high'))})"


def share_view(result: dict[str, Any] | None, limit: float | None) -> dict[str, Any] | None:
    """A stream window's synthetic share as the alert texts and payloads carry it: the
    estimate with its 95% interval, the limit it is judged against, the share of each source
    and the part no source explains (None: the window has no share)."""
    share = (result or {}).get("synthetic_share")
    if not isinstance(share, dict) or share.get("low") is None:
        return None
    by_source = share.get("by_source") if isinstance(share.get("by_source"), dict) else {}
    return {"estimate": share.get("estimate"), "low": share.get("low"),
            "high": share.get("high"), "max_synthetic_share": limit,
            "by_source": {str(name): {k: v.get(k) for k in ("estimate", "low", "high")}
                          for name, v in by_source.items() if isinstance(v, dict)},
            "unexplained": share.get("unexplained")}


def _share_sources(view: dict[str, Any]) -> str:
    """"by source: gen-a 0.20 (95% 0.15–0.25), gen-b 0.11 (95% 0.06–0.16); unexplained 0.02"."""
    parts = [f"{name} {_share_interval(v)}" for name, v in view["by_source"].items()]
    text = "by source: " + ", ".join(parts) if parts else ""
    if view.get("unexplained") is not None:
        text += ("; " if text else "") + f"unexplained {_fmt(view['unexplained'])}"
    return text


def _windows(n: int) -> str:
    return f"{n} window{'s' if n != 1 else ''}"


def headline(model_name: str, kind: str, result: dict[str, Any] | None, windows: int,
             limit: float | None = None) -> str:
    """The one line a phone shows: the model, the alert, its worst signal and its size.

    When no signal sits outside its band (an early collapse the sequential trend detector
    found inside the band), the trend's own line says what moved. A stream's
    ``synthetic_share`` alert shows the share, its interval and its ``limit`` instead.
    """
    head = f"{model_name}: {TITLES.get(kind, kind)}"
    share = share_view(result, limit) if kind == "synthetic_share" else None
    if share is not None:
        return (f"{model_name}: synthetic share {_share_interval(share)} above its limit "
                f"{_fmt(limit)}, {_windows(windows)}")
    if kind not in ("collapse", "early_collapse"):
        # another window rule is not about the collapse signals: name none of them
        return f"{head}, {windows} window{'s' if windows != 1 else ''}"
    worst = worst_signal(result)
    sustained = describe_trend((result or {}).get("trend") or {})
    if sustained and (worst is None or worst["excess"] <= 0):
        return f"{head} — {sustained[0]}"
    if worst is None:
        return f"{head} — {windows} window{'s' if windows != 1 else ''}"
    return f"{head} — {_describe_signal(worst)}, {windows} window{'s' if windows != 1 else ''}"


def _window_span(indices: Sequence[int]) -> str:
    if not indices:
        return ""
    first, last = min(indices), max(indices)
    return f"window {last}" if first == last else f"windows {first}–{last}"


def _all_signals(result: dict[str, Any] | None) -> str:
    views = [v for v in (signal_view(result, s) for s in SIGNALS) if v is not None]
    return "; ".join(_describe_signal(v) for v in views)


def window_summary(model_name: str, kind: str, evaluation: Evaluation, windows: int,
                   indices: Sequence[int] = (), limit: float | None = None) -> str:
    """The firing text of a window rule: headline, the run of windows, every signal (for a
    stream's ``synthetic_share``: the share against ``limit``, and each source's share)."""
    result = evaluation.result or {}
    span = _window_span(indices) or f"latest window {evaluation.window_index}"
    share = share_view(result, limit) if kind == "synthetic_share" else None
    if share is not None:
        text = (f"{headline(model_name, kind, result, windows, limit)}. Stream '{model_name}' "
                f"has its synthetic share above its limit for {windows} consecutive window(s) "
                f"({span}): the 95% lower bound {_fmt(share['low'])} exceeds "
                f"{_fmt(limit)}")
        sources = _share_sources(share)
        return f"{text}; {sources}" if sources else text
    state = "is in collapse" if kind == "collapse" else f"shows {TITLES.get(kind, kind)}"
    text = (f"{headline(model_name, kind, result, windows)}. Model '{model_name}' {state} for "
            f"{windows} consecutive window(s) ({span}, latest health {evaluation.health}): "
            + _all_signals(result))
    # a sustained shift (the sequential detector) says which signal, since when, how much
    sustained = describe_trend(result.get("trend") or {})
    if sustained:
        text += "; sustained: " + "; ".join(sustained)
    return text


def resolve_summary(model_name: str, kind: str, evaluation: Evaluation, windows: int,
                    indices: Sequence[int] = (), limit: float | None = None) -> str:
    """What is true when a window rule resolves: the current values and the clearing windows."""
    result = evaluation.result or {}
    span = _window_span(indices) or f"window {evaluation.window_index}"
    share = share_view(result, limit) if kind == "synthetic_share" else None
    if share is not None:
        # a share whose lower bound is at or under the limit is no longer shown to exceed
        # it; its estimate may still sit above the limit, so the text says the bound
        text = (f"{model_name}: {TITLES[kind]} resolved — synthetic share now "
                f"{_share_interval(share)}, its 95% lower bound not above the limit "
                f"{_fmt(limit)} for {windows} consecutive window(s) ({span})")
        sources = _share_sources(share)
        return f"{text}; {sources}" if sources else text
    how = "healthy" if kind == "early_collapse" else f"out of {TITLES.get(kind, kind)}"
    return (f"{model_name}: {TITLES.get(kind, kind)} resolved — {how} for {windows} consecutive "
            f"window(s) ({span}); now {evaluation.health}: " + _all_signals(result))


def alert_payload(alert: Alert, model_name: str, event: str, settings: Settings | None = None
                  ) -> dict[str, Any]:
    """Everything a channel needs, frozen into the outbox row.

    ``evidence``: the top phrases and vanished terms of the window that fired the alert
    (``alert.last_evaluation_id``), n-grams only: quoted sample text never goes to a channel,
    whatever EVIDENCE_TEXT says. Only a trigger or an update carries it: a resolve's window is
    the healthy one, and an acknowledgement says who and when, not the firing story again.
    ``url``: the page, scrolled to the model and that window."""
    from urllib.parse import quote

    from sqlalchemy.orm import object_session

    s = settings or get_settings()
    session = object_session(alert)
    ev = (session.get(Evaluation, alert.last_evaluation_id)
          if session is not None and alert.last_evaluation_id is not None else None)
    link = f"{s.link_base_url}/#model={quote(model_name, safe='')}"
    if ev is not None and ev.model_id == alert.model_id:
        link += f"&window={ev.window_index}&evaluation={ev.id}"
    found = ((ev.result or {}).get("evidence")
             if ev is not None and event in ("trigger", "update") else None)
    evidence = None
    if isinstance(found, dict):
        def pick(rows: Any, keys: tuple[str, ...]) -> list[dict[str, Any]]:
            # named fields only, so a list that ever grows a quoting field cannot leak it;
            # phrases are n-grams of at most 4 words, cut anyway to keep the page small
            return [{k: (r.get(k)[:120] if isinstance(r.get(k), str) else r.get(k))
                     for k in keys} for r in (rows if isinstance(rows, list) else [])[:5]
                    if isinstance(r, dict)]
        evidence = {
            "against": found.get("against"),
            "window": ev.window_index,
            "overrepresented": pick(found.get("overrepresented"),
                                    ("ngram", "window_per_10k", "baseline_per_10k", "z")),
            "vanished": pick(found.get("vanished"), ("term", "expected", "observed")),
        }
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
        "url": link,
        "evidence": evidence,
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


INCIDENT_EVENTS = ("trigger", "update")


def incident_channels(session: Session, alert: Alert) -> list[int]:
    """Channels this alert's incident was announced to (its trigger, or the update that
    carried the incident over from the alert it superseded)."""
    return sorted(set(session.scalars(
        select(Notification.channel_id)
        .where(Notification.alert_id == alert.id,
               Notification.event.in_(INCIDENT_EVENTS))).all()))


def _event_text(alert: Alert, model_name: str, event: str) -> tuple[str | None, str | None]:
    """(title, summary) a channel shows for this event, or None to keep the alert's own.

    A trigger's and an update's title is the headline (the worst signal and its size: what
    a phone shows first); a resolve says what is true now, an acknowledgement who took it
    and when, not the firing text again.
    """
    details = alert.details or {}
    title = TITLES.get(alert.kind, alert.kind)
    if event in INCIDENT_EVENTS:
        summary = alert.summary
        if event == "update" and details.get("supersedes_summary"):
            summary = f"{details['supersedes_summary']}. {alert.summary}"
        return details.get("headline"), summary
    if event == "resolve":
        return None, details.get("resolved_summary") or (
            f"{model_name}: {title} resolved — {details.get('resolved_because', 'resolved')}")
    if event == "acknowledge":
        when = as_utc_or_none(alert.acknowledged_at)
        started = as_utc_or_none(alert.started_at)
        stamp = when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else "now"
        since = f"; firing since {started.strftime('%Y-%m-%d %H:%M:%S UTC')}" if started else ""
        return None, (f"{model_name}: {title} acknowledged by {alert.acknowledged_by} at "
                      f"{stamp}{since}")
    return None, None


def _write_outbox(session: Session, alert: Alert, model_name: str, event: str,
                  channel_ids: Sequence[int] | None = None) -> list[int]:
    """Outbox rows for one alert event. A trigger goes to the channels that match the alert;
    an acknowledgement, a resolve or an update to the channels of its incident (unless
    ``channel_ids`` names them)."""
    if channel_ids is None:
        if event in ("acknowledge", "resolve", "update"):
            channel_ids = incident_channels(session, alert)
        else:
            channel_ids = [c.id for c in matching_channels(session, model_name, alert.severity)]
    if not channel_ids:
        return []
    payload = alert_payload(alert, model_name, event)
    title, summary = _event_text(alert, model_name, event)
    if title:
        payload["title"] = title
    if summary:
        payload["summary"] = summary
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


def _new_alert(session: Session, model: MonitoredModel, rule: AlertRule, summary: str,
               details: dict[str, Any], evaluation_id: int | None,
               key: str | None = None) -> Alert:
    alert = Alert(model_id=model.id, rule_id=rule.id, kind=rule.kind, severity=rule.severity,
                  state="firing", dedup_key=key or dedup_key(model.name, rule.kind),
                  summary=summary, details=details, started_at=utcnow(),
                  last_evaluation_id=evaluation_id)
    session.add(alert)
    session.flush()
    return alert


def fire(session: Session, model: MonitoredModel, rule: AlertRule, summary: str,
         details: dict[str, Any], evaluation_id: int | None = None) -> tuple[Alert, list[int]]:
    alert = _new_alert(session, model, rule, summary, details, evaluation_id)
    ids = _write_outbox(session, alert, model.name, "trigger")
    log.warning("alert firing", extra={"model": model.name, "kind": rule.kind,
                                       "severity": rule.severity, "alert_id": alert.id,
                                       "notifications": len(ids)})
    return alert, ids


def resolve(session: Session, alert: Alert, model_name: str, reason: str,
            evaluation_id: int | None = None, summary: str | None = None) -> list[int]:
    alert.state = "resolved"
    alert.resolved_at = utcnow()
    alert.details = {**(alert.details or {}), "resolved_because": reason,
                     **({"resolved_summary": summary} if summary else {})}
    if evaluation_id is not None:
        alert.last_evaluation_id = evaluation_id
    session.flush()
    ids = _write_outbox(session, alert, model_name, "resolve")
    log.info("alert resolved", extra={"model": model_name, "kind": alert.kind,
                                      "alert_id": alert.id, "notifications": len(ids)})
    return ids


def hand_over(session: Session, model: MonitoredModel, old: Alert, rule: AlertRule,
              summary: str, details: dict[str, Any], evaluation_id: int) -> tuple[Alert, list[int]]:
    """One incident per model: the window alert ``old`` gives way to a ``rule.kind`` alert.

    Like an Alertmanager inhibit rule, the critical ``collapse`` and the warning
    ``early_collapse`` never page side by side: when collapse fires over a firing warning
    (escalation), or the warning takes over when collapse clears while the model is still in
    early collapse (downgrade), the old alert is closed as superseded with no resolve sent
    (nothing recovered), and the new one keeps the incident's dedup key. The channels that
    already have the incident get an ``update`` (PagerDuty folds it into the open incident);
    channels new to it (a critical-only pager on escalation) get their first ``trigger``.
    """
    verb = "escalated to" if severity_rank(rule.severity) > severity_rank(old.severity) \
        else "downgraded to"
    old_title = TITLES.get(old.kind, old.kind)
    details = {**details, "supersedes": old.id,
               "supersedes_summary": f"{verb} {TITLES.get(rule.kind, rule.kind)} from "
                                     f"{old_title} (alert {old.id})"}
    new = _new_alert(session, model, rule, summary, details, evaluation_id, key=old.dedup_key)
    old.state = "resolved"
    old.resolved_at = utcnow()
    old.details = {**(old.details or {}), "superseded_by": new.id,
                   "resolved_because": f"superseded: {verb} {rule.kind} (alert {new.id})"}
    session.flush()
    known = incident_channels(session, old)
    cleared: list[int] = []
    if verb == "downgraded to":
        # a channel that takes only the critical (a pager) has no incident once the critical
        # is over: it gets the critical's resolve, as an Alertmanager receiver routed on
        # severity would, and the channels that take warnings keep the incident as an update
        taking = {c.id for c in matching_channels(session, model.name, new.severity)}
        cleared = [cid for cid in known if cid not in taking]
        known = [cid for cid in known if cid in taking]
    ids = _write_outbox(session, new, model.name, "update", known) if known else []
    if cleared:
        old.details = {**(old.details or {}), "resolved_summary": (
            f"{model.name}: {old_title} cleared — {verb} {TITLES.get(rule.kind, rule.kind)} "
            f"({rule.severity}), below this channel's severity. {summary}")}
        session.flush()
        ids += _write_outbox(session, old, model.name, "resolve", cleared)
    if verb == "escalated to":
        fresh = [c.id for c in matching_channels(session, model.name, new.severity)
                 if c.id not in known]
        if fresh:
            ids += _write_outbox(session, new, model.name, "trigger", fresh)
    log.warning("alert handed over", extra={"model": model.name, "kind": rule.kind,
                                            "severity": rule.severity, "alert_id": new.id,
                                            "superseded": old.id, "notifications": len(ids)})
    return new, ids


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


# how far back the first check of a model reads its history (and a run is traced back)
HISTORY_LIMIT = 500


def _starting_point(session: Session, model_id: int) -> int | None:
    """For new counter rows: the newest finished window that no unfinished one precedes
    (None: there is none yet, the walk starts at the beginning)."""
    unfinished = session.scalar(select(func.min(Evaluation.id)).where(
        Evaluation.model_id == model_id, Evaluation.status.in_(("pending", "running"))))
    stmt = select(func.max(Evaluation.id)).where(Evaluation.model_id == model_id,
                                                 Evaluation.status == "done")
    if unfinished is not None:
        stmt = stmt.where(Evaluation.id < unfinished)
    return session.scalar(stmt)


def _run(session: Session, model_id: int, rule: AlertRule, upto_id: int, verdict: str,
         inclusive: bool, limit: int = HISTORY_LIMIT) -> list[int]:
    """Window indices of the unbroken run of ``verdict`` windows ending at ``upto_id``
    (uninformative windows neither extend nor break it), newest first; at most ``limit``
    windows are read."""
    cond = Evaluation.id <= upto_id if inclusive else Evaluation.id < upto_id
    rows = session.execute(
        select(Evaluation.window_index, Evaluation.health, Evaluation.result)
        .where(Evaluation.model_id == model_id, Evaluation.status == "done", cond)
        .order_by(Evaluation.id.desc()).limit(limit)).all()
    out = []
    for index, health, result in rows:
        v = classify(rule.kind, health, result, rule.params)
        if v is None:
            continue
        if v != verdict:
            break
        out.append(index)
    return out


def _seed(session: Session, model_id: int, rule: AlertRule, before_id: int) -> Counters:
    """Counters as if every finished window before ``before_id`` had been counted: a model
    whose first check comes after several windows counts all of them (not just the few the
    check replays), without replaying old fire/resolve pairs."""
    for verdict in (BAD, GOOD):
        run = _run(session, model_id, rule, before_id, verdict, inclusive=False)
        if run:
            return Counters(bad=len(run)) if verdict == BAD else Counters(good=len(run))
    return Counters()


def evaluate_model(session: Session, model_id: int) -> Outcome:
    """Feed every not-yet-seen finished evaluation of one model through the window rules.

    Evaluations are taken in id (window) order and counted once per rule
    (``alert_states.last_evaluation_id``). A pending or running evaluation stops the walk, so
    windows that finish out of order are still counted in order; failed ones are skipped.
    ``collapse`` and ``early_collapse`` are one incident per model (see ``hand_over``).
    """
    outcome = Outcome()
    model = session.get(MonitoredModel, model_id)
    if model is None:
        return outcome
    states = _lock_states(session, model_id, WINDOW_KINDS)
    rules = ensure_rules(session, model)
    if any(states[k].last_evaluation_id is None for k in WINDOW_KINDS):
        begin = _starting_point(session, model_id)
        for kind in WINDOW_KINDS:
            state = states[kind]
            if state.last_evaluation_id is not None:
                continue
            state.last_evaluation_id = 0 if begin is None else begin - 1
            if begin is not None:
                seeded = _seed(session, model_id, rules[kind], begin)
                state.consecutive_bad, state.consecutive_good = seeded.bad, seeded.good
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
        _count_window(session, model, ev, states, rules, outcome)
    session.flush()
    return outcome


def _count_window(session: Session, model: MonitoredModel, ev: Evaluation,
                  states: dict[str, AlertState], rules: dict[str, AlertRule],
                  outcome: Outcome) -> None:
    """Advance both window rules by one window, then act on them as one incident."""
    steps: dict[str, tuple[str | None, str | None, Alert | None]] = {}
    for kind in WINDOW_KINDS:
        state, rule = states[kind], rules[kind]
        if ev.id <= (state.last_evaluation_id or 0):
            continue
        state.last_evaluation_id = ev.id
        if not rule.enabled:
            continue
        verdict = classify(kind, ev.health, ev.result, rule.params)
        current = open_alert(session, model.id, kind)
        counters, action = step(Counters(state.consecutive_bad, state.consecutive_good),
                                verdict, current is not None, rule.fire_after_windows,
                                rule.resolve_after_windows)
        state.consecutive_bad, state.consecutive_good = counters.bad, counters.good
        steps[kind] = (action, verdict, current)

    def firing_text(kind: str) -> tuple[str, dict[str, Any]]:
        rule = rules[kind]
        windows = max(states[kind].consecutive_bad, 1)
        # the run is known to be ``windows`` long: read little more than that
        run = _run(session, model.id, rule, ev.id, BAD, inclusive=True,
                   limit=windows + 20) or [ev.window_index]
        limit = (rule.params or {}).get("max_synthetic_share")
        details = {"evaluation_id": ev.id, "window_index": ev.window_index,
                   "health": ev.health, "windows": windows,
                   "first_window": min(run[:windows]), "signals": (ev.result or {}).get("signals"),
                   "worst_signal": worst_signal(ev.result),
                   "headline": headline(model.name, kind, ev.result, windows, limit),
                   "thresholds_crossed": crossed_thresholds(ev.result, rule.params or {})}
        if kind == "synthetic_share":
            # the share, its interval, the limit and each source's share: every channel
            # carries the details (webhook JSON, PagerDuty custom_details)
            details["synthetic_share"] = share_view(ev.result, limit)
        return window_summary(model.name, kind, ev, windows, run[:windows], limit), details

    def resolve_text(kind: str) -> str:
        rule = rules[kind]
        windows = max(states[kind].consecutive_good, 1)
        run = _run(session, model.id, rule, ev.id, GOOD, inclusive=True,
                   limit=windows + 20) or [ev.window_index]
        return resolve_summary(model.name, kind, ev, windows, run[:windows],
                               (rule.params or {}).get("max_synthetic_share"))

    early = rules["early_collapse"]
    handed_to_early = False
    c_action, c_verdict, c_current = steps.get("collapse", (None, None, None))
    if c_action == "fire":
        summary, details = firing_text("collapse")
        warning = open_alert(session, model.id, "early_collapse")
        if warning is not None:
            alert, ids = hand_over(session, model, warning, rules["collapse"], summary, details,
                                   ev.id)
            outcome.resolved.append(warning.id)
        else:
            alert, ids = fire(session, model, rules["collapse"], summary, details, ev.id)
        outcome.fired.append(alert.id)
        outcome.notification_ids += ids
    elif c_action == "resolve" and c_current is not None:
        # (a warning firing beside collapse, left from before one incident per model, has its
        # own pages: then collapse resolves as usual, closing its own incident)
        if early.enabled and open_alert(session, model.id, "early_collapse") is None and \
                states["early_collapse"].consecutive_bad >= early.fire_after_windows:
            # still in early collapse: the warning takes the incident over, no new page
            summary, details = firing_text("early_collapse")
            alert, ids = hand_over(session, model, c_current, early, summary, details, ev.id)
            outcome.resolved.append(c_current.id)
            outcome.fired.append(alert.id)
            outcome.notification_ids += ids
            handed_to_early = True
        else:
            outcome.notification_ids += resolve(
                session, c_current, model.name,
                f"{states['collapse'].consecutive_good} consecutive window(s) not in collapse",
                ev.id, resolve_text("collapse"))
            outcome.resolved.append(c_current.id)
    elif c_current is not None and c_verdict == BAD:
        c_current.last_evaluation_id = ev.id

    def plain(kind: str) -> None:
        """A window rule on its own: fire, resolve, or note the latest bad window."""
        action, verdict, current = steps[kind]
        if action == "fire":
            summary, details = firing_text(kind)
            alert, ids = fire(session, model, rules[kind], summary, details, ev.id)
            outcome.fired.append(alert.id)
            outcome.notification_ids += ids
        elif action == "resolve" and current is not None:
            n = states[kind].consecutive_good
            reason = {
                "early_collapse": f"{n} consecutive healthy window(s)",
                "synthetic_share": f"{n} consecutive window(s) with the share's lower bound "
                                   "within its limit",
            }.get(kind, f"{n} consecutive not {TITLES.get(kind, kind)} window(s)")
            outcome.notification_ids += resolve(session, current, model.name, reason, ev.id,
                                                resolve_text(kind))
            outcome.resolved.append(current.id)
        elif current is not None and verdict == BAD:
            current.last_evaluation_id = ev.id

    if "early_collapse" in steps and not handed_to_early:
        e_current = steps["early_collapse"][2]
        # not when it was superseded in this very window, nor while the critical fires
        # (the critical inhibits the warning)
        if (e_current is None or e_current.state == "firing") \
                and open_alert(session, model.id, "collapse") is None:
            plain("early_collapse")
    # window rules outside the collapse pair stand alone
    for kind in steps:
        if kind not in ("collapse", "early_collapse"):
            plain(kind)


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
            now_true = (f"samples arrive again (last at {_iso(model.last_sample_at)})"
                        if kind == "no_samples" else "no due window is waiting for its "
                        "evaluation any more")
            outcome.notification_ids += resolve(
                session, current, model.name, "condition no longer holds", None,
                f"{model.name}: {TITLES.get(kind, kind)} resolved — {now_true}")
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
        successor = (alert.details or {}).get("superseded_by")
        if successor is not None:
            # the page on the phone may still show the alert the incident moved on from
            raise AlertActionError(f"alert {alert.id} was superseded by alert {successor} "
                                   "(same incident); acknowledge that one")
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

