"""Model baselines: a frozen profile of the model's own outputs from a known-good time.

A baseline comes from uploaded documents, from an uploaded profile file built offline
(``collapsewatch baseline build``), from the model's stored samples in a time range, or
automatically from the model's first K windows (``auto_baseline_windows``, default 3; more
windows are taken when K windows hold fewer documents than a profile needs). Every change
of a model's baseline is a row in ``baseline_pins`` (who, when, old and new sha256).
Evaluations store the baseline they were scored with, so re-pinning never rewrites history.

The baseline guard (docs/early-warning.md, "Baseline guard"): a baseline is what the model is
judged against from then on, so a collapsed one would make collapse read ``healthy``. The
automatic baseline is refused when one of its windows reads ``collapse`` against human, or
when its pooled profile's ratios to human cross the same ``collapse`` thresholds
(:func:`collapse_against_human`); the model is then ``rejected`` with the reason, a
``baseline_rejected`` warning fires, and the next K windows are tried. A deliberate pin of
such a profile needs ``accept_collapsed``, which ``baseline_pins`` records.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from service.domain.baseline_schemas import BaselineRequest
from service.domain.catalog import baseline_status
from service.domain.clock import as_utc_or_none, utcnow
from service.domain.db import is_postgres
from service.domain.errors import Conflict, Invalid
from service.domain.event_alerts import BASELINE_REJECTED, fire_event, resolve_event
from service.domain.profiles import configured_embedder, reference_profile
from service.domain.references import documents_for_profile
from service.domain.tables import (
    Baseline,
    BaselinePin,
    Evaluation,
    MonitoredModel,
    Reference,
    Sample,
)
from service.logging import get_logger
from service.settings import Settings

log = get_logger("collapsewatch.baselines")

AUTO_ACTOR = "auto"


# ---------------------------------------------------------------- the guard's rule


def collapse_thresholds() -> tuple[float, float]:
    """(diversity ratio at or below which, sameness ratio at or above which) a profile reads
    collapse against human: the product's own single-window ``collapse`` rule
    (``metrics.ScoreConfig``), the one place the guard takes its floor from."""
    import metrics

    cfg = metrics.ScoreConfig()
    return cfg.collapse_diversity_ratio, cfg.collapse_sameness_ratio


def collapse_against_human(human_ratios: dict[str, Any] | None) -> str | None:
    """Why a baseline profile reads ``collapse`` against human, or None.

    ``human_ratios`` are the pooled profile's signal ratios to the human reference (band
    means at a window of min(500, documents), ``metrics.build_baseline``). They average a
    whole baseline, so their own error is small next to the thresholds (a profile of fresh
    human text reads 1.00 +- 0.03, docs/early-warning.md); the size rule alone is the test.
    A profile without ratios (none stored) is not judged.
    """
    diversity_floor, sameness_ceiling = collapse_thresholds()
    ratios = human_ratios or {}
    found = []
    diversity, sameness = ratios.get("diversity"), ratios.get("sameness")
    if diversity is not None and diversity <= diversity_floor:
        found.append(f"diversity {diversity:.2f}x human (collapse at <= {diversity_floor})")
    if sameness is not None and sameness >= sameness_ceiling:
        found.append(f"sameness {sameness:.2f}x human (collapse at >= {sameness_ceiling})")
    return "; ".join(found) or None


# ---------------------------------------------------------------- building profiles


def check_document_count(count: int, model_name: str, settings: Settings) -> None:
    if count < settings.min_reference_documents:
        raise Invalid(
            f"a baseline for model {model_name!r} needs at least "
            f"{settings.min_reference_documents} non-blank documents, got {count}; send more "
            "documents or widen the time range",
            needed=settings.min_reference_documents, got=count,
        )
    if count > settings.max_reference_documents:
        raise Invalid(
            f"a baseline for model {model_name!r} takes at most "
            f"{settings.max_reference_documents} documents, got {count} "
            "(COLLAPSEWATCH_MAX_REFERENCE_DOCUMENTS); send fewer or narrow the time range",
        )


def build_profile(session: Session, model: MonitoredModel, documents: Sequence[str],
                  name: str, settings: Settings) -> Any:
    """``metrics.build_baseline`` against the model's current reference; 422 on bad input."""
    import metrics

    docs = documents_for_profile(documents)
    check_document_count(len(docs), model.name, settings)
    reference = reference_profile(session, model.reference_id)
    try:
        return metrics.build_baseline(docs, reference, name, embedder=configured_embedder()[0])
    except metrics.ReferenceTooSmall as exc:
        raise Invalid(f"baseline for model {model.name!r}: {exc}") from None
    except metrics.MetricsError as exc:
        raise Invalid(f"cannot build a baseline for model {model.name!r}: {exc}") from None


def profile_from_upload(session: Session, model: MonitoredModel, data: bytes) -> Any:
    """A baseline profile file built offline; it must match the model's reference."""
    import metrics

    try:
        profile = metrics.Profile.from_bytes(data)
    except metrics.MetricsError as exc:
        raise Invalid(f"profile: not a readable collapsewatch profile ({exc}); "
                                "build one with `collapsewatch baseline build`") from None
    if profile.kind != "baseline":
        raise Invalid(f"profile: {profile.name!r} is a {profile.kind} profile, not a "
                                "baseline; build one with `collapsewatch baseline build`")
    ref = session.get(Reference, model.reference_id)
    if profile.reference_sha256 != ref.sha256:
        raise Invalid(
            f"profile: baseline {profile.name!r} was built against reference sha256 "
            f"{profile.reference_sha256}, but model {model.name!r} uses reference "
            f"{ref.name!r} v{ref.version} (sha256 {ref.sha256}); rebuild it with that "
            "reference",
            expected_reference_sha256=ref.sha256,
            got_reference_sha256=profile.reference_sha256,
        )
    return profile


@dataclass(frozen=True)
class RangeDocuments:
    texts: list[str]
    first_id: int
    last_id: int


def sample_time():
    """The time of a sample: its own timestamp, or when it was received."""
    return func.coalesce(Sample.timestamp, Sample.received_at)


def iter_range_samples(session: Session, model_id: int, start: datetime, end: datetime,
                       chunk_rows: int) -> Iterator[tuple[int, str]]:
    """(id, text) of the model's samples in [start, end], in id order, read ``chunk_rows`` at
    a time (keyset pages on the primary key): a range of a million samples never sits in
    one result set."""
    after = 0
    while True:
        rows = session.execute(
            select(Sample.id, Sample.text)
            .where(Sample.model_id == model_id, Sample.id > after,
                   sample_time() >= start, sample_time() <= end)
            .order_by(Sample.id)
            .limit(chunk_rows)
        ).all()
        for row in rows:
            yield row.id, row.text
        if len(rows) < chunk_rows:
            return
        after = rows[-1].id


def documents_in_range(session: Session, model: MonitoredModel, start: datetime,
                       end: datetime, settings: Settings) -> RangeDocuments:
    """The samples of a time range as baseline documents, streamed from the database in
    chunks and normalised as they arrive (only the normalised text is kept); more than
    ``max_reference_documents`` stops the read at once."""
    if start > end:
        raise Invalid(f"from ({start.isoformat()}) is after to ({end.isoformat()})")
    texts: list[str] = []
    first_id = last_id = None
    chunk: list[str] = []
    rows = iter_range_samples(session, model.id, start, end, settings.baseline_range_chunk_rows)
    for count, (sample_id, text_) in enumerate(rows, 1):
        if count > settings.max_reference_documents:
            check_document_count(count, model.name, settings)  # raises: too many
        first_id = sample_id if first_id is None else first_id
        last_id = sample_id
        chunk.append(text_)
        if len(chunk) >= settings.baseline_range_chunk_rows:
            texts += documents_for_profile(chunk)
            chunk = []
    texts += documents_for_profile(chunk)
    if first_id is None or last_id is None:
        raise Invalid(
            f"model {model.name!r} has no samples between {start.isoformat()} and "
            f"{end.isoformat()}; pick a range that holds stored samples "
            "(see GET /api/v1/models/{name}/evaluations for window times)",
        )
    check_document_count(len(texts), model.name, settings)
    return RangeDocuments(texts, first_id, last_id)


# ---------------------------------------------------------------- pinning


def lock_model_row(session: Session, model_id: int) -> MonitoredModel | None:
    """Lock the model row until commit (PostgreSQL row lock; SQLite write lock)."""
    if not is_postgres(session):
        session.execute(text("UPDATE models SET baseline_id = baseline_id WHERE id = :id"),
                        {"id": model_id})
        return session.scalar(select(MonitoredModel).where(MonitoredModel.id == model_id)
                              .execution_options(populate_existing=True))
    return session.scalar(select(MonitoredModel).where(MonitoredModel.id == model_id)
                          .with_for_update().execution_options(populate_existing=True))


class AlreadyPinned(Exception):
    """The model has a baseline and the caller did not ask to replace it."""


def pin_profile(
    session: Session, model_id: int, profile: Any, *, source: str, actor: str | None,
    reason: str | None = None, replace: bool = False, range_from: datetime | None = None,
    range_to: datetime | None = None, last_sample_id: int | None = None,
    only_if_unset: bool = False, accept_collapsed: bool = False,
) -> Baseline | None:
    """Store ``profile`` as a baseline and make it the model's current one, recording the
    change. The caller commits. Raises AlreadyPinned when the model has a baseline and
    ``replace`` is false; returns None when ``only_if_unset`` and one appeared meanwhile.
    A pin ends a refused automatic baseline: the rejection is cleared and its
    ``baseline_rejected`` alert resolved (delivered by the outbox sweep).
    ``accept_collapsed`` is recorded on the pin (the admin pinned a profile that reads
    collapse against human on purpose)."""
    model = lock_model_row(session, model_id)
    if model is None:
        raise LookupError(f"model {model_id} does not exist")
    old = session.get(Baseline, model.baseline_id) if model.baseline_id else None
    if old is not None and only_if_unset:
        return None
    if old is not None and not replace:
        raise AlreadyPinned(old.sha256)
    row = Baseline(
        model_id=model.id, reference_id=model.reference_id, name=profile.name,
        sha256=profile.sha256, source=source, range_from=range_from, range_to=range_to,
        document_count=profile.document_count, token_count=profile.token_count,
        profile=profile.to_bytes(), human_ratios=dict(profile.human_ratios or {}),
        last_sample_id=last_sample_id, created_by=actor,
    )
    session.add(row)
    session.flush()
    session.add(BaselinePin(
        model_id=model.id, old_baseline_id=old.id if old else None, new_baseline_id=row.id,
        old_sha256=old.sha256 if old else None, new_sha256=row.sha256, actor=actor,
        reason=reason, accept_collapsed=accept_collapsed,
    ))
    session.execute(update(MonitoredModel).where(MonitoredModel.id == model.id)
                    .values(baseline_id=row.id, baseline_rejection=None,
                            baseline_rejected_at=None)
                    .execution_options(synchronize_session=False))
    resolve_event(session, model.id, model.name, BASELINE_REJECTED,
                  f"baseline {row.name!r} pinned by {actor}")
    log.info("baseline pinned", extra={
        "model": model.name, "baseline_id": row.id, "sha256": row.sha256, "source": source,
        "old_sha256": old.sha256 if old else None, "actor": actor,
        "documents": row.document_count, "accept_collapsed": accept_collapsed,
    })
    return row


def default_name(session: Session, model: MonitoredModel) -> str:
    count = session.scalar(select(func.count()).select_from(Baseline)
                           .where(Baseline.model_id == model.id))
    return f"{model.name}-baseline-{(count or 0) + 1}"


# ---------------------------------------------------------------- automatic baseline


def auto_baseline_windows(session: Session, model: MonitoredModel,
                          settings: Settings) -> list[Evaluation] | None:
    """The windows that make the automatic baseline: the first K, extended until they hold
    enough documents for a profile. After a refused candidate, the first K closed after the
    refusal (``baseline_rejected_at``). None while not enough windows are closed."""
    want = model.auto_baseline_windows
    if want <= 0:
        return None
    stmt = select(Evaluation).where(Evaluation.model_id == model.id)
    if model.baseline_rejected_at is not None:
        stmt = stmt.where(Evaluation.created_at > model.baseline_rejected_at)
    rows = session.scalars(stmt.order_by(Evaluation.window_index, Evaluation.id))
    chosen: list[Evaluation] = []
    seen: set[int] = set()
    documents = 0
    for evaluation in rows:
        if evaluation.window_index in seen:
            continue  # the same window scored against another reference
        seen.add(evaluation.window_index)
        chosen.append(evaluation)
        documents += evaluation.sample_count
        if len(chosen) >= want and documents >= settings.min_reference_documents:
            return chosen
    return None


def baseline_collecting(model: MonitoredModel) -> bool:
    return model.auto_baseline_windows > 0 and model.baseline_id is None


@dataclass
class _Candidate:
    """One candidate window: its texts and, when it was already scored against human with
    the model's reference, the health it read (else None: the guard scores it)."""

    window_index: int
    texts: list[str]
    health: str | None
    signals: dict[str, Any]


def _stored_verdict(evaluation: Evaluation, reference_id: int) -> tuple[str | None, dict]:
    """The window's own verdict against human, if it was scored without a baseline and with
    the model's current reference (``window_health``: the verdict before the trend
    detector, which never raises a window to collapse anyway)."""
    if (evaluation.status != "done" or evaluation.baseline_id is not None
            or evaluation.reference_id != reference_id or not evaluation.result):
        return None, {}
    result = evaluation.result
    return (result.get("window_health") or evaluation.health), result.get("signals") or {}


def _signal_text(signals: dict[str, Any]) -> str:
    parts = []
    for name in ("diversity", "sameness"):
        ratio = (signals.get(name) or {}).get("ratio")
        if ratio is not None:
            parts.append(f"{name} {ratio:.2f}x human")
    return ", ".join(parts)


def guard_candidate(candidates: Sequence[_Candidate], reference: Any) -> tuple[str | None, dict]:
    """(reason, details) when a candidate window reads ``collapse`` against human, else
    (None, {}). Windows not scored yet (the last one usually: the candidate is taken as a
    worker starts scoring it) are scored here against human, as the window itself will be."""
    import metrics

    collapsed = []
    for c in candidates:
        health, signals = c.health, c.signals
        if health is None:
            try:
                result = metrics.score(c.texts, reference, None, with_evidence=False)
            except metrics.MetricsError:
                continue  # the window's own scoring fails and says why; the pooled check stays
            health, signals = result["health"], result.get("signals") or {}
        if health == "collapse":
            collapsed.append({"window_index": c.window_index, "signals": {
                name: (signals.get(name) or {}).get("ratio") for name in metrics.SIGNALS}})
            c.signals = signals
    if not collapsed:
        return None, {}
    first = next(c for c in candidates if c.window_index == collapsed[0]["window_index"])
    indexes = ", ".join(str(w["window_index"]) for w in collapsed)
    reason = (f"{len(collapsed)} of the {len(candidates)} candidate windows "
              f"(window {indexes}) read collapse against human "
              f"(window {first.window_index}: {_signal_text(first.signals)})")
    return reason, {"collapsed_windows": collapsed}


def ensure_auto_baseline(model_id: int, settings: Settings, session_maker) -> Baseline | None:
    """Build and pin the automatic baseline if it is due and its windows are closed, unless
    the guard refuses the candidate (then the model is ``rejected``; see the module doc).

    Runs in a worker. The profile is built outside any lock (it takes a while); pinning or
    refusing re-checks under the model lock, so two workers racing here pin one baseline
    and refuse a candidate once.
    """
    import metrics

    with session_maker() as session:
        model = session.get(MonitoredModel, model_id)
        if model is None or not baseline_collecting(model):
            return None
        windows = auto_baseline_windows(session, model, settings)
        if windows is None:
            return None
        reference_id = model.reference_id
        candidates: list[_Candidate] = []
        for w in windows:
            health, signals = _stored_verdict(w, reference_id)
            candidates.append(_Candidate(w.window_index, list(session.scalars(
                select(Sample.text).where(Sample.model_id == model.id,
                                          Sample.id >= w.first_sample_id,
                                          Sample.id <= w.last_sample_id)
                .order_by(Sample.id))), health, signals))
        name = default_name(session, model)
        try:
            reference = reference_profile(session, reference_id)
        except LookupError:
            return None
        first = min((w.window_start for w in windows if w.window_start), default=None)
        last = max((w.window_end for w in windows if w.window_end), default=None)
        last_sample_id = max(w.last_sample_id for w in windows)
        rejected_at = model.baseline_rejected_at
        model_name = model.name
        session.rollback()
    profile = None
    reason, details = guard_candidate(candidates, reference)
    if reason is None:
        texts = [t for c in candidates for t in c.texts]
        try:
            profile = metrics.build_baseline(documents_for_profile(texts), reference, name,
                                             embedder=configured_embedder()[0])
        except metrics.MetricsError as exc:
            # e.g. too many empty outputs: more windows will be taken once they close
            log.warning("automatic baseline not built yet", extra={
                "model": model_name, "windows": len(windows), "error": str(exc)})
            return None
        pooled = collapse_against_human(profile.human_ratios)
        if pooled is not None:
            reason = f"the candidate's pooled profile reads collapse against human: {pooled}"
            details = {"human_ratios": dict(profile.human_ratios or {})}
    with session_maker() as session, session.begin():
        model = lock_model_row(session, model_id)
        if model is None or model.reference_id != reference_id:
            return None  # the reference was switched meanwhile; the next window retries
        if model.baseline_id is not None or as_utc_or_none(
                model.baseline_rejected_at) != as_utc_or_none(rejected_at):
            return None  # another worker pinned or refused this candidate meanwhile
        if reason is not None:
            _reject(session, model, candidates, reason, details)
            return None
        return pin_profile(
            session, model_id, profile, source="auto", actor=AUTO_ACTOR,
            reason=f"first {len(windows)} windows", range_from=first, range_to=last,
            last_sample_id=last_sample_id, only_if_unset=True,
        )


def _reject(session: Session, model: MonitoredModel, candidates: Sequence[_Candidate],
            reason: str, details: dict[str, Any]) -> None:
    """Refuse the candidate: store why, and fire (or keep firing) ``baseline_rejected``. The
    model stays judged against human; the next K windows closed from now are tried next."""
    windows = [c.window_index for c in candidates]
    text_ = (f"automatic baseline refused: {reason}; the model is judged against human "
             f"until the next {len(candidates)} windows read no collapse (or an admin pins a "
             "baseline)")
    model.baseline_rejection = text_
    model.baseline_rejected_at = utcnow()
    session.flush()
    summary = f"model '{model.name}': {text_}"
    fire_event(session, model, BASELINE_REJECTED, summary,
               {"windows": windows, "reason": reason, **details})
    log.warning("automatic baseline refused", extra={
        "model": model.name, "windows": windows, "reason": reason})


# ---------------------------------------------------------------- views


def baseline_public(session: Session, row: Baseline) -> dict[str, Any]:
    ref = session.get(Reference, row.reference_id)
    return {
        "id": row.id, "name": row.name, "sha256": row.sha256, "source": row.source,
        "document_count": row.document_count, "token_count": row.token_count,
        "human_ratios": row.human_ratios or {},
        "reference": {"id": ref.id, "name": ref.name, "version": ref.version,
                      "sha256": ref.sha256} if ref else None,
        "range_from": as_utc_or_none(row.range_from), "range_to": as_utc_or_none(row.range_to),
        "created_by": row.created_by, "created_at": as_utc_or_none(row.created_at),
    }


def pin_public(pin: BaselinePin) -> dict[str, Any]:
    return {
        "old_baseline_id": pin.old_baseline_id, "new_baseline_id": pin.new_baseline_id,
        "old_sha256": pin.old_sha256, "new_sha256": pin.new_sha256, "actor": pin.actor,
        "reason": pin.reason, "accept_collapsed": bool(pin.accept_collapsed),
        "created_at": as_utc_or_none(pin.created_at),
    }


def baseline_state(session: Session, model: MonitoredModel) -> dict[str, Any]:
    """What /health and GET .../baseline say about the model's baseline."""
    current = session.get(Baseline, model.baseline_id) if model.baseline_id else None
    state = baseline_status(model, current is not None)
    windows = session.scalar(
        select(func.count(func.distinct(Evaluation.window_index)))
        .where(Evaluation.model_id == model.id)
    ) or 0
    return {
        "status": state,
        "baseline_rejection": model.baseline_rejection if state == "rejected" else None,
        "baseline_rejected_at": (as_utc_or_none(model.baseline_rejected_at)
                                 if state == "rejected" else None),
        "baseline": baseline_public(session, current) if current else None,
        "auto_baseline_windows": model.auto_baseline_windows,
        "windows_closed": windows,
    }


def baseline_history(session: Session, model: MonitoredModel, limit: int = 50) -> list[dict]:
    pins = session.scalars(select(BaselinePin).where(BaselinePin.model_id == model.id)
                           .order_by(BaselinePin.id.desc()).limit(limit))
    return [pin_public(p) for p in pins]


def baseline_view(session: Session, model: MonitoredModel) -> dict[str, Any]:
    """What GET .../baseline answers: status, current baseline and the pin history."""
    return {"model": model.name, **baseline_state(session, model),
            "history": baseline_history(session, model)}


def refuse_if_pinned(session: Session, model: MonitoredModel, replace: bool) -> None:
    """Re-pinning is explicit: a model with a baseline keeps it unless ``replace``."""
    if model.baseline_id is not None and not replace:
        current = session.get(Baseline, model.baseline_id)
        raise _already_pinned(model.name, current.sha256 if current else "?")


def _already_pinned(model_name: str, sha256: str) -> Conflict:
    return Conflict(f"model {model_name!r} already has a baseline (sha256 {sha256}); "
                    "send \"replace\": true to re-pin it (the change is recorded)")


def create_baseline(session: Session, settings: Settings, model: MonitoredModel,
                    req: BaselineRequest, actor: str) -> dict[str, Any]:
    """Build (or read) the profile from ``req``, pin it and commit; the new baseline view."""
    kwargs: dict[str, Any] = {}
    if req.profile is not None:
        profile = profile_from_upload(session, model, req.profile)
        source = "upload"
    else:
        name = req.name or default_name(session, model)
        if req.documents is not None:
            documents, source = req.documents, "upload"
        else:
            found = documents_in_range(session, model, req.start, req.end, settings)
            documents, source = found.texts, "range"
            kwargs = {"range_from": req.start, "range_to": req.end,
                      "last_sample_id": found.last_id}
        profile = build_profile(session, model, documents, name, settings)
    collapsed = collapse_against_human(profile.human_ratios)
    if collapsed is not None and not req.accept_collapsed:
        raise Invalid(
            f"baseline {profile.name!r} for model {model.name!r} reads collapse against human "
            f"({collapsed}); judged against it, collapsed output would read healthy. Send "
            "\"accept_collapsed\": true to pin it on purpose (recorded on the pin)",
            human_ratios=dict(profile.human_ratios or {}),
        )
    if collapsed is not None:
        log.warning("collapsed baseline accepted", extra={
            "model": model.name, "actor": actor, "reason": collapsed})
    try:
        pin_profile(session, model.id, profile, source=source, actor=actor,
                    reason=req.reason, replace=req.replace,
                    accept_collapsed=collapsed is not None, **kwargs)
    except AlreadyPinned as exc:
        session.rollback()
        raise _already_pinned(model.name, str(exc)) from None
    session.commit()
    session.refresh(model)
    return baseline_view(session, model)
