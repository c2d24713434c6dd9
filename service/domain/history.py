"""Reading stored evaluations: a model's scored windows and its current health.

The stored Score JSON is returned as it was stored, plus the window's identity, so the REST
answer for a window is the same JSON ``collapsewatch score`` prints for it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from service.domain.baselines import baseline_state
from service.domain.catalog import get_model
from service.domain.clock import as_utc_or_none
from service.domain.errors import Invalid, NotFound
from service.domain.paging import decode_cursor, page
from service.domain.tables import Evaluation, MonitoredModel, Reference


def _reference_json(session: Session, reference_id: int) -> dict[str, Any] | None:
    ref = session.get(Reference, reference_id)
    return None if ref is None else {"name": ref.name, "sha256": ref.sha256}


def evaluation_json(session: Session, evaluation: Evaluation) -> dict[str, Any]:
    """The stored Score JSON plus the window's identity; a window that is not scored yet
    (or failed) carries the same keys with ``health`` null and empty signals."""
    if evaluation.result:
        body = dict(evaluation.result)
    else:
        body = {"reference": _reference_json(session, evaluation.reference_id),
                "baseline": None, "documents": evaluation.sample_count, "tokens": None,
                "health": None, "signals": {}, "metrics": {}}
    body.update({
        "id": evaluation.id,
        "window_index": evaluation.window_index,
        "window_start": as_utc_or_none(evaluation.window_start),
        "window_end": as_utc_or_none(evaluation.window_end),
        "created_at": as_utc_or_none(evaluation.created_at),
        "finished_at": as_utc_or_none(evaluation.finished_at),
        "status": evaluation.status,
        "sample_count": evaluation.sample_count,
        "first_sample_id": evaluation.first_sample_id,
        "last_sample_id": evaluation.last_sample_id,
        "duration_seconds": evaluation.duration_seconds,
        "error": evaluation.error,
    })
    return body


def list_evaluations(session: Session, model_name: str, *, since: datetime | None = None,
                     until: datetime | None = None, limit: int = 100,
                     status: str = "done", cursor: str | None = None) -> dict[str, Any]:
    """Windows of a model, newest first; ``status`` "all" for every state; ``cursor`` from
    the previous page's ``next_cursor``."""
    after = decode_cursor(cursor, (datetime, int))
    model = get_model(session, model_name)
    since, until = as_utc_or_none(since), as_utc_or_none(until)
    if since and until and since > until:
        raise Invalid(f"since ({since.isoformat()}) is after until ({until.isoformat()})")
    stmt = select(Evaluation).where(Evaluation.model_id == model.id)
    if status != "all":
        stmt = stmt.where(Evaluation.status == status)
    if since is not None:
        stmt = stmt.where(Evaluation.window_end >= since)
    if until is not None:
        stmt = stmt.where(Evaluation.window_end <= until)
    if after is not None:
        stmt = stmt.where(tuple_(Evaluation.window_end, Evaluation.id) < after)
    rows = list(session.scalars(stmt.order_by(Evaluation.window_end.desc(),
                                              Evaluation.id.desc()).limit(limit + 1)))
    rows, next_cursor = page(rows, limit, lambda e: (as_utc_or_none(e.window_end), e.id))
    return {"evaluations": [evaluation_json(session, e) for e in rows],
            "next_cursor": next_cursor}


# the most windows `vanished_for_windows` looks back over: each one is a stored Score JSON
# read for its evidence, and a term gone for longer is already gone for this many
MAX_VANISHED_WINDOWS = 50


def vanished_for_windows(evidences: list[dict[str, Any] | None], windows: int) -> dict[str, Any]:
    """Terms listed as vanished in each of the last ``windows`` windows.

    ``evidences``: the ``evidence`` of a model's scored windows, newest first (the window
    asked about first). Only the first ``windows`` are read; a window without evidence
    (scored before evidence existed) lists nothing, so no term is gone across it. Terms
    keep the newest window's order (most surprising absence first) with its expected and
    observed counts. With fewer windows than asked for, ``terms`` is empty: a term cannot
    have been gone for three windows of a model that has two. O(total listed terms).
    """
    if windows < 1:
        raise Invalid(f"vanished_windows must be at least 1, not {windows}")
    recent = evidences[:windows]
    out: dict[str, Any] = {"windows": windows, "available": len(recent), "terms": []}
    if len(recent) < windows:
        return out
    lists = [e.get("vanished") if isinstance(e, dict) else None for e in recent]
    if not all(isinstance(lst, list) for lst in lists):
        return out
    common = set.intersection(*({v.get("term") for v in lst if isinstance(v, dict)}
                                for lst in lists))
    out["terms"] = [dict(v) for v in lists[0]
                    if isinstance(v, dict) and v.get("term") in common]
    return out


def get_evaluation(session: Session, model_name: str, evaluation_id: int, *,
                   vanished_windows: int = 3) -> dict[str, Any]:
    """One window of a model (any state), with its evidence; NotFound for another model's.

    A scored window also carries ``vanished_for_windows``: the vanished terms of this
    window that every one of the model's ``vanished_windows`` scored windows up to and
    including it lists too (computed at read time, see :func:`vanished_for_windows`)."""
    if not 1 <= vanished_windows <= MAX_VANISHED_WINDOWS:
        raise Invalid(f"vanished_windows must be between 1 and {MAX_VANISHED_WINDOWS}, "
                      f"not {vanished_windows}")
    model = get_model(session, model_name)
    evaluation = session.get(Evaluation, evaluation_id)
    if evaluation is None or evaluation.model_id != model.id:
        raise NotFound(f"model {model_name!r} has no evaluation {evaluation_id}")
    body = evaluation_json(session, evaluation)
    if evaluation.status == "done":
        results = session.scalars(
            select(Evaluation.result)
            .where(Evaluation.model_id == model.id, Evaluation.status == "done",
                   Evaluation.window_index <= evaluation.window_index)
            .order_by(Evaluation.window_index.desc(), Evaluation.id.desc())
            .limit(vanished_windows)
        ).all()
        body["vanished_for_windows"] = vanished_for_windows(
            [r.get("evidence") if isinstance(r, dict) else None for r in results],
            vanished_windows)
    return body


def _pending_count(session: Session, model: MonitoredModel) -> int:
    return session.scalar(
        select(func.count()).select_from(Evaluation)
        .where(Evaluation.model_id == model.id,
               Evaluation.status.in_(("pending", "running")))
    ) or 0


def model_health(session: Session, model_name: str) -> dict[str, Any]:
    """The latest scored window of a model with its baseline and pipeline state."""
    model = get_model(session, model_name)
    latest = session.scalars(
        select(Evaluation)
        .where(Evaluation.model_id == model.id, Evaluation.status == "done")
        .order_by(Evaluation.window_index.desc(), Evaluation.id.desc())
        .limit(1)
    ).first()
    if latest is not None:
        body = evaluation_json(session, latest)
    else:
        body = {"reference": _reference_json(session, model.reference_id), "baseline": None,
                "documents": 0, "tokens": 0, "health": "insufficient_data", "signals": {},
                "metrics": {}, "id": None, "window_start": None, "window_end": None,
                "created_at": None}
    state = baseline_state(session, model)
    body["model"] = model.name
    body["baseline_status"] = state["status"]
    if state["status"] == "rejected":
        body["baseline_rejection"] = state["baseline_rejection"]
    if state["status"] == "collecting":
        body["baseline_collection"] = {
            "auto_baseline_windows": state["auto_baseline_windows"],
            "windows_closed": state["windows_closed"],
        }
    body["evaluations_pending"] = _pending_count(session, model)
    body["samples_ingested"] = model.samples_ingested
    return body


def without_quoted_text(body: dict[str, Any]) -> dict[str, Any]:
    """A Score JSON (or an evaluation list) with the evidence's quoted sample texts removed
    (duplicate-group examples, typical documents); n-grams and vanished terms stay. For
    readers without a key, and for every reader when EVIDENCE_TEXT is off."""
    from metrics.evidence import without_text

    def one(score: dict[str, Any]) -> dict[str, Any]:
        evidence = score.get("evidence")
        if not isinstance(evidence, dict) or "duplicates" not in evidence:
            return score
        return {**score, "evidence": without_text(evidence)}

    if isinstance(body.get("evaluations"), list):
        return {**body, "evaluations": [one(e) for e in body["evaluations"]]}
    return one(body)
