"""Window planning: turn a model's stored samples into contiguous, non-overlapping windows.

A window is a contiguous range of one model's sample ids, ``(windowed_through, last_id]``.
``models.windowed_through_sample_id`` is the highest id already given to a window, so the
next window starts right after it: windows never overlap and never skip an id.

Why skipping cannot happen on PostgreSQL, where sequence values are handed out at insert
time but transactions commit in any order: ingest (``service.domain.ingest``) locks the model row
(``SELECT ... FOR UPDATE``) *before* its samples get ids and keeps the lock until commit.
The planner takes the same row lock (``FOR UPDATE SKIP LOCKED``: a model being ingested
right now is simply planned on the next tick). While the planner holds the lock, no
transaction can be holding uncommitted ids of that model, and every later batch draws its
ids after the planner commits, so they are larger than anything the planner saw.
On SQLite there is one writer at a time and a writer always sees the newest data, so ids are
committed in increasing order; the planner takes the write lock first (a no-op UPDATE) so
that two planners serialise.

SKIP LOCKED also lets several beat/worker hosts plan at once without planning a window
twice; the unique constraint ``(model_id, window_index, reference_id)`` is the backstop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from service.domain.clock import as_utc
from service.domain.db import is_postgres
from service.domain.tables import Evaluation, MonitoredModel, Sample
from service.logging import get_logger

log = get_logger("collapsewatch.windows")

# windows closed for one model in one planning pass; the rest wait for the next tick, so a
# large backlog never makes one transaction huge
MAX_WINDOWS_PER_PASS = 50


@dataclass(frozen=True)
class WindowPolicy:
    """Close a window at ``size`` samples, or when its oldest sample is ``max_age_seconds``
    old and it holds at least ``min_size`` samples (``max_age_seconds`` None: size only)."""

    size: int
    max_age_seconds: int | None
    min_size: int


@dataclass(frozen=True)
class PendingSample:
    id: int
    received_at: datetime


@dataclass(frozen=True)
class WindowSpan:
    first_id: int
    last_id: int
    count: int


def close_windows(
    pending: Sequence[PendingSample], policy: WindowPolicy, now: datetime, complete: bool = True
) -> list[WindowSpan]:
    """The windows to close over ``pending`` (ascending ids, all not yet windowed).

    Pure. Full windows of ``policy.size`` come first; the remainder closes as one window
    when its oldest sample is at least ``max_age_seconds`` old and it holds at least
    ``min_size`` samples. ``complete=False`` means ``pending`` was truncated, so the
    remainder is not the whole tail and the age rule must wait for the next pass.
    """
    if policy.size < 1 or policy.min_size < 1:
        raise ValueError(f"window size and min_size must be positive, got {policy}")
    spans: list[WindowSpan] = []
    start = 0
    while len(pending) - start >= policy.size:
        chunk = pending[start:start + policy.size]
        spans.append(WindowSpan(chunk[0].id, chunk[-1].id, len(chunk)))
        start += policy.size
    rest = pending[start:]
    if (complete and rest and policy.max_age_seconds is not None
            and len(rest) >= policy.min_size
            and as_utc(now) - as_utc(rest[0].received_at)
            >= timedelta(seconds=policy.max_age_seconds)):
        spans.append(WindowSpan(rest[0].id, rest[-1].id, len(rest)))
    return spans


def policy_of(model: MonitoredModel) -> WindowPolicy:
    return WindowPolicy(size=model.window_size, max_age_seconds=model.window_max_age_seconds,
                        min_size=model.window_min_size)


def models_with_unwindowed_samples(session: Session) -> list[int]:
    """Ids of models that have samples past their last window (cheap: index probe per model)."""
    newer = (
        select(Sample.id)
        .where(Sample.model_id == MonitoredModel.id,
               Sample.id > MonitoredModel.windowed_through_sample_id)
        .exists()
    )
    return list(session.scalars(select(MonitoredModel.id)
                                .where(newer, MonitoredModel.deleted_at.is_(None))
                                .order_by(MonitoredModel.id)))


def full_window_waiting(session: Session, model_name: str) -> int | None:
    """The id of the named model if it has at least a window's worth of unwindowed samples.

    A read without locks (an index range of at most ``window_size`` entries), so ingest
    can ask after every batch; :func:`plan_model` then decides under the lock.
    """
    model = session.execute(
        select(MonitoredModel.id, MonitoredModel.window_size,
               MonitoredModel.windowed_through_sample_id)
        .where(MonitoredModel.name == model_name)
    ).one_or_none()
    if model is None:
        return None
    waiting = session.scalar(
        select(func.count()).select_from(
            select(Sample.id)
            .where(Sample.model_id == model.id, Sample.id > model.windowed_through_sample_id)
            .limit(model.window_size)
            .subquery()
        )
    )
    return model.id if waiting >= model.window_size else None


def lock_model(session: Session, model_id: int) -> MonitoredModel | None:
    """Lock the model row for planning, or None when another transaction holds it."""
    if is_postgres(session):
        return session.scalar(
            select(MonitoredModel).where(MonitoredModel.id == model_id)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
    # SQLite: take the database write lock now (a no-op UPDATE, which also leaves
    # updated_at alone), so that the reads below see the newest data and no other
    # planner can interleave.
    session.execute(
        text("UPDATE models SET windowed_through_sample_id = windowed_through_sample_id "
             "WHERE id = :id"), {"id": model_id},
    )
    return session.scalar(
        select(MonitoredModel).where(MonitoredModel.id == model_id)
        .execution_options(populate_existing=True)
    )


def _pending(session: Session, model: MonitoredModel, limit: int) -> list[PendingSample]:
    rows = session.execute(
        select(Sample.id, Sample.received_at)
        .where(Sample.model_id == model.id, Sample.id > model.windowed_through_sample_id)
        .order_by(Sample.id)
        .limit(limit)
    ).all()
    return [PendingSample(r.id, r.received_at) for r in rows]


def _time_bounds(session: Session, model_id: int, span: WindowSpan) -> tuple[datetime, datetime]:
    """A window's time range: the samples' own timestamps, or when they were received."""
    when = func.coalesce(Sample.timestamp, Sample.received_at)
    lo, hi = session.execute(
        select(func.min(when), func.max(when))
        .where(Sample.model_id == model_id, Sample.id >= span.first_id,
               Sample.id <= span.last_id)
    ).one()
    return as_utc(lo), as_utc(hi)


def plan_model(session: Session, model_id: int, now: datetime | None = None) -> list[int]:
    """Close the due windows of one model in the caller's transaction.

    Returns the ids of the new (pending) evaluations; the caller commits and only then
    enqueues them. An empty list when nothing is due or another planner holds the model.
    """
    now = now or datetime.now(UTC)
    model = lock_model(session, model_id)
    if model is None:
        return []
    policy = policy_of(model)
    limit = policy.size * MAX_WINDOWS_PER_PASS
    pending = _pending(session, model, limit)
    spans = close_windows(pending, policy, now, complete=len(pending) < limit)
    if not spans:
        return []
    index = model.next_window_index
    evaluations = []
    for span in spans:
        start, end = _time_bounds(session, model.id, span)
        evaluations.append(Evaluation(
            model_id=model.id, reference_id=model.reference_id, baseline_id=None,
            window_index=index, first_sample_id=span.first_id, last_sample_id=span.last_id,
            sample_count=span.count, window_start=start, window_end=end, status="pending",
            attempts=0, created_at=now,
        ))
        index += 1
    session.add_all(evaluations)
    session.execute(
        update(MonitoredModel).where(MonitoredModel.id == model.id)
        .values(next_window_index=index, windowed_through_sample_id=spans[-1].last_id,
                # updated_at tracks configuration changes, not traffic
                updated_at=MonitoredModel.updated_at)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    created = [e.id for e in evaluations]
    log.info("windows planned", extra={
        "model_id": model.id, "evaluations": created,
        "windowed_through_sample_id": spans[-1].last_id,
    })
    return created
