"""Engine and session handling for SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, create_engine, event, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.settings import get_settings


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=True
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@lru_cache(maxsize=8)
def get_engine(url: str | None = None) -> Engine:
    return make_engine(url or get_settings().resolved_database_url)


@lru_cache(maxsize=8)
def _sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    return _sessionmaker(url or get_settings().resolved_database_url)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_postgres(session_or_engine) -> bool:
    bind = getattr(session_or_engine, "bind", None) or session_or_engine
    return bind.dialect.name == "postgresql"


def insert_missing(session: Session, table: Table, rows: Sequence[dict[str, Any]],
                   keys: Sequence[str]) -> int:
    """Insert the rows whose ``keys`` (a unique constraint of ``table``) are not stored yet;
    return how many were sent to the database.

    Existing keys are read first and only the missing rows are inserted. A bare
    ``INSERT ... ON CONFLICT DO NOTHING`` would do the same in one statement, but on
    PostgreSQL it draws a sequence value for every row it then discards: on hot paths
    (alert counters on every liveness tick, outbox rows, scores) that burns ids forever.
    The ON CONFLICT stays as the backstop for two writers racing on the same key.
    """
    if not rows:
        return 0
    key_cols = [table.c[k] for k in keys]
    wanted = {tuple(row[k] for k in keys) for row in rows}
    existing: set[tuple[Any, ...]] = set()
    wanted_list = sorted(wanted, key=repr)
    for start in range(0, len(wanted_list), 500):  # bounded IN lists
        chunk = wanted_list[start:start + 500]
        if len(keys) == 1:
            cond = key_cols[0].in_([k[0] for k in chunk])
        else:
            cond = tuple_(*key_cols).in_(chunk)
        existing.update(tuple(r) for r in session.execute(select(*key_cols).where(cond)))
    missing = [row for row in rows if tuple(row[k] for k in keys) not in existing]
    if not missing:
        return 0
    dialect = postgresql if is_postgres(session) else sqlite
    session.execute(dialect.insert(table).values(missing)
                    .on_conflict_do_nothing(index_elements=list(keys)))
    return len(missing)


def reset_engines() -> None:
    """Forget cached engines (tests switch databases)."""
    for fn in (_sessionmaker, get_engine):
        fn.cache_clear()
