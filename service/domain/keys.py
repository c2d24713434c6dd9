"""API keys: created once, shown once, stored as SHA-256 only."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.domain.tables import ApiKey

SCOPES = ("ingest", "read", "admin")
# what each scope may do: admin ⊇ ingest, admin ⊇ read; ingest keys may also read
_ALLOWS = {"admin": {"admin", "ingest", "read"}, "ingest": {"ingest", "read"}, "read": {"read"}}
KEY_PREFIX = "cw_"


@dataclass(frozen=True)
class Principal:
    key_id: int
    scope: str
    model_name: str | None

    @property
    def label(self) -> str:
        return f"key:{self.key_id}"

    def has_scope(self, scope: str) -> bool:
        return scope in _ALLOWS[self.scope]

    def allows(self, scope: str, model_name: str | None = None) -> bool:
        """Scope check plus, for keys scoped to one model, the model check on writes."""
        if not self.has_scope(scope):
            return False
        if self.model_name is not None and scope != "read":
            return model_name is not None and model_name == self.model_name
        return True


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(
    session: Session, scope: str, model_name: str | None = None, description: str | None = None
) -> str:
    """Create a key and return it in clear text; only its hash is stored."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiKey(
            prefix=key[:12],
            key_hash=hash_key(key),
            scope=scope,
            model_name=model_name,
            description=description,
        )
    )
    session.flush()
    return key


def verify_key(session: Session, key: str) -> Principal | None:
    """The principal for ``key``, or None when unknown or revoked."""
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.revoked_at is not None:
        return None
    return Principal(key_id=row.id, scope=row.scope, model_name=row.model_name)
