"""API keys: created once, shown once, stored as SHA-256 only; listed, revoked, expired.

Every request looks its key up in the database (no per-process cache), so a revoke or an
expiry takes effect at once in every API process.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from service.domain.clock import as_utc_or_none, utcnow
from service.domain.errors import Invalid, NotFound, Unauthorized
from service.domain.scopes import SCOPES
from service.domain.tables import ApiKey

# What each scope may do. Every key may read; ingest keys send samples; operator keys
# acknowledge alerts (and nothing else that changes state); admin keys may do everything.
_ALLOWS = {
    "admin": {"admin", "operator", "ingest", "read"},
    "operator": {"operator", "read"},
    "ingest": {"ingest", "read"},
    "read": {"read"},
}
KEY_PREFIX = "cw_"
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Principal:
    key_id: int
    scope: str
    model_name: str | None

    @property
    def label(self) -> str:
        return f"key:{self.key_id}"

    @property
    def unlimited(self) -> bool:
        return self.model_name is None

    def has_scope(self, scope: str) -> bool:
        return scope in _ALLOWS[self.scope]

    def allows(self, scope: str, model_name: str | None = None) -> bool:
        """Scope check plus, for a key limited to one model, the model check on every verb.

        ``model_name`` None means "not about one model": reads of shared things (references,
        the model list, which the route filters) pass; a change that is not about one model
        needs an unlimited key.
        """
        if not self.has_scope(scope):
            return False
        if self.model_name is None:
            return True
        if model_name is None:
            return scope == "read"
        return model_name == self.model_name


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` → a timedelta (Invalid otherwise)."""
    match = _DURATION.match(text or "")
    if match is None or int(match.group(1)) == 0:
        raise Invalid(f"expires-in {text!r} is not a duration; use a positive number and a "
                      "unit s, m, h, d or w (e.g. 30d)")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def issue_key(session: Session, scope: str, model_name: str | None = None,
              description: str | None = None,
              expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """Create a key; return its row and the key in clear text (only its hash is stored)."""
    if scope not in SCOPES:
        raise Invalid(f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(prefix=key[:12], key_hash=hash_key(key), scope=scope, model_name=model_name,
                 description=description, expires_at=expires_at)
    session.add(row)
    session.flush()
    return row, key


def create_key(session: Session, scope: str, model_name: str | None = None,
               description: str | None = None, expires_at: datetime | None = None) -> str:
    """Create a key and return it in clear text."""
    return issue_key(session, scope, model_name, description, expires_at)[1]


def authenticate(session: Session, key: str, touch_interval_seconds: float = 60.0) -> Principal:
    """The principal for ``key``; Unauthorized when unknown, revoked or expired.

    ``last_used_at`` is written only when it is older than ``touch_interval_seconds``, with a
    conditional UPDATE, so concurrent requests of one key write it once. Callers use a short
    session of its own: the request's transaction may run for long and must not hold the key
    row's lock meanwhile.
    """
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None:
        raise Unauthorized("unknown or revoked API key")
    now = utcnow()
    if row.revoked_at is not None:
        raise Unauthorized(f"API key {row.id} was revoked")
    expires = as_utc_or_none(row.expires_at)
    if expires is not None and expires <= now:
        raise Unauthorized(f"API key {row.id} expired at {expires.isoformat()}")
    last = as_utc_or_none(row.last_used_at)
    if last is None or (now - last).total_seconds() >= touch_interval_seconds:
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == row.id,
                   or_(ApiKey.last_used_at.is_(None),
                       ApiKey.last_used_at < now - timedelta(seconds=touch_interval_seconds)))
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
    return Principal(key_id=row.id, scope=row.scope, model_name=row.model_name)


def verify_key(session: Session, key: str) -> Principal | None:
    """The principal for ``key``, or None when unknown, revoked or expired (no side effect)."""
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.revoked_at is not None:
        return None
    expires = as_utc_or_none(row.expires_at)
    if expires is not None and expires <= utcnow():
        return None
    return Principal(key_id=row.id, scope=row.scope, model_name=row.model_name)


def key_public(row: ApiKey) -> dict[str, Any]:
    """What may be shown about a key: never the key, its hash or its lookup prefix."""
    expires = as_utc_or_none(row.expires_at)
    return {
        "id": row.id,
        "scope": row.scope,
        "model": row.model_name,
        "description": row.description,
        "created_at": as_utc_or_none(row.created_at),
        "last_used_at": as_utc_or_none(row.last_used_at),
        "expires_at": expires,
        "revoked_at": as_utc_or_none(row.revoked_at),
        "active": row.revoked_at is None and (expires is None or expires > utcnow()),
    }


def list_keys(session: Session, limit: int = 100,
              after_id: int | None = None) -> tuple[list[ApiKey], int | None]:
    """Keys by id, ``limit`` at a time after ``after_id``; the id to continue after, or None."""
    stmt = select(ApiKey).order_by(ApiKey.id).limit(limit + 1)
    if after_id is not None:
        stmt = stmt.where(ApiKey.id > after_id)
    rows = list(session.scalars(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


def get_key(session: Session, key_id: int) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"no API key with id {key_id}; list them with `collapsewatch keys list`")
    return row


def revoke_key(session: Session, key_id: int) -> ApiKey:
    """Revoke a key (idempotent: a second revoke keeps the first time)."""
    row = get_key(session, key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row
