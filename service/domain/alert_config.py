"""What the alerting routes do: list and acknowledge alerts, edit rules, manage channels.

Functions take a session and validated schemas and return public schemas; they raise
domain errors (``service.domain.errors``) for anything the caller got wrong, before changing stored data.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, func, select, update
from sqlalchemy.orm import Session

from service.channels import ChannelConfigError, DestinationRefused, channel_class
from service.domain import alerts
from service.domain.alert_schemas import (
    AlertPublic,
    AlertRulePublic,
    AlertRuleUpdate,
    ChannelCreate,
    ChannelPublic,
    NotificationPublic,
)
from service.domain.catalog import get_model
from service.domain.clock import utcnow
from service.domain.errors import Conflict, Invalid, NotFound
from service.domain.paging import decode_cursor, page
from service.domain.secrets import seal_config
from service.domain.tables import (
    Alert,
    AlertRule,
    ApiKey,
    Channel,
    MonitoredModel,
    Notification,
)

ALERT_STATES = ("firing", "resolved")


def _may_exist(identifier: int, column) -> bool:
    """Whether ``identifier`` fits the id column at all. Anything else names nothing, and
    must not reach the database: PostgreSQL fails the cast to INTEGER past 2**31 - 1, SQLite
    raises OverflowError past 2**63 - 1."""
    wide = isinstance(column.type, BigInteger)
    return 1 <= identifier <= (2**63 - 1 if wide else 2**31 - 1)


def alert_public(alert: Alert, model_name: str) -> AlertPublic:
    return AlertPublic(
        id=alert.id, model=model_name, kind=alert.kind, severity=alert.severity,
        state=alert.state, dedup_key=alert.dedup_key, summary=alert.summary,
        details=alert.details or {}, started_at=alert.started_at, resolved_at=alert.resolved_at,
        acknowledged_at=alert.acknowledged_at, acknowledged_by=alert.acknowledged_by,
        last_evaluation_id=alert.last_evaluation_id,
    )


def page_alerts(session: Session, state: str | None, model: str | None, limit: int,
                cursor: str | None = None) -> tuple[list[AlertPublic], str | None]:
    """One page of alerts, newest first (by id: an alert raised between pages has a higher
    id than every cursor, so it neither repeats nor shifts later pages)."""
    if state is not None and state not in ALERT_STATES:
        raise Invalid(f"state: must be one of {', '.join(ALERT_STATES)}, got {state!r}")
    after = decode_cursor(cursor, (int,))
    stmt = (select(Alert, MonitoredModel.name).join(MonitoredModel,
                                                    MonitoredModel.id == Alert.model_id))
    if state is not None:
        stmt = stmt.where(Alert.state == state)
    if model is not None:
        stmt = stmt.where(Alert.model_id == get_model(session, model).id)
    if after is not None:
        stmt = stmt.where(Alert.id < after[0])
    rows = session.execute(stmt.order_by(Alert.id.desc()).limit(limit + 1)).all()
    rows, next_cursor = page(list(rows), limit, lambda row: (row[0].id,))
    return [alert_public(alert, name) for alert, name in rows], next_cursor


def get_alert(session: Session, alert_id: int) -> tuple[Alert, str]:
    if not _may_exist(alert_id, Alert.id):
        raise NotFound(f"alert {alert_id} does not exist")
    row = session.execute(select(Alert, MonitoredModel.name)
                          .join(MonitoredModel, MonitoredModel.id == Alert.model_id)
                          .where(Alert.id == alert_id)).first()
    if row is None:
        raise NotFound(f"alert {alert_id} does not exist")
    return row[0], row[1]


def alert_detail(session: Session, alert_id: int) -> AlertPublic:
    """One alert with its outbox rows (delivery status per channel and event)."""
    alert, model_name = get_alert(session, alert_id)
    rows = session.execute(select(Notification, Channel.name)
                           .join(Channel, Channel.id == Notification.channel_id)
                           .where(Notification.alert_id == alert_id)
                           .order_by(Notification.id)).all()
    out = alert_public(alert, model_name)
    out.notifications = [NotificationPublic(
        id=n.id, channel=name, event=n.event, status=n.status, attempts=n.attempts,
        last_error=n.last_error, next_attempt_at=n.next_attempt_at, sent_at=n.sent_at)
        for n, name in rows]
    return out


def actor_name(session: Session, key_id: int, fallback: str) -> str:
    """Who acknowledged, as people know the key: its description (``fallback``, e.g.
    ``key:<id>``, when it has none)."""
    description = session.scalar(select(ApiKey.description).where(ApiKey.id == key_id)) \
        if _may_exist(key_id, ApiKey.id) else None
    name = " ".join((description or "").split())
    return (name or fallback)[:200]  # acknowledged_by is VARCHAR(200)


def acknowledge(session: Session, alert_id: int, actor: str) -> tuple[AlertPublic, list[int]]:
    """The acknowledged alert, and the outbox ids to enqueue after the commit."""
    alert, model_name = get_alert(session, alert_id)
    try:
        ids = alerts.acknowledge(session, alert, model_name, actor)
    except alerts.AlertActionError as exc:
        raise Conflict(str(exc)) from None
    return alert_public(alert, model_name), ids


def rule_public(rule: AlertRule) -> AlertRulePublic:
    return AlertRulePublic(
        id=rule.id, kind=rule.kind, severity=rule.severity, enabled=rule.enabled,
        fire_after_windows=rule.fire_after_windows,
        resolve_after_windows=rule.resolve_after_windows,
        threshold_seconds=rule.threshold_seconds, params=rule.params or {},
        updated_at=rule.updated_at,
    )


def list_rules(session: Session, model_name: str) -> list[AlertRulePublic]:
    model = get_model(session, model_name)
    rules = alerts.ensure_rules(session, model)
    return [rule_public(rules[k]) for k in alerts.RULE_KINDS if k in rules]


def update_rule(session: Session, model_name: str, kind: str,
                body: AlertRuleUpdate) -> tuple[AlertRulePublic, list[int]]:
    if kind not in alerts.RULE_KINDS:
        raise NotFound(f"no alert rule kind {kind!r}; kinds are "
                                f"{', '.join(alerts.RULE_KINDS)}")
    model = get_model(session, model_name)
    try:
        changes = body.changes(kind)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    rule = alerts.ensure_rules(session, model)[kind]
    rule, notification_ids = alerts.update_rule(session, model, rule, changes)
    return rule_public(rule), notification_ids


def _notification_counts(session: Session,
                         channel_ids: list[int] | None = None) -> dict[int, dict[str, int]]:
    stmt = select(Notification.channel_id, Notification.status, func.count())
    if channel_ids is not None:
        stmt = stmt.where(Notification.channel_id.in_(channel_ids))
    rows = session.execute(stmt.group_by(Notification.channel_id, Notification.status)).all()
    out: dict[int, dict[str, int]] = {}
    for channel_id, status, n in rows:
        out.setdefault(channel_id, {})[status] = n
    return out


def channel_public(channel: Channel, counts: dict[str, int] | None = None) -> ChannelPublic:
    try:
        config = channel_class(channel.kind).redact(channel.config or {})
    except ChannelConfigError:
        config = {}
    return ChannelPublic(id=channel.id, name=channel.name, kind=channel.kind, config=config,
                         min_severity=channel.min_severity, models=channel.models,
                         enabled=channel.enabled, created_at=channel.created_at,
                         notifications=counts or {})


def create_channel(session: Session, body: ChannelCreate) -> ChannelPublic:
    try:
        cls = channel_class(body.kind)
        config = cls.validate_config(body.config)
        cls.check_destinations(config)
    except DestinationRefused as exc:
        raise Invalid(str(exc), address_class=exc.address_class) from None
    except ChannelConfigError as exc:
        field = "kind" if "channel kind" in str(exc) else "config"
        raise Invalid(f"{field}: {exc}") from None
    if session.scalar(select(Channel.id).where(Channel.name == body.name)) is not None:
        raise Conflict(f"a channel named {body.name!r} already exists; pick another "
                                "name or delete it first")
    # secret fields encrypted when COLLAPSEWATCH_SECRET_KEY is set (service.domain.secrets)
    channel = Channel(name=body.name, kind=body.kind, config=seal_config(body.kind, config),
                      min_severity=body.min_severity, models=body.models, enabled=body.enabled)
    session.add(channel)
    session.flush()
    return channel_public(channel)


def page_channels(session: Session, limit: int, cursor: str | None = None,
                  only: str | None = None) -> tuple[list[ChannelPublic], str | None]:
    """One page of channels by id. ``only``: the channels that serve that model alone (what a
    key limited to one model may see); filtered here so every page but the last is full."""
    after = decode_cursor(cursor, (int,))
    last = after[0] if after is not None else 0
    rows: list[Channel] = []
    # an id past the 32-bit column names no channel (PostgreSQL would refuse the comparison)
    while len(rows) <= limit and last < 2**31 - 1:
        # channels are few; scanning in id order keeps the filter in one place for both
        # databases (``models`` is a JSON list, compared differently by each)
        batch = list(session.scalars(select(Channel).where(Channel.id > last)
                                     .order_by(Channel.id).limit(limit + 1)))
        if not batch:
            break
        last = batch[-1].id
        rows += [c for c in batch if only is None or c.models == [only]]
    rows, next_cursor = page(rows[:limit + 1], limit, lambda c: (c.id,))
    counts = _notification_counts(session, [c.id for c in rows])
    return [channel_public(c, counts.get(c.id)) for c in rows], next_cursor


def get_channel(session: Session, channel_id: int) -> ChannelPublic:
    channel = session.get(Channel, channel_id) if _may_exist(channel_id, Channel.id) else None
    if channel is None:
        raise NotFound(f"channel {channel_id} does not exist")
    return channel_public(channel, _notification_counts(session).get(channel.id))


def retry_dead(session: Session, channel_id: int) -> list[int]:
    """Give the channel's dead-lettered notifications a fresh set of attempts."""
    if not _may_exist(channel_id, Channel.id) or session.get(Channel, channel_id) is None:
        raise NotFound(f"channel {channel_id} does not exist")
    ids = list(session.scalars(select(Notification.id).where(
        Notification.channel_id == channel_id, Notification.status == "dead")).all())
    if ids:
        requeue_dead(session, ids)
    return ids


def delete_channel(session: Session, channel_id: int) -> None:
    channel = session.get(Channel, channel_id) if _may_exist(channel_id, Channel.id) else None
    if channel is None:
        raise NotFound(f"channel {channel_id} does not exist")
    session.delete(channel)
    session.flush()


def requeue_dead(session: Session, notification_ids: list[int] | None = None) -> int:
    """Give dead-lettered rows a fresh set of attempts (an operator action)."""
    stmt = update(Notification).where(Notification.status == "dead")
    if notification_ids is not None:
        stmt = stmt.where(Notification.id.in_(notification_ids))
    return session.execute(stmt.values(status="pending", attempts=0,
                                       next_attempt_at=utcnow())).rowcount
