"""Routes: alerts (list, acknowledge), per-model alert rules, notification channels."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from service.api.deps import (
    AdminPrincipal,
    ReadPrincipal,
    SessionDep,
    check_model_access,
    optional_principal,
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


def _any_key(principal: Annotated[Principal | None, Depends(optional_principal)]) -> Principal:
    if principal is None:
        raise ProblemError(401, "acknowledging an alert needs an API key; send "
                                "'Authorization: Bearer <key>' (any scope)",
                           headers={"WWW-Authenticate": "Bearer"})
    return principal


def _enqueue_after_commit(session, notification_ids: list[int]) -> None:
    """Commit first, then hand the outbox rows to the workers (the sweeper is the backstop)."""
    session.commit()
    if notification_ids:
        from service.dispatch import enqueue_deliveries

        enqueue_deliveries(notification_ids)


@router.get("/alerts", response_model=AlertList)
def list_alerts(_: ReadPrincipal, session: SessionDep,
                state: Annotated[str | None, Query(description="firing | resolved")] = None,
                model: Annotated[str | None, Query(description="model name")] = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> AlertList:
    return AlertList(alerts=alert_config.list_alerts(session, state, model, limit))


@router.get("/alerts/{alert_id}", response_model=AlertPublic)
def get_alert(alert_id: int, _: ReadPrincipal, session: SessionDep) -> AlertPublic:
    return alert_config.alert_detail(session, alert_id)


@router.post("/alerts/{alert_id}/ack", response_model=AlertPublic)
def acknowledge_alert(alert_id: int, principal: Annotated[Principal, Depends(_any_key)],
                      session: SessionDep) -> AlertPublic:
    _, model_name = alert_config.get_alert(session, alert_id)
    if principal.model_name is not None and principal.model_name != model_name:
        raise ProblemError(403, f"key is scoped to model '{principal.model_name}' and cannot "
                                f"acknowledge alerts of model '{model_name}'")
    alert, notification_ids = alert_config.acknowledge(session, alert_id, principal.label)
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
def list_channels(_: AdminPrincipal, session: SessionDep) -> ChannelList:
    return ChannelList(channels=alert_config.list_channels(session))


@router.post("/channels", status_code=201, response_model=ChannelPublic)
def create_channel(body: ChannelCreate, _: AdminPrincipal, session: SessionDep) -> ChannelPublic:
    return alert_config.create_channel(session, body)


@router.get("/channels/{channel_id}", response_model=ChannelPublic)
def get_channel(channel_id: int, _: AdminPrincipal, session: SessionDep) -> ChannelPublic:
    return alert_config.get_channel(session, channel_id)


@router.post("/channels/{channel_id}/retry", response_model=RetryResult,
             summary="Retry the channel's dead-lettered notifications")
def retry_channel(channel_id: int, _: AdminPrincipal, session: SessionDep) -> RetryResult:
    ids = alert_config.retry_dead(session, channel_id)
    _enqueue_after_commit(session, ids)
    return RetryResult(requeued=len(ids))


@router.delete("/channels/{channel_id}", status_code=204, response_class=Response)
def delete_channel(channel_id: int, _: AdminPrincipal, session: SessionDep) -> Response:
    alert_config.delete_channel(session, channel_id)
    return Response(status_code=204)
