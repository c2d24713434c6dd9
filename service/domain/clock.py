"""Time in one place: every stored timestamp is UTC.

SQLite hands back naive datetimes (it stores the wall-clock time without its offset), so
anything read from the database goes through ``as_utc`` before it is compared or rendered.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive value is taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def as_utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)
