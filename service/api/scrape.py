"""Route: ``GET /metrics`` for Prometheus (no redirect, text or OpenMetrics format)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client.exposition import choose_encoder

from service.api.deps import MetricsAccess, SettingsDep
from service.domain.db import session_factory
from service.exporter.prometheus import build_registry

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, dependencies=[MetricsAccess],
            summary="Prometheus metrics: latest scores of every model, read from the database")
def metrics(request: Request, settings: SettingsDep) -> Response:
    url = settings.resolved_database_url
    registry = build_registry(session_factory(url), url, settings.metrics_cache_seconds)
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(content=encoder(registry), media_type=content_type)
