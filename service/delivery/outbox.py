"""Outbox delivery: claim a notification row, send it once, record the result.

A row moves ``pending → sending → sent``; a retryable failure puts it back to ``pending``
with ``next_attempt_at`` pushed out by capped exponential backoff with jitter, for up to
``NOTIFY_RETRY_HOURS`` after the row was written (a receiver that is down for an hour still
gets the page when it comes back); a permanent failure or a failure past that horizon makes
it ``dead`` (with ``last_error``). Dead rows are their own alert, through Prometheus
(``collapsewatch_channel_notifications_dead``), not through the channel that failed. Claiming is one conditional UPDATE,
so of two workers handed the same id only one sends. A worker that dies mid-send leaves the
row ``sending`` with an expired lease; the sweeper hands it out again (at-least-once; the
idempotency key and PagerDuty's dedup_key make that repeat harmless).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from service.channels import ChannelConfigError, DeliveryError, Message, build_channel
from service.domain.clock import as_utc_or_none, utcnow
from service.domain.db import session_scope
from service.domain.secrets import SecretKeyError, open_config
from service.domain.tables import Alert, Channel, Notification
from service.logging import get_logger
from service.settings import Settings, get_settings

log = get_logger("collapsewatch.alerting.outbox")

FINAL = ("sent", "dead")


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Delay before attempt ``attempt + 1``: base, 2*base, 4*base, ... capped."""
    # the exponent is bounded so that hours of attempts cannot overflow a float
    return min(cap, base * (2 ** min(max(0, attempt - 1), 60)))


def jittered(delay: float, jitter: float, rng: random.Random | None = None) -> float:
    """``delay`` shortened by a random share of up to ``jitter``: rows that failed together
    (one receiver outage) spread out instead of retrying in lockstep when it comes back
    ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015)."""
    return delay * (1.0 - jitter * (rng or random).random())


@dataclass(frozen=True)
class Delivery:
    """What one delivery call did: sent | retry | dead | waiting | skipped."""

    status: str
    notification_id: int
    delay: float | None = None
    error: str | None = None


def _due(now: datetime):
    """Rows that may be claimed now: pending and due, or sending with an expired lease."""
    return and_(Notification.status.in_(("pending", "sending")),
                Notification.next_attempt_at <= now)


def _wait_for_earlier(session: Session, row: Notification, now: datetime) -> float | None:
    """A notification must not overtake an earlier one of the same incident on the same
    channel. Returns seconds to wait, or None when every earlier one is final.

    The incident is the ``dedup_key``, not the alert: the warning, the critical that
    superseded it (an ``update``) and a later trigger after a downgrade all share it. So a
    resolve or an acknowledgement waits for the trigger and any update before it (a resolve
    first would leave a PagerDuty incident open forever, an acknowledgement would be lost),
    an update waits for the trigger it updates, and a new trigger waits for the resolve that
    closed the incident before it (else that resolve would close the new page)."""
    key = session.scalar(select(Alert.dedup_key).where(Alert.id == row.alert_id))
    if key is None:
        return None
    due = session.scalar(
        select(func.max(Notification.next_attempt_at))
        .join(Alert, Alert.id == Notification.alert_id)
        .where(Notification.channel_id == row.channel_id, Notification.id < row.id,
               Notification.status.notin_(FINAL), Alert.dedup_key == key))
    if due is None:
        return None
    due = as_utc_or_none(due) or now
    return max(1.0, (due - now).total_seconds() + 1.0)


def _claim(notification_id: int, settings: Settings, now: datetime
           ) -> tuple[Delivery | None, Message | None, Channel | None, int, datetime | None]:
    with session_scope() as session:
        row = session.get(Notification, notification_id)
        if row is None:
            return (Delivery("skipped", notification_id, error="no such notification"), None,
                    None, 0, None)
        wait = _wait_for_earlier(session, row, now)
        if wait is not None:
            session.execute(update(Notification)
                            .where(Notification.id == notification_id,
                                   Notification.status == "pending")
                            .values(next_attempt_at=now + timedelta(seconds=wait))
                            .execution_options(synchronize_session=False))
            return Delivery("waiting", notification_id, delay=wait), None, None, 0, None
        claimed = session.execute(
            update(Notification)
            .where(Notification.id == notification_id, _due(now))
            .values(status="sending", attempts=Notification.attempts + 1,
                    next_attempt_at=now + timedelta(seconds=settings.notify_lease_seconds))
            .execution_options(synchronize_session=False)
        ).rowcount
        if claimed != 1:
            return Delivery("skipped", notification_id), None, None, 0, None
        session.refresh(row)
        channel = session.get(Channel, row.channel_id)
        message = Message(notification_id=row.id, event=row.event, payload=dict(row.payload))
        return None, message, channel, row.attempts, as_utc_or_none(row.created_at)


def _finish(notification_id: int, attempt: int, values: dict) -> bool:
    """Record the result only if this attempt still owns the row."""
    with session_scope() as session:
        done = session.execute(
            update(Notification)
            .where(Notification.id == notification_id, Notification.status == "sending",
                   Notification.attempts == attempt)
            .values(**values)).rowcount
    return done == 1


def deliver(notification_id: int, settings: Settings | None = None,
            now: datetime | None = None) -> Delivery:
    """Claim, send and record one notification. Safe to call any number of times."""
    s = settings or get_settings()
    now = now or utcnow()
    early, message, channel, attempt, created_at = _claim(notification_id, s, now)
    if early is not None:
        return early
    assert message is not None
    context = {"notification_id": notification_id, "attempt": attempt,
               "notification_event": message.event}
    try:
        if channel is None:
            raise DeliveryError("channel was deleted", retryable=False)
        if not channel.enabled:
            raise DeliveryError(f"channel '{channel.name}' is disabled", retryable=False)
        context["channel"] = channel.name
        try:
            config = open_config(channel.kind, channel.config or {}, channel_name=channel.name)
            sender = build_channel(channel.kind, config, timeout=s.notify_timeout_seconds)
        except SecretKeyError as exc:
            # a wrong or missing key: dead-letter with the reason (the operator fixes the key
            # and retries the channel); never a worker crash loop
            log.error("channel secrets unreadable", extra={**context, "error": str(exc)})
            raise DeliveryError(str(exc), retryable=False) from exc
        except ChannelConfigError as exc:
            raise DeliveryError(f"channel '{channel.name}' is misconfigured: {exc}",
                                retryable=False) from exc
        sender.send(message)
    except DeliveryError as exc:
        return _failed(notification_id, attempt, exc, s, now, context, created_at)
    except Exception as exc:  # a bug in a channel must not leave the row stuck in 'sending'
        log.exception("notification channel crashed", extra=context)
        return _failed(notification_id, attempt,
                       DeliveryError(f"channel crashed ({type(exc).__name__}); see the log",
                                     retryable=True), s, now, context, created_at)
    _finish(notification_id, attempt, {"status": "sent", "sent_at": utcnow(), "last_error": None})
    log.info("notification sent", extra=context)
    return Delivery("sent", notification_id)


def _failed(notification_id: int, attempt: int, exc: DeliveryError, s: Settings,
            now: datetime, context: dict, created_at: datetime | None) -> Delivery:
    error = str(exc)[:2000]
    # the last moment a retry may happen: NOTIFY_RETRY_HOURS after this run of attempts
    # began. That is when the row was written, unless an operator requeued it after a dead
    # letter (attempts start again at 0): the run then began about as long ago as its
    # backoff delays add up to, and it gets a whole horizon of its own.
    planned = sum(backoff_seconds(n, s.notify_backoff_base_seconds,
                                  s.notify_backoff_max_seconds) for n in range(1, attempt))
    started = max(created_at or now, now - timedelta(seconds=planned))
    give_up_at = started + timedelta(hours=s.notify_retry_hours)
    left = (give_up_at - now).total_seconds()
    capped = 0 < s.notify_max_attempts <= attempt
    if not exc.retryable or capped or left <= 0:
        _finish(notification_id, attempt, {"status": "dead", "last_error": error})
        why = ("permanent failure" if not exc.retryable
               else "attempts exhausted" if capped else "retry horizon passed")
        log.error("notification dead-lettered", extra={**context, "error": error,
                                                       "reason": why})
        return Delivery("dead", notification_id, error=error)
    delay = jittered(backoff_seconds(attempt, s.notify_backoff_base_seconds,
                                     s.notify_backoff_max_seconds), s.notify_backoff_jitter)
    if exc.retry_after is not None:
        delay = min(max(delay, exc.retry_after), s.notify_backoff_max_seconds)
    # one last attempt exactly at the horizon rather than none after the last long wait
    delay = max(0.0, min(delay, left))
    _finish(notification_id, attempt, {"status": "pending", "last_error": error,
                                       "next_attempt_at": now + timedelta(seconds=delay)})
    log.warning("notification failed; will retry",
                extra={**context, "error": error, "retry_in_seconds": delay})
    return Delivery("retry", notification_id, delay=delay, error=error)


def due_ids(session: Session, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Rows the sweeper should hand out: due pending rows and expired 'sending' leases."""
    now = now or utcnow()
    return list(session.scalars(select(Notification.id).where(_due(now))
                                .order_by(Notification.next_attempt_at, Notification.id)
                                .limit(limit)).all())


__all__ = ["Delivery", "backoff_seconds", "deliver", "due_ids", "jittered"]
