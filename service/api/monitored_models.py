"""Routes: monitored models (create, list, get, change, delete)."""

from __future__ import annotations

from fastapi import APIRouter, Response

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


@router.post("/models", status_code=201, response_model=ModelPublic)
def create_model(body: ModelCreate, principal: AdminPrincipal, session: SessionDep,
                 settings: SettingsDep) -> ModelPublic:
    check_model_access(principal, "admin", body.name)
    return catalog.create_model(session, settings, body)


@router.get("/models", response_model=ModelList)
def list_models(principal: ReadPrincipal, session: SessionDep) -> ModelList:
    models = catalog.list_models(session)
    if principal is not None and not principal.unlimited:
        # a key limited to one model sees that model only
        models = [m for m in models if m.name == principal.model_name]
    return ModelList(models=models)


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
