"""Routes: alerts (list, acknowledge), per-model alert rules, notification channels."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from service.api.deps import (
    AdminPrincipal,
    OperatorPrincipal,
    ReadPrincipal,
    SessionDep,
    check_model_access,
    check_model_read,
)
from service.api.errors import ProblemError
from service.domain import alert_config
from service.domain.alert_schemas import (
    AlertList,
    AlertPublic,
    AlertRuleList,
    AlertRulePublic,
    AlertRuleUpdate,
    ChannelCreate,
    ChannelList,
    ChannelPublic,
    RetryResult,
)
from service.domain.keys import Principal

router = APIRouter(tags=["alerts"])

Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Cursor = Annotated[str | None, Query(max_length=512,
                                     description="`next_cursor` of the previous page")]


def _channel_visible(principal: Principal, channel: ChannelPublic) -> bool:
    """A key limited to one model sees only the channels that serve that model alone."""
    return principal.unlimited or channel.models == [principal.model_name]


def _own_channel(session, principal: Principal, channel_id: int) -> ChannelPublic:
    channel = alert_config.get_channel(session, channel_id)
    if not _channel_visible(principal, channel):
        raise ProblemError(404, f"channel {channel_id} does not exist")
    return channel


def _enqueue_after_commit(session, notification_ids: list[int]) -> None:
    """Commit first, then hand the outbox rows to the workers (the sweeper is the backstop)."""
    session.commit()
    if notification_ids:
        from service.dispatch import enqueue_deliveries

        enqueue_deliveries(notification_ids)


@router.get("/alerts", response_model=AlertList)
def list_alerts(principal: ReadPrincipal, session: SessionDep,
                state: Annotated[str | None, Query(description="firing | resolved")] = None,
                model: Annotated[str | None, Query(description="model name")] = None,
                limit: Limit = 100, cursor: Cursor = None) -> AlertList:
    """Newest first, paged (`limit`, `cursor` from `next_cursor`)."""
    if principal is not None and not principal.unlimited:
        # a key limited to one model lists that model's alerts only
        if model is not None:
            check_model_read(principal, model)
        model = principal.model_name
    alerts, next_cursor = alert_config.page_alerts(session, state, model, limit, cursor)
    return AlertList(alerts=alerts, next_cursor=next_cursor)


@router.get("/alerts/{alert_id}", response_model=AlertPublic)
def get_alert(alert_id: int, principal: ReadPrincipal, session: SessionDep) -> AlertPublic:
    alert = alert_config.alert_detail(session, alert_id)
    if principal is not None and not principal.allows("read", alert.model):
        raise ProblemError(404, f"alert {alert_id} does not exist")
    return alert


@router.post("/alerts/{alert_id}/ack", response_model=AlertPublic)
def acknowledge_alert(alert_id: int, principal: OperatorPrincipal,
                      session: SessionDep) -> AlertPublic:
    """Needs an operator or admin key; a key limited to one model acknowledges its alerts
    only (another model's alert is 404, as if it did not exist)."""
    _, model_name = alert_config.get_alert(session, alert_id)
    if not principal.allows("operator", model_name):
        raise ProblemError(404, f"alert {alert_id} does not exist")
    alert, notification_ids = alert_config.acknowledge(
        session, alert_id, alert_config.actor_name(session, principal.key_id, principal.label))
    _enqueue_after_commit(session, notification_ids)
    return alert


@router.get("/models/{name}/alert-rules", response_model=AlertRuleList)
def list_alert_rules(name: str, _: ReadPrincipal, session: SessionDep) -> AlertRuleList:
    return AlertRuleList(model=name, rules=alert_config.list_rules(session, name))


@router.patch("/models/{name}/alert-rules/{kind}", response_model=AlertRulePublic)
def update_alert_rule(name: str, kind: str, body: AlertRuleUpdate, principal: AdminPrincipal,
                      session: SessionDep) -> AlertRulePublic:
    check_model_access(principal, "admin", name)
    rule, notification_ids = alert_config.update_rule(session, name, kind, body)
    _enqueue_after_commit(session, notification_ids)
    return rule


@router.get("/channels", response_model=ChannelList)
def list_channels(principal: AdminPrincipal, session: SessionDep, limit: Limit = 100,
                  cursor: Cursor = None) -> ChannelList:
    """By id, paged (`limit`, `cursor` from `next_cursor`); a key limited to one model sees
    only the channels that serve that model alone."""
    only = None if principal.unlimited else principal.model_name
    channels, next_cursor = alert_config.page_channels(session, limit, cursor, only)
    return ChannelList(channels=channels, next_cursor=next_cursor)


@router.post("/channels", status_code=201, response_model=ChannelPublic)
def create_channel(body: ChannelCreate, principal: AdminPrincipal,
                   session: SessionDep) -> ChannelPublic:
    """A channel for every model (``models`` null) needs an admin key without --model; a key
    limited to one model may create channels for that model only."""
    if not principal.unlimited:
        models = set(body.models or [])
        if not models:
            check_model_access(principal, "admin", None)
        for name in sorted(models):
            check_model_access(principal, "admin", name)
    return alert_config.create_channel(session, body)


@router.get("/channels/{channel_id}", response_model=ChannelPublic)
def get_channel(channel_id: int, principal: AdminPrincipal,
                session: SessionDep) -> ChannelPublic:
    return _own_channel(session, principal, channel_id)


@router.post("/channels/{channel_id}/retry", response_model=RetryResult,
             summary="Retry the channel's dead-lettered notifications")
def retry_channel(channel_id: int, principal: AdminPrincipal,
                  session: SessionDep) -> RetryResult:
    _own_channel(session, principal, channel_id)
    ids = alert_config.retry_dead(session, channel_id)
    _enqueue_after_commit(session, ids)
    return RetryResult(requeued=len(ids))


@router.delete("/channels/{channel_id}", status_code=204, response_class=Response)
def delete_channel(channel_id: int, principal: AdminPrincipal,
                   session: SessionDep) -> Response:
    _own_channel(session, principal, channel_id)
    alert_config.delete_channel(session, channel_id)
    return Response(status_code=204)
