"""Typed dependencies in one place: sessions, settings, principals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.api.errors import ProblemError
from service.domain.db import session_scope
from service.domain.keys import Principal, verify_key
from service.settings import Settings, get_settings


def get_session() -> Iterator[Session]:
    """One session per request: committed when the route returns, rolled back on error."""
    with session_scope() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ProblemError(401, "Authorization header must be 'Bearer <key>'",
                           headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def optional_principal(request: Request, session: SessionDep) -> Principal | None:
    token = _bearer(request)
    if token is None:
        return None
    principal = verify_key(session, token)
    if principal is None:
        raise ProblemError(401, "unknown or revoked API key")
    return principal


def require(scope: str):
    """Dependency factory: a principal allowed ``scope`` (model checks are the route's job)."""

    def _dep(
        principal: Annotated[Principal | None, Depends(optional_principal)],
        settings: SettingsDep,
    ) -> Principal | None:
        if scope == "read" and not settings.require_read_key:
            return principal
        if principal is None:
            raise ProblemError(401, f"this endpoint needs an API key with scope '{scope}'; "
                               "send 'Authorization: Bearer <key>' "
                               "(create one with `collapsewatch keys create`)")
        if not principal.has_scope(scope):
            raise ProblemError(403, f"key scope '{principal.scope}' does not allow '{scope}'")
        return principal

    return _dep


def check_model_access(principal: Principal | None, scope: str, model_name: str) -> None:
    """403 when a key scoped to one model writes to another."""
    if principal is None:
        return
    if not principal.allows(scope, model_name):
        raise ProblemError(
            403,
            f"key is scoped to model '{principal.model_name}' and cannot {scope} "
            f"for model '{model_name}'",
        )


ReadPrincipal = Annotated[Principal | None, Depends(require("read"))]
IngestPrincipal = Annotated[Principal, Depends(require("ingest"))]
AdminPrincipal = Annotated[Principal, Depends(require("admin"))]
