"""Typed dependencies in one place: sessions, settings, principals, who may read."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.api.errors import ProblemError
from service.domain.db import session_scope
from service.domain.keys import Principal, authenticate
from service.settings import Settings, get_settings


def get_session() -> Iterator[Session]:
    """One session per request: committed when the route returns, rolled back on error."""
    with session_scope() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; an unknown listen address is not loopback."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def reads_private(settings: Settings) -> bool:
    """Do reads need a key? Yes off loopback (or when forced); PUBLIC_READS=1 opts out."""
    if settings.require_read_key:
        return True
    if settings.public_reads:
        return False
    return not is_loopback(settings.listen_host)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ProblemError(401, "Authorization header must be 'Bearer <key>'",
                           headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def _principal_for(request: Request, token: str, settings: Settings) -> Principal:
    """Look the key up in a short transaction of its own (it may touch last_used_at), then
    spend one token of its rate-limit bucket (the app's, see create_app). Unauthorized and
    RateLimited propagate."""
    with session_scope() as auth_session:
        principal = authenticate(auth_session, token, settings.key_last_used_interval_seconds)
    buckets = getattr(request.app.state, "rate_buckets", None)
    if buckets is not None:
        buckets.take(principal.key_id)
    return principal


def optional_principal(request: Request, settings: SettingsDep) -> Principal | None:
    token = _bearer(request)
    if token is None:
        return None
    return _principal_for(request, token, settings)


def _not_found(name: str) -> ProblemError:
    # the same answer as for a model that does not exist: a key limited to one model does
    # not learn which other models there are
    return ProblemError(404, f"model {name!r} does not exist; create it with "
                             "POST /api/v1/models")


def require(scope: str):
    """Dependency factory: a principal allowed ``scope``; a key limited to one model is
    refused any route whose path names another model (404 for reads, 403 for changes)."""

    def _dep(
        request: Request,
        principal: Annotated[Principal | None, Depends(optional_principal)],
        settings: SettingsDep,
    ) -> Principal | None:
        if principal is None:
            if scope == "read" and not reads_private(settings):
                return None
            raise ProblemError(401, f"this endpoint needs an API key with scope '{scope}'; "
                               "send 'Authorization: Bearer <key>' "
                               "(create one with `collapsewatch keys create`)")
        if not principal.has_scope(scope):
            raise ProblemError(403, f"key scope '{principal.scope}' does not allow '{scope}'")
        name = request.path_params.get("name")
        if name is not None and not principal.allows(scope, name):
            if scope == "read":
                raise _not_found(name)
            check_model_access(principal, scope, name)
        return principal

    return _dep


def check_model_access(principal: Principal | None, scope: str, model_name: str | None) -> None:
    """403 when a key limited to one model acts on another (or on all models)."""
    if principal is None or principal.allows(scope, model_name):
        return
    if model_name is None:
        raise ProblemError(403, f"key is scoped to model '{principal.model_name}'; this "
                                "applies to every model, so use an admin key without --model")
    raise ProblemError(
        403,
        f"key is scoped to model '{principal.model_name}' and cannot {scope} "
        f"for model '{model_name}'",
    )


def check_model_read(principal: Principal | None, model_name: str) -> None:
    """404 (as if it did not exist) when a key limited to one model reads another."""
    if principal is not None and not principal.allows("read", model_name):
        raise _not_found(model_name)


def require_unlimited_admin(
    principal: Annotated[Principal | None, Depends(require("admin"))],
) -> Principal:
    if principal is None or not principal.unlimited:
        raise ProblemError(403, f"key is scoped to model '{principal.model_name}'; managing "
                                "keys needs an admin key without --model")
    return principal


def metrics_access(request: Request, settings: SettingsDep) -> None:
    """/metrics stays open for Prometheus unless METRICS_TOKEN is set (then the token or an
    API key) or REQUIRE_READ_KEY=1 (then an API key)."""
    token = _bearer(request)
    expected = settings.metrics_token
    if token is not None:
        if expected and hmac.compare_digest(token.encode(), expected.encode()):
            return
        _principal_for(request, token, settings)
        return
    if expected:
        raise ProblemError(401, "/metrics needs 'Authorization: Bearer <token>' "
                                "(COLLAPSEWATCH_METRICS_TOKEN) or an API key")
    if settings.require_read_key:
        raise ProblemError(401, "this endpoint needs an API key with scope 'read' "
                                "(COLLAPSEWATCH_REQUIRE_READ_KEY=1); send "
                                "'Authorization: Bearer <key>'")


ReadPrincipal = Annotated[Principal | None, Depends(require("read"))]
IngestPrincipal = Annotated[Principal, Depends(require("ingest"))]
OperatorPrincipal = Annotated[Principal, Depends(require("operator"))]
AdminPrincipal = Annotated[Principal, Depends(require("admin"))]
UnlimitedAdmin = Annotated[Principal, Depends(require_unlimited_admin)]
MetricsAccess = Depends(metrics_access)
