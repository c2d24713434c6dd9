"""Routes: API keys (list, create, revoke), for admin keys without a model limit only.

A key is returned once, by the POST that creates it; afterwards only what ``key_public``
shows (never the key, its hash or its prefix).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from service.api.deps import SessionDep, UnlimitedAdmin
from service.api.errors import ProblemError
from service.domain import keys as service
from service.domain.clock import utcnow

router = APIRouter(tags=["keys"])

KeyId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class KeyPublic(BaseModel):
    id: int
    scope: str
    model: str | None
    description: str | None
    created_at: datetime | None
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    active: bool


class KeyCreated(KeyPublic):
    key: str = Field(description="the key itself; shown this once, only its hash is stored")


class KeyList(BaseModel):
    keys: list[KeyPublic]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Literal["ingest", "read", "operator", "admin"]
    model: str | None = Field(default=None, min_length=1, max_length=200,
                              pattern=r"^[^\x00-\x1f\x7f]+$",
                              description="limit the key to this model, for every verb")
    description: str | None = Field(default=None, max_length=500,
                                    pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")
    expires_in: str | None = Field(default=None, max_length=16,
                                   description="e.g. 30d, 12h, 90m, 2w (default: never)")


def _cursor(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or len(value) > 19:
        raise ProblemError(422, f"cursor: {value!r} is not a cursor from next_cursor")
    return int(value)


@router.get("/keys", response_model=KeyList, summary="API keys, oldest first (paged)")
def list_keys(_: UnlimitedAdmin, session: SessionDep,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              cursor: Annotated[str | None, Query(max_length=32)] = None) -> KeyList:
    rows, after = service.list_keys(session, limit, _cursor(cursor))
    return KeyList(keys=[KeyPublic(**service.key_public(r)) for r in rows],
                   next_cursor=None if after is None else str(after))


@router.post("/keys", status_code=201, response_model=KeyCreated,
             summary="Create a key; the answer carries it once")
def create_key(body: KeyCreate, _: UnlimitedAdmin, session: SessionDep) -> KeyCreated:
    expires_at = None
    if body.expires_in is not None:
        expires_at = utcnow() + service.parse_duration(body.expires_in)
    row, key = service.issue_key(session, body.scope, body.model, body.description, expires_at)
    return KeyCreated(**service.key_public(row), key=key)


@router.get("/keys/{key_id}", response_model=KeyPublic)
def get_key(key_id: KeyId, _: UnlimitedAdmin, session: SessionDep) -> KeyPublic:
    return KeyPublic(**service.key_public(service.get_key(session, key_id)))


@router.delete("/keys/{key_id}", response_model=KeyPublic,
               summary="Revoke a key (401 at once, in every API process)")
def revoke_key(key_id: KeyId, _: UnlimitedAdmin, session: SessionDep) -> KeyPublic:
    return KeyPublic(**service.key_public(service.revoke_key(session, key_id)))


@router.post("/keys/{key_id}/revoke", response_model=KeyPublic,
             summary="Revoke a key (same as DELETE)")
def revoke_key_post(key_id: KeyId, principal: UnlimitedAdmin,
                    session: SessionDep) -> KeyPublic:
    return revoke_key(key_id, principal, session)
