"""Cursor paging for lists (``limit``, ``cursor`` -> ``next_cursor``).

A cursor is the sort key of the last row of a page, as url-safe base64 of a JSON array: a
page is one indexed range scan whatever the offset, and rows inserted meanwhile neither
repeat nor vanish from later pages. Clients treat cursors as opaque.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from service.domain.errors import Invalid

MAX_CURSOR_CHARS = 512


def encode_cursor(*values: Any) -> str:
    raw = json.dumps([v.isoformat() if isinstance(v, datetime) else v for v in values],
                     separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, kinds: Sequence[type]) -> tuple[Any, ...] | None:
    """The values of a cursor made by :func:`encode_cursor` (``kinds``: their types, with
    ``datetime`` for timestamps); a cursor not made here is a 422 (Invalid)."""
    if cursor is None:
        return None
    bad = Invalid(f"cursor: {cursor[:40]!r} is not a cursor from next_cursor")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise bad
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(values, list) or len(values) != len(kinds):
        raise bad
    out: list[Any] = []
    for value, kind in zip(values, kinds, strict=True):
        if kind is datetime:
            try:
                value = datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise bad from None
        elif not _valid(value, kind):
            raise bad
        out.append(value)
    return tuple(out)


def _valid(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
    return isinstance(value, kind)

def page(rows: list[Any], limit: int, key) -> tuple[list[Any], str | None]:
    """``rows`` fetched with ``limit + 1``: (the page, the next cursor or None)."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(*key(rows[-1]))
