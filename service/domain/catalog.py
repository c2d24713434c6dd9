"""Monitored models: create, list, read, change window policy or reference."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.domain.errors import Conflict, Invalid, NotFound
from service.domain.paging import decode_cursor, page
from service.domain.schemas import (
    BaselineSummary,
    ModelCreate,
    ModelPublic,
    ModelUpdate,
    ReferenceSummary,
    WindowPolicy,
    WindowPolicyIn,
)
from service.domain.tables import AlertRule, Baseline, MonitoredModel, Reference
from service.logging import get_logger
from service.settings import Settings, get_settings

log = get_logger("collapsewatch.registry")


def _reference_or_422(session: Session, reference_id: int) -> None:
    # the id comes from the request body, so a missing row is bad input (422), not a 404
    found = session.scalar(select(Reference.id).where(Reference.id == reference_id))
    if found is None:
        raise Invalid(f"reference_id: reference {reference_id} does not exist; "
                                "create one with POST /api/v1/references")


def check_stream(session: Session, kind: str, sources: list[int] | None,
                 max_synthetic_share: float | None, reference_id: int) -> None:
    """Invalid unless a model's stream fields fit together: a ``model`` has no sources and
    no share limit; a ``stream`` names at least one source, each an existing baseline built
    against the stream's reference (the mixture compares both on that reference's LM)."""
    if kind == "model":
        if sources:
            raise Invalid("sources: only a stream has sources; send kind: \"stream\"")
        if max_synthetic_share is not None:
            raise Invalid("max_synthetic_share: only a stream has a synthetic share; "
                          "send kind: \"stream\"")
        return
    if not sources:
        raise Invalid("sources: a stream needs at least one baseline id (the generators "
                      "whose outputs may be mixed into it)")
    if len(set(sources)) != len(sources):
        raise Invalid(f"sources: baseline ids must be distinct, got {sources}")
    found = {r.id: r for r in session.execute(
        select(Baseline.id, Baseline.name, Reference.sha256)
        .join(Reference, Reference.id == Baseline.reference_id)
        .where(Baseline.id.in_(sources)))}
    for position, baseline_id in enumerate(sources):
        if baseline_id not in found:
            raise Invalid(f"sources[{position}]: baseline {baseline_id} does not exist")
    reference_sha = session.scalar(select(Reference.sha256).where(Reference.id == reference_id))
    for position, baseline_id in enumerate(sources):
        if found[baseline_id].sha256 != reference_sha:
            raise Invalid(f"sources[{position}]: baseline {baseline_id} "
                          f"({found[baseline_id].name!r}) was built against another reference "
                          f"than the stream's (reference {reference_id}); use a baseline "
                          "built against the stream's reference")


def _sync_share_rule(session: Session, model: MonitoredModel) -> None:
    """The synthetic_share alert rule follows the stream's guard: enabled with its limit
    while a stream has max_synthetic_share, disabled otherwise (a rule not created yet gets
    the same from ``alerts.default_rules`` when the engine first needs it)."""
    guarded = model.kind == "stream" and model.max_synthetic_share is not None
    rule = session.scalar(select(AlertRule).where(AlertRule.model_id == model.id,
                                                  AlertRule.kind == "synthetic_share"))
    if rule is not None:
        rule.enabled = guarded
        rule.params = {**(rule.params or {}), "max_synthetic_share": model.max_synthetic_share}


def resolve_window(change: WindowPolicyIn | None, current: WindowPolicy) -> WindowPolicy:
    """``current`` with the fields present in ``change`` replaced; min_size <= size."""
    values = current.model_dump()
    if change is not None:
        values.update({k: getattr(change, k) for k in change.model_fields_set})
        if values["size"] is None or values["min_size"] is None:
            raise Invalid("window: size and min_size cannot be null")
    limit = get_settings().max_window_size
    if values["size"] is not None and values["size"] > limit:
        # a window must score well within the worker's time limit (README: window size)
        raise Invalid(f"window.size ({values['size']}) exceeds the largest window this "
                      f"service scores ({limit}, COLLAPSEWATCH_MAX_WINDOW_SIZE)")
    if values["min_size"] > values["size"]:
        raise Invalid(f"window.min_size ({values['min_size']}) must not exceed "
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
        raise NotFound(f"model {name!r} does not exist; create it with "
                                "POST /api/v1/models")
    return model


def _reference_summaries(session: Session, ids: set[int]) -> dict[int, ReferenceSummary]:
    # only the summary columns: a reference row also carries its documents and profile
    rows = session.execute(select(Reference.id, Reference.name, Reference.version,
                                  Reference.sha256).where(Reference.id.in_(ids)))
    return {r.id: ReferenceSummary(id=r.id, name=r.name, version=r.version, sha256=r.sha256)
            for r in rows}


def _baseline_summaries(session: Session, ids: set[int]) -> dict[int, BaselineSummary]:
    if not ids:
        return {}
    rows = session.execute(select(Baseline.id, Baseline.name, Baseline.sha256, Baseline.source,
                                  Baseline.document_count, Baseline.human_ratios,
                                  Baseline.created_at).where(Baseline.id.in_(ids)))
    return {r.id: BaselineSummary(id=r.id, name=r.name, sha256=r.sha256, source=r.source,
                                  document_count=r.document_count,
                                  human_ratios=r.human_ratios or {}, created_at=r.created_at)
            for r in rows}


def baseline_status(model: MonitoredModel, has_baseline: bool) -> str:
    """"set", or "rejected" when the automatic baseline was refused by the guard (its
    windows read collapse against human; ``baseline_rejection`` says why, and later windows
    are still tried), or "collecting" while the first windows may still become the baseline,
    or "none" (the one place this is decided; /models, /health and .../baseline all say it)."""
    if has_baseline:
        return "set"
    if model.baseline_rejection:
        return "rejected"
    if model.auto_baseline_windows > 0:
        return "collecting"
    return "none"


def _public(model: MonitoredModel, references: dict[int, ReferenceSummary],
            baselines: dict[int, BaselineSummary]) -> ModelPublic:
    baseline = baselines.get(model.baseline_id) if model.baseline_id else None
    status = baseline_status(model, baseline is not None)
    return ModelPublic(
        id=model.id, name=model.name, description=model.description,
        reference=references[model.reference_id], window=_window_of(model),
        auto_baseline_windows=model.auto_baseline_windows, baseline=baseline,
        baseline_status=status,
        baseline_rejection=model.baseline_rejection if status == "rejected" else None,
        samples_ingested=model.samples_ingested,
        last_sample_at=model.last_sample_at, samples_days=model.samples_days,
        evaluations_days=model.evaluations_days, metric_series=model.metric_series,
        kind=model.kind or "model", sources=list(model.sources or []),
        max_synthetic_share=model.max_synthetic_share,
        created_at=model.created_at,
        updated_at=model.updated_at,
    )


def public_models(session: Session, models: list[MonitoredModel]) -> list[ModelPublic]:
    """Public views of ``models``: reference and baseline summaries, window policy, counters
    (two queries for the summaries, whatever the number of models)."""
    references = _reference_summaries(session, {m.reference_id for m in models})
    baselines = _baseline_summaries(session, {m.baseline_id for m in models if m.baseline_id})
    return [_public(m, references, baselines) for m in models]


def model_public(session: Session, model: MonitoredModel) -> ModelPublic:
    """The public view of one model."""
    return public_models(session, [model])[0]


def create_model(session: Session, settings: Settings, body: ModelCreate) -> ModelPublic:
    _reference_or_422(session, body.reference_id)
    check_stream(session, body.kind, body.sources, body.max_synthetic_share, body.reference_id)
    window = resolve_window(body.window, default_window(settings))
    auto = (settings.auto_baseline_windows if body.auto_baseline_windows is None
            else body.auto_baseline_windows)
    model = MonitoredModel(
        name=body.name, description=body.description, reference_id=body.reference_id,
        window_size=window.size, window_max_age_seconds=window.max_age_seconds,
        window_min_size=window.min_size, auto_baseline_windows=auto,
        samples_ingested=0, windowed_through_sample_id=0, next_window_index=0,
        samples_days=body.samples_days, evaluations_days=body.evaluations_days,
        metric_series=body.metric_series, kind=body.kind,
        sources=list(body.sources) if body.sources else None,
        max_synthetic_share=body.max_synthetic_share,
    )
    session.add(model)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"model {body.name!r} already exists; change it with "
                                f"PATCH /api/v1/models/{body.name}") from None
    log.info("model created", extra={"model": model.name, "reference_id": model.reference_id})
    return model_public(session, model)


def list_models(session: Session) -> list[ModelPublic]:
    models = list(session.scalars(select(MonitoredModel)
                                  .where(MonitoredModel.deleted_at.is_(None))
                                  .order_by(MonitoredModel.name)))
    return public_models(session, models)


def page_models(session: Session, limit: int, cursor: str | None = None,
                only: str | None = None) -> tuple[list[ModelPublic], str | None]:
    """One page of models by name (``only``: that model alone, for a key limited to it)."""
    after = decode_cursor(cursor, (str,))
    stmt = select(MonitoredModel).where(MonitoredModel.deleted_at.is_(None))
    if only is not None:
        stmt = stmt.where(MonitoredModel.name == only)
    if after is not None:
        stmt = stmt.where(MonitoredModel.name > after[0])
    rows = list(session.scalars(stmt.order_by(MonitoredModel.name).limit(limit + 1)))
    rows, next_cursor = page(rows, limit, lambda m: (m.name,))
    return public_models(session, rows), next_cursor


def update_model(session: Session, name: str, body: ModelUpdate) -> ModelPublic:
    """Apply the fields present in ``body``. Switching the reference clears the baseline
    (it was profiled against the old reference); windows already planned keep theirs."""
    model = get_model(session, name)
    fields = body.model_fields_set
    if "description" in fields:
        model.description = body.description
    if "window" in fields:
        if body.window is None:
            raise Invalid("window: send the fields to change, not null")
        window = resolve_window(body.window, _window_of(model))
        model.window_size = window.size
        model.window_max_age_seconds = window.max_age_seconds
        model.window_min_size = window.min_size
    for key in ("samples_days", "evaluations_days", "metric_series"):
        if key in fields:  # null puts the model back on the global default
            setattr(model, key, getattr(body, key))
    if "auto_baseline_windows" in fields:
        if body.auto_baseline_windows is None:
            raise Invalid("auto_baseline_windows: send a number (0 disables)")
        model.auto_baseline_windows = body.auto_baseline_windows
    if "reference_id" in fields:
        if body.reference_id is None:
            raise Invalid("reference_id: a model always has a reference")
        if body.reference_id != model.reference_id:
            _reference_or_422(session, body.reference_id)
            log.info("model reference switched", extra={
                "model": model.name, "old_reference_id": model.reference_id,
                "new_reference_id": body.reference_id, "cleared_baseline_id": model.baseline_id,
            })
            model.reference_id = body.reference_id
            model.baseline_id = None
    if fields & {"kind", "sources", "max_synthetic_share", "reference_id"}:
        if "kind" in fields:
            if body.kind is None:
                raise Invalid("kind: send \"model\" or \"stream\"")
            model.kind = body.kind
        if "sources" in fields:
            model.sources = list(body.sources) if body.sources else None
        if "max_synthetic_share" in fields:  # null removes the guard
            model.max_synthetic_share = body.max_synthetic_share
        # the resulting model must fit together (a new reference must suit the sources)
        check_stream(session, model.kind or "model", model.sources,
                     model.max_synthetic_share, model.reference_id)
        _sync_share_rule(session, model)
    session.commit()
    return model_public(session, model)
