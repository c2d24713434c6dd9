"""Route: ``GET /metrics`` for Prometheus (no redirect, text or OpenMetrics format, gzip
when the scraper accepts it — Prometheus always does)."""

from __future__ import annotations

import gzip

from fastapi import APIRouter, Request, Response
from prometheus_client.exposition import choose_encoder

from service.api.deps import MetricsAccess, SettingsDep
from service.domain.db import session_factory
from service.exporter.prometheus import exposition

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, dependencies=[MetricsAccess],
            summary="Prometheus metrics: latest scores of every model, read from the database")
def metrics(request: Request, settings: SettingsDep) -> Response:
    url = settings.resolved_database_url
    # prometheus_client negotiates the content type; the body is written by the exporter
    _, content_type = choose_encoder(request.headers.get("accept", ""))
    headers = {"Vary": "Accept-Encoding"}
    compress = None
    if accepts_gzip(request.headers.get("accept-encoding", "")):
        # the text format compresses ~10x; level 5 costs a few ms for a thousand models
        compress = _gzip
        headers["Content-Encoding"] = "gzip"
    # encoded once per snapshot and form: scrapes within the cache ttl cost no exposition
    body = exposition(session_factory(url), url, settings.metrics_cache_seconds,
                      settings.metrics_per_metric_series,
                      content_type.startswith("application/openmetrics-text"),
                      f"{content_type}|{'gzip' if compress else 'identity'}", compress)
    return Response(content=body, media_type=content_type, headers=headers)


def _gzip(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=5)


def accepts_gzip(header: str) -> bool:
    """Does an Accept-Encoding header allow gzip (RFC 9110 12.5.3; ``q=0`` refuses)?"""
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False
