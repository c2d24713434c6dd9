"""Routes: batched sample ingest (idempotent by sample id)."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks

from service.api.deps import IngestPrincipal, SessionDep, SettingsDep, check_model_access
from service.domain.ingest import ingest_samples
from service.domain.schemas import IngestResult, SampleBatch

router = APIRouter(tags=["samples"])


@router.post("/models/{name}/samples", status_code=202, response_model=IngestResult,
             summary="Ingest a batch of model outputs")
def post_samples(name: str, batch: SampleBatch, principal: IngestPrincipal,
                 session: SessionDep, settings: SettingsDep,
                 background: BackgroundTasks) -> IngestResult:
    """Stores the batch; a sample whose `id` is already stored for this model (or repeated
    in the batch) is counted in `duplicates` and not stored again, so retries are safe.
    A batch that completes a window gets it planned and sent for scoring right after the
    response."""
    check_model_access(principal, "ingest", name)
    result = ingest_samples(session, settings, name, batch.samples)
    if result.accepted and settings.plan_on_ingest:
        from service.dispatch import plan_after_ingest

        background.add_task(plan_after_ingest, name)
    return result
