"""Routes: liveness (``/healthz``) and readiness (``/readyz``: the database answers and its
schema is at the migrations' head)."""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service.api.errors import ProblemError
from service.domain.db import get_engine
from service.domain.schemas import Liveness, Readiness
from service.settings import get_settings

router = APIRouter(tags=["health"])


@lru_cache(maxsize=1)
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from service.domain.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


@router.get("/healthz", response_model=Liveness)
def healthz() -> Liveness:
    """The process is up (no dependencies checked)."""
    return Liveness(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"description": "not ready"}})
def readyz() -> Readiness:
    """Ready to serve: the database answers and its schema is up to date."""
    engine = get_engine(get_settings().resolved_database_url)  # the sessions' engine
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            try:
                revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except SQLAlchemyError:
                revision = None
    except SQLAlchemyError as exc:
        cause = type(getattr(exc, "orig", None) or exc).__name__
        raise ProblemError(503, f"database unavailable ({cause}); "
                                "check COLLAPSEWATCH_DATABASE_URL") from None
    head = head_revision()
    if revision != head:
        raise ProblemError(503, f"database schema is at {revision or 'nothing'}, expected {head}; "
                                "run `collapsewatch migrate`")
    return Readiness(status="ready", database=engine.dialect.name, schema_revision=revision)
