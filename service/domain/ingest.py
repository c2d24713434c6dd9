"""Batched sample ingest: one INSERT ... ON CONFLICT DO NOTHING statement per batch.

Ordering guarantee for the window planner: the model row is locked (PostgreSQL
``SELECT ... FOR UPDATE`` inside the insert statement; SQLite holds its database write lock
from the first write) before the samples get their ids, and stays locked until commit. So,
per model, sample ids are committed in increasing order: once a sample id is visible, every
smaller id of that model is committed too, and windows can be contiguous id ranges without
skipping late commits.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import DateTime, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from service.domain.clock import as_utc
from service.domain.errors import Invalid, NotFound
from service.domain.schemas import IngestResult, SampleIn, storable_text
from service.domain.tables import MonitoredModel
from service.settings import Settings

# SQLite: the batch travels as one JSON text unpacked by json_each, like on PostgreSQL (a
# VALUES list needs SQLAlchemy to process seven parameters per sample in Python). Timestamps
# are passed as text in SQLAlchemy's SQLite format, so the ORM reads them back as it wrote
# them. ("WHERE true" resolves SQLite's parsing ambiguity of INSERT ... SELECT ... ON.)
_SQLITE_INSERT = text("""
INSERT INTO samples (model_id, client_id, text, prompt, timestamp, received_at, attributes)
SELECT :model_id, json_extract(value, '$.id'), json_extract(value, '$.text'),
       json_extract(value, '$.prompt'), json_extract(value, '$.timestamp'), :received_at,
       json_extract(value, '$.attributes')
FROM json_each(:samples) WHERE true
ON CONFLICT (model_id, client_id) DO NOTHING
RETURNING id
""")
_SQLITE_DATETIME = DateTime(timezone=True).dialect_impl(sqlite.dialect()).bind_processor(
    sqlite.dialect())


# PostgreSQL: lock, insert and counters in one statement, so the model row lock (which orders
# id assignment, see the module docstring) is held for one statement and the commit, not
# across several round trips that each wait for this process's GIL under load. The batch
# travels as one JSON text unpacked by json_to_recordset: per-sample placeholders (or
# per-column arrays) cost more CPU in the driver than the insert costs in the server. The
# UPDATE re-reads the locked row (READ COMMITTED re-checks concurrently updated rows), so
# the counters add up under concurrent batches.
_POSTGRES_INGEST = text("""
WITH model AS (
    SELECT id FROM models WHERE name = :model_name FOR UPDATE
), inserted AS (
    INSERT INTO samples (model_id, client_id, text, prompt, timestamp, received_at, attributes)
    SELECT model.id, s.id, s.text, s.prompt, s.timestamp, :received_at,
           CAST(s.attributes AS json)
    FROM model, json_to_recordset(CAST(:samples AS json))
         AS s(id varchar, text text, prompt text, timestamp timestamptz, attributes text)
    ON CONFLICT (model_id, client_id) DO NOTHING
    RETURNING 1
), counted AS (
    SELECT count(*) AS n FROM inserted
), bumped AS (
    UPDATE models SET samples_ingested = models.samples_ingested + counted.n,
                      last_sample_at = :received_at
    FROM counted, model
    WHERE models.id = model.id AND counted.n > 0
)
SELECT (SELECT id FROM model) AS model_id, (SELECT n FROM counted) AS accepted
""")


def check_batch(samples: list[SampleIn], settings: Settings) -> None:
    """What the schema leaves to this one pass over the batch (422 naming the field): the
    batch size and text length limits from settings, and characters that cannot be stored
    as text (NUL, unpaired UTF-16 surrogates from JSON escapes such as "\\ud800")."""
    if len(samples) > settings.max_batch_size:
        raise Invalid(
            f"samples: {len(samples)} samples in one batch; the limit is "
            f"{settings.max_batch_size} (COLLAPSEWATCH_MAX_BATCH_SIZE); split the batch",
        )
    limit = settings.max_text_chars
    for i, sample in enumerate(samples):
        for field in ("id", "text", "prompt"):
            value = getattr(sample, field)
            if value is None:
                continue
            if field != "id" and len(value) > limit:
                _reject(i, field, f"{len(value)} characters; the limit is {limit} "
                                  "(COLLAPSEWATCH_MAX_TEXT_CHARS)")
            # ASCII text cannot hold a surrogate: the cheap test first
            if not (value.isascii() and "\x00" not in value):
                try:
                    storable_text(value)
                except ValueError as exc:
                    _reject(i, field, str(exc))


def _reject(index: int, field: str, message: str) -> None:
    where = f"samples.{index}.{field}"
    raise Invalid(f"{where}: {message}", errors=[{"field": where, "message": message}])


def _unique(samples: list[SampleIn]) -> list[SampleIn]:
    """The batch without repeated ids; the first occurrence wins."""
    seen: set[str] = set()
    out = []
    for sample in samples:
        if sample.id not in seen:
            seen.add(sample.id)
            out.append(sample)
    return out


def _not_found(model_name: str) -> NotFound:
    return NotFound(f"model {model_name!r} does not exist; create it with "
                             "POST /api/v1/models")


def _ingest_postgres(session: Session, model_name: str, samples: list[SampleIn],
                     now: datetime) -> int:
    rows = [{"id": s.id, "text": s.text, "prompt": s.prompt,
             "timestamp": None if s.timestamp is None else as_utc(s.timestamp).isoformat(),
             # nested as a JSON string: json_to_recordset would unescape "\u0000" inside
             # an object, and text cannot hold NUL
             "attributes": None if s.attributes is None else json.dumps(s.attributes)}
            for s in samples]
    params = {"model_name": model_name, "received_at": now, "samples": json.dumps(rows)}
    model_id, accepted = session.execute(_POSTGRES_INGEST, params).one()
    if model_id is None:
        raise _not_found(model_name)
    return accepted


def _ingest_sqlite(session: Session, model_name: str, samples: list[SampleIn],
                   now: datetime) -> int:
    # SQLite has one writer at a time: the INSERT takes the database write lock, held until
    # commit, so ids are committed in increasing order without a row lock
    model_id = session.scalar(select(MonitoredModel.id).where(MonitoredModel.name == model_name))
    if model_id is None:
        raise _not_found(model_name)
    rows = [{"id": s.id, "text": s.text, "prompt": s.prompt,
             "timestamp": None if s.timestamp is None else _SQLITE_DATETIME(as_utc(s.timestamp)),
             "attributes": s.attributes} for s in samples]
    params = {"model_id": model_id, "received_at": _SQLITE_DATETIME(now),
              "samples": json.dumps(rows)}
    accepted = len(session.execute(_SQLITE_INSERT, params).all())
    if accepted:
        session.execute(
            update(MonitoredModel)
            .where(MonitoredModel.id == model_id)
            .values(samples_ingested=MonitoredModel.samples_ingested + accepted,
                    last_sample_at=now,
                    # updated_at tracks configuration changes, not traffic
                    updated_at=MonitoredModel.updated_at)
        )
    return accepted


def ingest_samples(
    session: Session, settings: Settings, model_name: str, samples: list[SampleIn]
) -> IngestResult:
    """Store a batch idempotently; count the samples stored and the duplicates skipped.

    Also adds the stored count to ``models.samples_ingested`` and sets ``last_sample_at``
    (both untouched when every sample was a duplicate). Commits.
    """
    check_batch(samples, settings)
    unique = _unique(samples)
    now = datetime.now(UTC)
    if session.bind.dialect.name == "postgresql":
        accepted = _ingest_postgres(session, model_name, unique, now)
    else:
        accepted = _ingest_sqlite(session, model_name, unique, now)
    session.commit()
    return IngestResult(accepted=accepted, duplicates=len(samples) - accepted)
