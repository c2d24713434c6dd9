"""Monitored models: create, list, read, change window policy or reference."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.api.errors import ProblemError
from service.logging import get_logger
from service.models import Baseline, MonitoredModel, Reference
from service.schemas import (
    BaselineSummary,
    ModelCreate,
    ModelPublic,
    ModelUpdate,
    ReferenceSummary,
    WindowPolicy,
    WindowPolicyIn,
)
from service.settings import Settings

log = get_logger("collapsewatch.registry")


def _reference_or_422(session: Session, reference_id: int) -> Reference:
    # the id comes from the request body, so a missing row is bad input (422), not a 404
    ref = session.get(Reference, reference_id)
    if ref is None:
        raise ProblemError(422, f"reference_id: reference {reference_id} does not exist; "
                                "create one with POST /api/v1/references")
    return ref


def resolve_window(change: WindowPolicyIn | None, current: WindowPolicy) -> WindowPolicy:
    """``current`` with the fields present in ``change`` replaced; min_size <= size."""
    values = current.model_dump()
    if change is not None:
        values.update({k: getattr(change, k) for k in change.model_fields_set})
        if values["size"] is None or values["min_size"] is None:
            raise ProblemError(422, "window: size and min_size cannot be null")
    if values["min_size"] > values["size"]:
        raise ProblemError(422, f"window.min_size ({values['min_size']}) must not exceed "
                                f"window.size ({values['size']})")
    return WindowPolicy(**values)


def default_window(settings: Settings) -> WindowPolicy:
    return WindowPolicy(size=settings.default_window_size,
                        max_age_seconds=settings.default_window_max_age_seconds,
                        min_size=settings.default_window_min_size)


def _window_of(model: MonitoredModel) -> WindowPolicy:
    return WindowPolicy(size=model.window_size, max_age_seconds=model.window_max_age_seconds,
                        min_size=model.window_min_size)


def get_model(session: Session, name: str) -> MonitoredModel:
    model = session.scalar(select(MonitoredModel).where(MonitoredModel.name == name))
    if model is None:
        raise ProblemError(404, f"model {name!r} does not exist; create it with "
                                "POST /api/v1/models")
    return model


def model_public(session: Session, model: MonitoredModel) -> ModelPublic:
    """The public view: reference and baseline summaries, window policy, counters."""
    ref = session.get(Reference, model.reference_id)
    baseline = session.get(Baseline, model.baseline_id) if model.baseline_id else None
    if baseline is not None:
        status = "set"
    elif model.auto_baseline_windows > 0:
        status = "collecting"
    else:
        status = "none"
    return ModelPublic(
        id=model.id, name=model.name, description=model.description,
        reference=ReferenceSummary(id=ref.id, name=ref.name, version=ref.version,
                                   sha256=ref.sha256),
        window=_window_of(model), auto_baseline_windows=model.auto_baseline_windows,
        baseline=None if baseline is None else BaselineSummary(
            id=baseline.id, name=baseline.name, sha256=baseline.sha256,
            source=baseline.source, document_count=baseline.document_count,
            human_ratios=baseline.human_ratios or {}, created_at=baseline.created_at),
        baseline_status=status, samples_ingested=model.samples_ingested,
        last_sample_at=model.last_sample_at, created_at=model.created_at,
        updated_at=model.updated_at,
    )


def create_model(session: Session, settings: Settings, body: ModelCreate) -> ModelPublic:
    _reference_or_422(session, body.reference_id)
    window = resolve_window(body.window, default_window(settings))
    auto = (settings.auto_baseline_windows if body.auto_baseline_windows is None
            else body.auto_baseline_windows)
    model = MonitoredModel(
        name=body.name, description=body.description, reference_id=body.reference_id,
        window_size=window.size, window_max_age_seconds=window.max_age_seconds,
        window_min_size=window.min_size, auto_baseline_windows=auto,
        samples_ingested=0, windowed_through_sample_id=0, next_window_index=0,
    )
    session.add(model)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ProblemError(409, f"model {body.name!r} already exists; change it with "
                                f"PATCH /api/v1/models/{body.name}") from None
    log.info("model created", extra={"model": model.name, "reference_id": model.reference_id})
    return model_public(session, model)


def list_models(session: Session) -> list[ModelPublic]:
    models = session.scalars(select(MonitoredModel).order_by(MonitoredModel.name))
    return [model_public(session, m) for m in models]


def update_model(session: Session, name: str, body: ModelUpdate) -> ModelPublic:
    """Apply the fields present in ``body``. Switching the reference clears the baseline
    (it was profiled against the old reference); windows already planned keep theirs."""
    model = get_model(session, name)
    fields = body.model_fields_set
    if "description" in fields:
        model.description = body.description
    if "window" in fields:
        if body.window is None:
            raise ProblemError(422, "window: send the fields to change, not null")
        window = resolve_window(body.window, _window_of(model))
        model.window_size = window.size
        model.window_max_age_seconds = window.max_age_seconds
        model.window_min_size = window.min_size
    if "auto_baseline_windows" in fields:
        if body.auto_baseline_windows is None:
            raise ProblemError(422, "auto_baseline_windows: send a number (0 disables)")
        model.auto_baseline_windows = body.auto_baseline_windows
    if "reference_id" in fields:
        if body.reference_id is None:
            raise ProblemError(422, "reference_id: a model always has a reference")
        if body.reference_id != model.reference_id:
            _reference_or_422(session, body.reference_id)
            log.info("model reference switched", extra={
                "model": model.name, "old_reference_id": model.reference_id,
                "new_reference_id": body.reference_id, "cleared_baseline_id": model.baseline_id,
            })
            model.reference_id = body.reference_id
            model.baseline_id = None
    session.commit()
    return model_public(session, model)
