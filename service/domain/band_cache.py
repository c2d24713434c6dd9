"""Computed bands kept in the database, shared by every worker process and across restarts.

A band (``metrics.Profile.band``) takes a second or two to compute the first time a window
size and token budget are seen. Each process keeps the bands it computed in memory; this
store lets the other processes, hosts and the next restart read them instead.

Rows are keyed by ``profile_key``: a sha256 of the exact profile bytes, of the code that
computes bands (the service version, the metric list and the replicate draw) and, for a
baseline, of the reference row it is scored against. A key therefore never names a stale
band; rows of old keys are simply never read again, and the reaper deletes rows unused for
``band_cache_keep_days`` (:func:`purge_unused`). The table is a cache: any row can be
deleted and is recomputed on demand. Store failures are logged and cost a recomputation,
never a failed evaluation.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError

from service import __version__
from service.domain.clock import as_utc
from service.domain.db import insert_missing, session_factory
from service.domain.tables import BandCache
from service.logging import get_logger

log = get_logger("collapsewatch.bands")

TOUCH_AFTER = timedelta(days=1)


def profile_key(profile_bytes: bytes, context: str = "") -> str:
    """The cache key of a profile's bands (see the module docstring), the same the offline
    CLI's band directory uses (:func:`metrics.band_cache_dir.band_key`)."""
    from metrics.band_cache_dir import band_key

    return band_key(profile_bytes, context, __version__)


def _encode(matrix: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(matrix, dtype=np.float64), allow_pickle=False)
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def purge_unused(keep_days: float, now: datetime | None = None) -> int:
    """Delete rows not read or written for ``keep_days`` days (bands of profiles no longer
    in use: a re-pinned baseline, an old reference version). Returns how many."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    with session_factory()() as session, session.begin():
        deleted = session.execute(delete(BandCache).where(BandCache.used_at < cutoff)).rowcount
    if deleted:
        log.info("unused bands dropped", extra={"rows": deleted, "keep_days": keep_days})
    return deleted


class DatabaseBandStore:
    """:class:`metrics.profile.BandStore` over the ``band_cache`` table."""

    def __init__(self, key: str) -> None:
        self.key = key

    def _read(self, n_docs: int, budget: int | None) -> np.ndarray | None:
        query = select(BandCache.id, BandCache.matrix, BandCache.used_at).where(
            BandCache.profile_key == self.key, BandCache.n_docs == int(n_docs))
        if budget is not None:
            query = query.where(BandCache.budget == int(budget))
        try:
            with session_factory()() as session, session.begin():
                row = session.execute(query.limit(1)).one_or_none()
                if row is None:
                    return None
                now = datetime.now(UTC)
                if now - as_utc(row.used_at) > TOUCH_AFTER:  # a write at most daily per row
                    session.execute(update(BandCache).where(BandCache.id == row.id)
                                    .values(used_at=now))
            return _decode(row.matrix)
        except (SQLAlchemyError, ValueError, OSError) as exc:
            log.warning("could not read a stored band; computing it",
                        extra={"n_docs": n_docs, "budget": budget, "error": str(exc)})
            return None

    def load(self, n_docs: int, budget: int) -> np.ndarray | None:
        return self._read(n_docs, budget)

    def load_any(self, n_docs: int) -> np.ndarray | None:
        return self._read(n_docs, None)

    def stored_keys(self) -> list[tuple[int, int]]:
        query = select(BandCache.n_docs, BandCache.budget).where(BandCache.profile_key == self.key)
        try:
            with session_factory()() as session:
                return sorted((int(n), int(b)) for n, b in session.execute(query))
        except SQLAlchemyError as exc:
            log.warning("could not list stored bands", extra={"error": str(exc)})
            return []

    def save(self, n_docs: int, budget: int, matrix: np.ndarray) -> None:
        now = datetime.now(UTC)
        row = {"profile_key": self.key, "n_docs": int(n_docs), "budget": int(budget),
               "matrix": _encode(matrix), "created_at": now, "used_at": now}
        try:
            with session_factory()() as session, session.begin():
                insert_missing(session, BandCache.__table__, [row],
                               keys=("profile_key", "n_docs", "budget"))
        except SQLAlchemyError as exc:
            log.warning("could not store a computed band", extra={
                "n_docs": n_docs, "budget": budget, "error": str(exc)})

