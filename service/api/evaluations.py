"""Routes: a model's evaluations (scored windows) and its current health."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.api.deps import ReadPrincipal, SessionDep
from service.api.errors import ProblemError
from service.domain.baselines import baseline_state
from service.domain.catalog import get_model
from service.domain.clock import as_utc_or_none
from service.domain.tables import Evaluation, MonitoredModel, Reference

router = APIRouter(tags=["evaluations"])

STATUSES = ("done", "failed", "pending", "running")


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


@router.get("/models/{name}/evaluations",
            summary="Scored windows of a model, newest first (Score JSON each)")
def list_evaluations(
    name: str,
    _: ReadPrincipal,
    session: SessionDep,
    since: Annotated[datetime | None, Query(description="windows ending at or after this")] = None,
    until: Annotated[datetime | None, Query(description="windows ending at or before this")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status: Annotated[Literal["done", "failed", "pending", "running", "all"],
                      Query(description="which windows: scored ones (done) by default")] = "done",
) -> dict[str, list[dict[str, Any]]]:
    model = get_model(session, name)
    since, until = as_utc_or_none(since), as_utc_or_none(until)
    if since and until and since > until:
        raise ProblemError(422, f"since ({since.isoformat()}) is after until "
                                f"({until.isoformat()})")
    stmt = select(Evaluation).where(Evaluation.model_id == model.id)
    if status != "all":
        stmt = stmt.where(Evaluation.status == status)
    if since is not None:
        stmt = stmt.where(Evaluation.window_end >= since)
    if until is not None:
        stmt = stmt.where(Evaluation.window_end <= until)
    rows = session.scalars(stmt.order_by(Evaluation.window_end.desc(), Evaluation.id.desc())
                           .limit(limit))
    return {"evaluations": [evaluation_json(session, e) for e in rows]}


def _pending_count(session: Session, model: MonitoredModel) -> int:
    return session.scalar(
        select(func.count()).select_from(Evaluation)
        .where(Evaluation.model_id == model.id,
               Evaluation.status.in_(("pending", "running")))
    ) or 0


@router.get("/models/{name}/health",
            summary="The latest Score JSON of a model (insufficient_data before the first)")
def model_health(name: str, _: ReadPrincipal, session: SessionDep) -> dict[str, Any]:
    model = get_model(session, name)
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
    if state["status"] == "collecting":
        body["baseline_collection"] = {
            "auto_baseline_windows": state["auto_baseline_windows"],
            "windows_closed": state["windows_closed"],
        }
    body["evaluations_pending"] = _pending_count(session, model)
    body["samples_ingested"] = model.samples_ingested
    return body
