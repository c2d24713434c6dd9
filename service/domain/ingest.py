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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import DateTime, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from service.domain.clock import as_utc
from service.domain.db import is_postgres
from service.domain.errors import Conflict, Invalid, NotFound
from service.domain.schemas import IngestResult, SampleIn, storable_text
from service.domain.tables import MonitoredModel
from service.settings import Settings

if TYPE_CHECKING:  # the otel extra is needed only when traces arrive
    from collectors import otlp

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
    batch size, text length and attributes size limits from settings, and characters that
    cannot be stored as text (NUL, unpaired UTF-16 surrogates from JSON escapes such as
    "\\ud800")."""
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
        if sample.attributes:
            size = attributes_size(sample.attributes)
            if size > settings.max_attributes_bytes:
                _reject(i, "attributes", f"{size} bytes as JSON; the limit is "
                        f"{settings.max_attributes_bytes} (COLLAPSEWATCH_MAX_ATTRIBUTES_BYTES); "
                        "keep attributes to short labels")


def attributes_size(attributes: dict[str, Any]) -> int:
    """Bytes of ``attributes`` as stored (compact JSON, UTF-8)."""
    return len(json.dumps(attributes, ensure_ascii=False, separators=(",", ":"))
               .encode("utf-8", "surrogatepass"))


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
    if is_postgres(session):
        accepted = _ingest_postgres(session, model_name, unique, now)
    else:
        accepted = _ingest_sqlite(session, model_name, unique, now)
    session.commit()
    return IngestResult(accepted=accepted, duplicates=len(samples) - accepted)


# ---------------------------------------------------------------- OTLP traces

@dataclass
class TraceIngestResult:
    """What became of the spans of one OTLP export request."""

    accepted: int = 0                  # samples stored
    duplicates: int = 0                # samples already stored (a re-sent batch)
    skipped: int = 0                   # not LLM spans, or no completion text
    rejected_spans: int = 0            # LLM spans that could not be stored (see reasons)
    unknown_models: Counter = dataclass_field(default_factory=Counter)
    reasons: Counter = dataclass_field(default_factory=Counter)
    models: list[str] = dataclass_field(default_factory=list)  # models given new samples

    def message(self) -> str:
        """The partial-success error message: why spans were rejected, most common first."""
        parts = []
        if self.unknown_models:
            names = ", ".join(f"{n!r} ({c})" for n, c in self.unknown_models.most_common(5))
            parts.append(f"unknown model names: {names}; create the models, map the names "
                         "with COLLAPSEWATCH_OTLP_MODEL_RULES, or set "
                         "COLLAPSEWATCH_AUTO_CREATE_MODELS=1")
        parts += [f"{reason} ({count})" for reason, count in self.reasons.most_common(5)]
        return "; ".join(parts)


@lru_cache(maxsize=8)
def _model_rules(spec: str) -> otlp.ModelRules:
    from collectors import otlp

    return otlp.ModelRules.parse(spec)


def _auto_create(session: Session, settings: Settings, name: str) -> bool:
    """Create model ``name`` on the auto-create reference; False when that is not possible."""
    from service.domain.catalog import create_model
    from service.domain.schemas import ModelCreate
    from service.domain.tables import Reference

    if not settings.auto_create_reference:
        return False
    reference_id = session.scalar(
        select(Reference.id).where(Reference.name == settings.auto_create_reference)
        .order_by(Reference.version.desc()).limit(1))
    if reference_id is None:
        return False
    try:
        create_model(session, settings, ModelCreate(name=name, reference_id=reference_id))
    except Conflict:  # created meanwhile by another request
        pass
    except (ValidationError, Invalid):
        return False
    return True


def _sample_in(sample: otlp.SpanSample, settings: Settings) -> SampleIn | str:
    """The sample to store, or why it cannot be stored."""
    if len(sample.text) > settings.max_text_chars:
        return f"completion over {settings.max_text_chars} characters"
    prompt = sample.prompt
    try:
        storable_text(sample.text)
        if prompt is not None:
            prompt = storable_text(prompt[:settings.max_text_chars])
    except ValueError as exc:
        return f"text cannot be stored ({exc})"
    stamp = None if sample.timestamp is None else datetime.fromtimestamp(sample.timestamp, UTC)
    return SampleIn(id=sample.id, text=sample.text, prompt=prompt, timestamp=stamp,
                    attributes=sample.attributes)


def ingest_spans(session: Session, settings: Settings, request: Any,
                 allowed: Callable[[str], bool] = lambda name: True) -> TraceIngestResult:
    """Store the LLM spans of a decoded ``ExportTraceServiceRequest`` as samples.

    Span model names are mapped to monitored models by ``settings.otlp_model_rules`` (see
    ``collectors.otlp.ModelRules``); names no model has are counted in ``unknown_models``
    and dropped, or become new models when ``auto_create_models`` is on. ``allowed`` says
    whether the caller's key may write to a model. Commits once per model.
    """
    from collectors import otlp

    try:
        rules = _model_rules(settings.otlp_model_rules)
    except ValueError as exc:
        raise Invalid(f"COLLAPSEWATCH_OTLP_MODEL_RULES is wrong: {exc}") from None
    extraction = otlp.extract(request, rules)
    result = TraceIngestResult(skipped=extraction.skipped, reasons=Counter(extraction.reasons))
    result.reasons.pop("no completion text", None)  # skipped, not rejected
    result.rejected_spans = extraction.rejected
    wanted = {name for s in extraction.samples for name in s.models}
    known = set(session.scalars(select(MonitoredModel.name).where(
        MonitoredModel.name.in_(sorted(wanted))))) if wanted else set()
    by_model: dict[str, list[SampleIn]] = {}
    rejected: set[str] = set()
    for sample in extraction.samples:
        span = sample.id[:49]  # trace id - span id: choices of one span count once
        name = otlp.resolve_model(sample.models, known.__contains__)
        if (name is None and settings.auto_create_models and allowed(sample.models[0])
                and _auto_create(session, settings, sample.models[0])):
            name = sample.models[0]
            known.add(name)
        if name is None:
            result.unknown_models[sample.models[0]] += 1
            rejected.add(span)
            continue
        if not allowed(name):
            result.reasons[f"the key may not write to model {name!r}"] += 1
            rejected.add(span)
            continue
        converted = _sample_in(sample, settings)
        if isinstance(converted, str):
            result.reasons[converted] += 1
            rejected.add(span)
            continue
        by_model.setdefault(name, []).append(converted)
    for name, samples in by_model.items():
        for start in range(0, len(samples), settings.max_batch_size):
            batch = samples[start:start + settings.max_batch_size]
            try:
                stored = ingest_samples(session, settings, name, batch)
            except NotFound:  # deleted since the lookup
                session.rollback()
                result.unknown_models[name] += len(batch)
                rejected.update(s.id[:49] for s in batch)
                continue
            result.accepted += stored.accepted
            result.duplicates += stored.duplicates
            if stored.accepted and name not in result.models:
                result.models.append(name)
    result.rejected_spans += len(rejected)
    return result
