"""Retention: what is kept how long, deletion in bounded batches, and model deletion.

Per model (``models.samples_days`` / ``models.evaluations_days``, null = the global
``retention_*`` settings):

* sample texts older than ``samples_days`` (by ``received_at``) go once their window is
  planned and no longer waiting to be scored: a window's scores and a baseline's profile
  are self-contained, so old samples are not needed again;
* evaluations (and their scores) whose window ended more than ``evaluations_days`` ago go,
  except the model's newest finished one (``/health`` and ``/metrics`` keep answering);
* resolved alerts and delivered or given-up notifications older than
  ``retention_alerts_days`` go (an alert takes its notifications with it);
* a deleted model (``DELETE /models/{name}`` sets ``deleted_at`` and frees the name at once)
  is purged: its samples and evaluations in batches, then the row with what hangs off it.

Why batches and not time partitions: every statement here deletes at most
``retention_batch_rows`` rows through an index (``(model_id, received_at)`` on samples,
``(model_id, window_end)`` on evaluations) in its own short transaction, so ingest, which
locks only its model row and appends, never waits more than one batch. Partitions would make
a day's deletion one cheap ``DROP``, but need PostgreSQL-only DDL, a partition key in every
unique constraint (samples are unique by ``(model_id, client_id)``, not by day) and a job
that creates partitions ahead of time; SQLite has none. Measured in ``benchmarks/fleet.py``
(retention section): a batch of 5,000 samples deletes in tens of milliseconds on PostgreSQL,
so the reaper keeps up with far more than a fleet's daily intake per pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session

from service.domain.clock import utcnow
from service.domain.errors import Conflict, NotFound
from service.domain.tables import (
    Alert,
    Baseline,
    Evaluation,
    ModelStats,
    MonitoredModel,
    Notification,
    Reference,
    Sample,
    Score,
)
from service.logging import get_logger
from service.settings import Settings

log = get_logger("collapsewatch.retention")

CATEGORIES = ("samples", "evaluations", "alerts", "notifications", "deleted_models")


@dataclass
class RetentionReport:
    """Rows deleted (or, for a dry run, that would be deleted) per category."""

    dry_run: bool
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    # a pass stops after its batch budget; the rest goes in the next pass
    complete: bool = True

    def as_dict(self) -> dict[str, object]:
        return {"dry_run": self.dry_run, "complete": self.complete, **self.rows}


# ---------------------------------------------------------------------------- what goes


def samples_cutoff(model: MonitoredModel, settings: Settings, now: datetime) -> datetime:
    days = model.samples_days if model.samples_days is not None else settings.retention_samples_days
    return now - timedelta(days=days)


def evaluations_cutoff(model: MonitoredModel, settings: Settings, now: datetime) -> datetime:
    days = (model.evaluations_days if model.evaluations_days is not None
            else settings.retention_evaluations_days)
    return now - timedelta(days=days)


def _sample_id_ceiling(session: Session, model: MonitoredModel) -> int:
    """Samples up to this id may go: planned into a window that is not waiting to be scored."""
    unfinished = session.scalar(
        select(func.min(Evaluation.first_sample_id))
        .where(Evaluation.model_id == model.id, Evaluation.status.in_(("pending", "running"))))
    ceiling = model.windowed_through_sample_id or 0
    if unfinished is not None:
        ceiling = min(ceiling, unfinished - 1)
    return ceiling


def _old_samples(session: Session, model: MonitoredModel, settings: Settings,
                 now: datetime) -> Select:
    return select(Sample.id).where(
        Sample.model_id == model.id,
        Sample.received_at < samples_cutoff(model, settings, now),
        Sample.id <= _sample_id_ceiling(session, model))


def _old_evaluations(session: Session, model: MonitoredModel, settings: Settings,
                     now: datetime) -> Select:
    keep = session.scalar(select(ModelStats.latest_evaluation_id)
                          .where(ModelStats.model_id == model.id))
    stmt = select(Evaluation.id).where(
        Evaluation.model_id == model.id,
        Evaluation.window_end < evaluations_cutoff(model, settings, now),
        Evaluation.status.in_(("done", "failed")))
    if keep is not None:
        stmt = stmt.where(Evaluation.id != keep)
    return stmt


def _old_alerts(settings: Settings, now: datetime) -> Select:
    cutoff = now - timedelta(days=settings.retention_alerts_days)
    return select(Alert.id).where(Alert.state == "resolved", Alert.resolved_at < cutoff)


def _old_notifications(settings: Settings, now: datetime) -> Select:
    cutoff = now - timedelta(days=settings.retention_alerts_days)
    return select(Notification.id).where(Notification.status.in_(("sent", "dead")),
                                         Notification.created_at < cutoff)


def _count(session: Session, ids: Select) -> int:
    return int(session.scalar(select(func.count()).select_from(ids.subquery())) or 0)


# ---------------------------------------------------------------------------- deleting


class _Budget:
    def __init__(self, batches: int) -> None:
        self.left = batches

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def _delete_in_batches(session_maker: Callable[[], Session], table, ids_of: Callable[[Session],
                       Select], batch: int, budget: _Budget, before_delete=None) -> tuple[int, bool]:
    """Delete the rows ``ids_of`` selects, ``batch`` at a time, one transaction each.
    Returns (rows deleted, finished). Only batches that delete something count against the
    budget: finding nothing is one index probe, and a fleet of quiet models must not use up
    a pass before it reaches the models that have something to delete."""
    total = 0
    while True:
        if budget.left <= 0:
            return total, False
        with session_maker() as session, session.begin():
            ids = list(session.scalars(ids_of(session).order_by(table.c.id).limit(batch)))
            if ids:
                budget.take()
                if before_delete is not None:
                    before_delete(session, ids)
                session.execute(delete(table).where(table.c.id.in_(ids))
                                .execution_options(synchronize_session=False))
        total += len(ids)
        if len(ids) < batch:
            return total, True


def _delete_scores(session: Session, evaluation_ids: list[int]) -> None:
    # explicitly, not by ON DELETE CASCADE: the batch stays a bounded number of statements
    # and does not depend on SQLite's foreign_keys pragma
    session.execute(delete(Score).where(Score.evaluation_id.in_(evaluation_ids))
                    .execution_options(synchronize_session=False))


def _live_models(session: Session) -> list[MonitoredModel]:
    return list(session.scalars(select(MonitoredModel).where(MonitoredModel.deleted_at.is_(None))
                                .order_by(MonitoredModel.id)))


def _deleted_models(session: Session) -> list[MonitoredModel]:
    return list(session.scalars(select(MonitoredModel)
                                .where(MonitoredModel.deleted_at.is_not(None))
                                .order_by(MonitoredModel.id)))


def dry_run(session: Session, settings: Settings, now: datetime | None = None) -> RetentionReport:
    """What a retention pass would delete now (nothing is changed)."""
    now = now or utcnow()
    report = RetentionReport(dry_run=True)
    for model in _live_models(session):
        report.rows["samples"] += _count(session, _old_samples(session, model, settings, now))
        report.rows["evaluations"] += _count(session,
                                             _old_evaluations(session, model, settings, now))
    report.rows["alerts"] = _count(session, _old_alerts(settings, now))
    report.rows["notifications"] = _count(session, _old_notifications(settings, now))
    report.rows["deleted_models"] = len(_deleted_models(session))
    return report


def run(session_maker: Callable[[], Session], settings: Settings, now: datetime | None = None,
        max_batches: int | None = None) -> RetentionReport:
    """Delete what retention says, in bounded batches; stop after ``max_batches`` batches
    (default ``settings.retention_max_batches``) and leave the rest for the next pass."""
    now = now or utcnow()
    batch = max(1, settings.retention_batch_rows)
    # an evaluation carries a few dozen score rows: smaller batches keep a statement bounded
    eval_batch = max(1, batch // 50)
    budget = _Budget(max_batches if max_batches is not None else settings.retention_max_batches)
    report = RetentionReport(dry_run=False)
    rows = report.rows

    def step(category: str, result: tuple[int, bool]) -> bool:
        rows[category] += result[0]
        if not result[1]:
            report.complete = False
        return result[1]

    with session_maker() as session:
        live = _live_models(session)
        deleted = [m.id for m in _deleted_models(session)]
        session.expunge_all()

    for model in live:
        if not step("samples", _delete_in_batches(
                session_maker, Sample.__table__,
                lambda s, m=model: _old_samples(s, _fresh(s, m), settings, now), batch, budget)):
            break
        if not step("evaluations", _delete_in_batches(
                session_maker, Evaluation.__table__,
                lambda s, m=model: _old_evaluations(s, _fresh(s, m), settings, now),
                eval_batch, budget, _delete_scores)):
            break
    if report.complete:
        step("alerts", _delete_in_batches(
            session_maker, Alert.__table__, lambda s: _old_alerts(settings, now), batch, budget,
            lambda s, ids: s.execute(delete(Notification).where(Notification.alert_id.in_(ids))
                                     .execution_options(synchronize_session=False))))
    if report.complete:
        step("notifications", _delete_in_batches(
            session_maker, Notification.__table__, lambda s: _old_notifications(settings, now),
            batch, budget))
    for model_id in deleted if report.complete else []:
        if not purge_model(session_maker, model_id, batch, budget):
            report.complete = False
            break
        rows["deleted_models"] += 1
    if any(rows.values()):
        log.info("retention pass", extra=report.as_dict())
    return report


def _fresh(session: Session, model: MonitoredModel) -> MonitoredModel:
    """The model as stored now (windowed_through moves while the pass runs)."""
    return session.get(MonitoredModel, model.id) or model


def purge_model(session_maker: Callable[[], Session], model_id: int, batch: int,
                budget: _Budget) -> bool:
    """Delete a soft-deleted model's rows in batches, then the model; True when gone."""
    _, done = _delete_in_batches(session_maker, Sample.__table__,
                                 lambda s: select(Sample.id).where(Sample.model_id == model_id),
                                 batch, budget)
    if not done:
        return False
    _, done = _delete_in_batches(
        session_maker, Evaluation.__table__,
        lambda s: select(Evaluation.id).where(Evaluation.model_id == model_id),
        max(1, batch // 50), budget, _delete_scores)
    if not done or not budget.take():  # the final delete counts as a batch
        return False
    with session_maker() as session, session.begin():
        alert_ids = select(Alert.id).where(Alert.model_id == model_id).scalar_subquery()
        session.execute(delete(Notification).where(Notification.alert_id.in_(alert_ids)))
        session.execute(delete(Alert).where(Alert.model_id == model_id))
        # baselines point at the model and the model at its baseline (no FK that way)
        session.execute(update(MonitoredModel).where(MonitoredModel.id == model_id)
                        .values(baseline_id=None))
        model = session.get(MonitoredModel, model_id)
        if model is not None:
            session.delete(model)
    log.info("deleted model purged", extra={"model_id": model_id})
    return True


# ---------------------------------------------------------------------------- deletes


def delete_model(session: Session, name: str, now: datetime | None = None) -> None:
    """Soft-delete: the model disappears for every reader and writer at once and its name is
    free again; the reaper purges its rows in batches. Commits."""
    model = session.scalar(select(MonitoredModel).where(MonitoredModel.name == name,
                                                        MonitoredModel.deleted_at.is_(None))
                           .with_for_update())
    if model is None:
        raise NotFound(f"model {name!r} does not exist; list them with GET /api/v1/models")
    model.deleted_at = now or utcnow()
    # names match ^[A-Za-z0-9][A-Za-z0-9._-]*$, so a name with ':' can never collide
    model.name = f"deleted:{model.id}:{name}"[:200]
    session.commit()
    log.info("model deleted", extra={"model": name, "model_id": model.id})


def delete_reference(session: Session, reference_id: int) -> None:
    """Delete a reference nothing uses; 409 (Conflict) while a model, a baseline or a stored
    evaluation still refers to it. Commits."""
    ref = session.get(Reference, reference_id)
    if ref is None:
        raise NotFound(f"reference {reference_id} does not exist; "
                       "list them with GET /api/v1/references")
    users = list(session.scalars(select(MonitoredModel.name)
                                 .where(MonitoredModel.reference_id == reference_id,
                                        MonitoredModel.deleted_at.is_(None))
                                 .order_by(MonitoredModel.name).limit(5)))
    if users:
        raise Conflict(f"reference {reference_id} is in use by model(s) {', '.join(users)}; "
                       "switch them to another reference (PATCH /api/v1/models/{name}) or "
                       "delete them first")
    held = (session.scalar(select(func.count()).select_from(
                select(Evaluation.id).where(Evaluation.reference_id == reference_id)
                .limit(1).subquery()))
            or session.scalar(select(func.count()).select_from(
                select(Baseline.id).where(Baseline.reference_id == reference_id)
                .limit(1).subquery()))
            or session.scalar(select(func.count()).select_from(
                select(MonitoredModel.id).where(MonitoredModel.reference_id == reference_id)
                .limit(1).subquery())))
    if held:
        raise Conflict(f"reference {reference_id} is still referred to by stored evaluations "
                       "or baselines (of a deleted model being purged, or kept by retention); "
                       "try again after they are gone")
    session.delete(ref)
    session.commit()
    log.info("reference deleted", extra={"reference_id": reference_id})
