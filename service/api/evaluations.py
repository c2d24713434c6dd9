"""Routes: a model's evaluations (scored windows) and its current health."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from service.api.deps import Principal, ReadPrincipal, SessionDep, SettingsDep
from service.domain import history
from service.domain.score_schemas import EvaluationList, EvaluationPublic, HealthPublic
from service.settings import Settings

router = APIRouter(tags=["evaluations"])


def stored_json(body: dict[str, Any]) -> JSONResponse:
    """The stored Score JSON as it is: the response model documents it in /docs, but does
    not re-shape it (key order and fields the schema does not name yet stay as stored)."""
    return JSONResponse(jsonable_encoder(body))


def _visible(body: dict[str, Any], principal: Principal | None, settings: Settings) -> dict:
    """Quoted sample text in the evidence needs a key, even where reads are public."""
    if principal is not None and settings.evidence_text:
        return body
    return history.without_quoted_text(body)


@router.get("/models/{name}/evaluations", response_model=EvaluationList,
            summary="Scored windows of a model, newest first (Score JSON each)")
def list_evaluations(
    name: str,
    principal: ReadPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    since: Annotated[datetime | None, Query(description="windows ending at or after this")] = None,
    until: Annotated[datetime | None, Query(description="windows ending at or before this")] = None,
    # bounded: each item is a full Score JSON (the web page's trend asks for up to 1,000)
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: Annotated[Literal["done", "failed", "pending", "running", "all"],
                      Query(description="which windows: scored ones (done) by default")] = "done",
    cursor: Annotated[str | None, Query(max_length=512,
                                        description="`next_cursor` of the previous page")] = None,
) -> JSONResponse:
    body = history.list_evaluations(session, name, since=since, until=until, limit=limit,
                                    status=status, cursor=cursor)
    return stored_json(_visible(body, principal, settings))


@router.get("/models/{name}/evaluations/{evaluation_id}", response_model=EvaluationPublic,
            summary="One scored window of a model (Score JSON with its evidence)")
def get_evaluation(name: str, evaluation_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
                   principal: ReadPrincipal, session: SessionDep,
                   settings: SettingsDep,
                   vanished_windows: Annotated[int, Query(
                       ge=1, le=history.MAX_VANISHED_WINDOWS,
                       description="`vanished_for_windows` lists terms gone for this many "
                                   "scored windows up to this one")] = 3) -> JSONResponse:
    body = history.get_evaluation(session, name, evaluation_id,
                                  vanished_windows=vanished_windows)
    return stored_json(_visible(body, principal, settings))


@router.get("/models/{name}/health", response_model=HealthPublic,
            summary="The latest Score JSON of a model (insufficient_data before the first)")
def model_health(name: str, principal: ReadPrincipal, session: SessionDep,
                 settings: SettingsDep) -> JSONResponse:
    return stored_json(_visible(history.model_health(session, name), principal, settings))
