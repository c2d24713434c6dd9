"""Routes: a model's evaluations (scored windows) and its current health."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from service.api.deps import ReadPrincipal, SessionDep
from service.domain import history
from service.domain.score_schemas import EvaluationList, HealthPublic

router = APIRouter(tags=["evaluations"])


def stored_json(body: dict[str, Any]) -> JSONResponse:
    """The stored Score JSON as it is: the response model documents it in /docs, but does
    not re-shape it (key order and fields the schema does not name yet stay as stored)."""
    return JSONResponse(jsonable_encoder(body))


@router.get("/models/{name}/evaluations", response_model=EvaluationList,
            summary="Scored windows of a model, newest first (Score JSON each)")
def list_evaluations(
    name: str,
    _: ReadPrincipal,
    session: SessionDep,
    since: Annotated[datetime | None, Query(description="windows ending at or after this")] = None,
    until: Annotated[datetime | None, Query(description="windows ending at or before this")] = None,
    # bounded: each item is a full Score JSON (the web page's trend asks for up to 1,000)
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: Annotated[Literal["done", "failed", "pending", "running", "all"],
                      Query(description="which windows: scored ones (done) by default")] = "done",
    cursor: Annotated[str | None, Query(max_length=512,
                                        description="`next_cursor` of the previous page")] = None,
) -> JSONResponse:
    return stored_json(history.list_evaluations(session, name, since=since, until=until,
                                                limit=limit, status=status, cursor=cursor))


@router.get("/models/{name}/health", response_model=HealthPublic,
            summary="The latest Score JSON of a model (insufficient_data before the first)")
def model_health(name: str, _: ReadPrincipal, session: SessionDep) -> JSONResponse:
    return stored_json(history.model_health(session, name))
