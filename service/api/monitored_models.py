"""Routes: monitored models (create, list, get, change, delete)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from service.api.deps import (
    AdminPrincipal,
    ReadPrincipal,
    SessionDep,
    SettingsDep,
    check_model_access,
)
from service.domain import catalog, retention
from service.domain.schemas import ModelCreate, ModelList, ModelPublic, ModelUpdate

router = APIRouter(tags=["models"])

Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Cursor = Annotated[str | None, Query(max_length=512,
                                     description="`next_cursor` of the previous page")]


@router.post("/models", status_code=201, response_model=ModelPublic)
def create_model(body: ModelCreate, principal: AdminPrincipal, session: SessionDep,
                 settings: SettingsDep) -> ModelPublic:
    check_model_access(principal, "admin", body.name)
    return catalog.create_model(session, settings, body)


@router.get("/models", response_model=ModelList, summary="Models by name (paged)")
def list_models(principal: ReadPrincipal, session: SessionDep, limit: Limit = 100,
                cursor: Cursor = None) -> ModelList:
    # a key limited to one model sees that model only
    only = principal.model_name if principal is not None and not principal.unlimited else None
    models, next_cursor = catalog.page_models(session, limit, cursor, only)
    return ModelList(models=models, next_cursor=next_cursor)


@router.get("/models/{name}", response_model=ModelPublic)
def get_model(name: str, _: ReadPrincipal, session: SessionDep) -> ModelPublic:
    return catalog.model_public(session, catalog.get_model(session, name))


@router.patch("/models/{name}", response_model=ModelPublic)
def update_model(name: str, body: ModelUpdate, principal: AdminPrincipal,
                 session: SessionDep) -> ModelPublic:
    check_model_access(principal, "admin", name)
    return catalog.update_model(session, name, body)


@router.delete("/models/{name}", status_code=204, response_class=Response,
               summary="Delete a model: gone at once, its rows purged in the background")
def delete_model(name: str, principal: AdminPrincipal, session: SessionDep) -> Response:
    check_model_access(principal, "admin", name)
    retention.delete_model(session, name)
    return Response(status_code=204)
