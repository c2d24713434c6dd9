"""Batched sample ingest: one multi-row INSERT ... ON CONFLICT DO NOTHING per batch.

Ordering guarantee for the window planner: the model row is locked (PostgreSQL
``SELECT ... FOR UPDATE``; SQLite holds its database write lock from the first write) before
the samples get their ids, and stays locked until commit. So, per model, sample ids are
committed in increasing order: once a sample id is visible, every smaller id of that model is
committed too, and windows can be contiguous id ranges without skipping late commits.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache

from sqlalchemy import JSON, DateTime, Insert, String, Text, bindparam, cast, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from service.api.errors import ProblemError
from service.models import MonitoredModel, Sample
from service.schemas import IngestResult, SampleIn
from service.settings import Settings

_SAMPLES = Sample.__table__
_COLUMNS = ("model_id", "client_id", "text", "prompt", "timestamp", "received_at", "attributes")


@lru_cache(maxsize=1)
def _sqlite_insert() -> Insert:
    """INSERT ... VALUES (...), (...) ON CONFLICT (model_id, client_id) DO NOTHING RETURNING id.

    Executed with a list of parameter sets, SQLAlchemy's "insertmanyvalues" renders one
    multi-row VALUES statement (up to 1000 rows, more than the default batch limit), and
    RETURNING yields one row per sample actually inserted.
    """
    return (
        sqlite_insert(_SAMPLES)
        .on_conflict_do_nothing(index_elements=["model_id", "client_id"])
        .returning(_SAMPLES.c.id)
    )


@lru_cache(maxsize=1)
def _postgres_insert() -> Insert:
    """INSERT ... SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING RETURNING id.

    One statement with seven parameters whatever the batch size: each column travels as one
    array. A VALUES list would carry seven placeholders per sample, and parsing those
    thousands of placeholders in the driver cost more CPU than the insert itself.
    """
    rows = func.unnest(
        cast(bindparam("client_ids"), ARRAY(String)),
        cast(bindparam("texts"), ARRAY(Text)),
        cast(bindparam("prompts"), ARRAY(Text)),
        cast(bindparam("timestamps"), ARRAY(DateTime(timezone=True))),
        cast(bindparam("attributes"), ARRAY(Text)),
    ).table_valued("client_id", "text", "prompt", "timestamp", "attributes").render_derived()
    source = select(
        bindparam("model_id"), rows.c.client_id, rows.c.text, rows.c.prompt, rows.c.timestamp,
        bindparam("received_at", type_=DateTime(timezone=True)), cast(rows.c.attributes, JSON),
    )
    return (
        pg_insert(_SAMPLES)
        .from_select(list(_COLUMNS), source)
        .on_conflict_do_nothing(index_elements=["model_id", "client_id"])
        .returning(_SAMPLES.c.id)
    )


def check_batch(samples: list[SampleIn], settings: Settings) -> None:
    """Limits that depend on settings: batch size and per-text length (422 naming the field)."""
    if len(samples) > settings.max_batch_size:
        raise ProblemError(
            422,
            f"samples: {len(samples)} samples in one batch; the limit is "
            f"{settings.max_batch_size} (COLLAPSEWATCH_MAX_BATCH_SIZE); split the batch",
        )
    limit = settings.max_text_chars
    for i, sample in enumerate(samples):
        for field in ("text", "prompt"):
            value = getattr(sample, field)
            if value is not None and len(value) > limit:
                raise ProblemError(
                    422,
                    f"samples.{i}.{field}: {len(value)} characters; the limit is {limit} "
                    "(COLLAPSEWATCH_MAX_TEXT_CHARS)",
                    errors=[{"field": f"samples.{i}.{field}",
                             "message": f"longer than {limit} characters"}],
                )


def _unique(samples: list[SampleIn]) -> list[SampleIn]:
    """The batch without repeated ids; the first occurrence wins."""
    seen: set[str] = set()
    out = []
    for sample in samples:
        if sample.id not in seen:
            seen.add(sample.id)
            out.append(sample)
    return out


def _insert(session: Session, model_id: int, samples: list[SampleIn], now: datetime) -> int:
    """Insert the batch in one statement; the number of rows actually inserted."""
    if session.bind.dialect.name == "postgresql":
        params = {
            "model_id": model_id, "received_at": now,
            "client_ids": [s.id for s in samples],
            "texts": [s.text for s in samples],
            "prompts": [s.prompt for s in samples],
            "timestamps": [s.timestamp for s in samples],
            "attributes": [None if s.attributes is None else json.dumps(s.attributes)
                           for s in samples],
        }
        return len(session.execute(_postgres_insert(), params).all())
    rows = [{"model_id": model_id, "client_id": s.id, "text": s.text, "prompt": s.prompt,
             "timestamp": s.timestamp, "received_at": now, "attributes": s.attributes}
            for s in samples]
    return len(session.execute(_sqlite_insert(), rows).all())


def ingest_samples(
    session: Session, settings: Settings, model_name: str, samples: list[SampleIn]
) -> IngestResult:
    """Store a batch idempotently; count the samples stored and the duplicates skipped."""
    check_batch(samples, settings)
    # FOR UPDATE serialises batches of one model (see the module docstring); SQLite ignores it
    model_id = session.scalar(
        select(MonitoredModel.id).where(MonitoredModel.name == model_name).with_for_update()
    )
    if model_id is None:
        raise ProblemError(404, f"model {model_name!r} does not exist; create it with "
                                "POST /api/v1/models")
    now = datetime.now(UTC)
    accepted = _insert(session, model_id, _unique(samples), now)
    if accepted:
        session.execute(
            update(MonitoredModel)
            .where(MonitoredModel.id == model_id)
            .values(samples_ingested=MonitoredModel.samples_ingested + accepted,
                    last_sample_at=now,
                    # updated_at tracks configuration changes, not traffic
                    updated_at=MonitoredModel.updated_at)
        )
    session.commit()
    return IngestResult(accepted=accepted, duplicates=len(samples) - accepted)
