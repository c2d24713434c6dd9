"""Route: the OTLP/HTTP trace receiver, ``POST /v1/traces`` (GenAI and OpenInference spans).

Speaks OTLP/HTTP as an OpenTelemetry exporter or Collector expects (opentelemetry-proto,
``docs/specification.md``): the response has the request's encoding (protobuf or JSON); a
request that cannot be decoded gets 400 with a ``google.rpc.Status`` body, not problem+json;
spans that could not be stored are reported in ``partial_success``. The key is the usual
``Authorization: Bearer <ingest key>`` (the Collector's ``otlphttp`` exporter sends it from
its ``headers`` setting).
"""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import IngestPrincipal, SettingsDep
from service.api.errors import ProblemError
from service.domain.db import session_scope
from service.domain.ingest import TraceIngestResult, ingest_spans
from service.logging import get_logger
from service.settings import Settings

router = APIRouter(tags=["traces"])
log = get_logger("collapsewatch.otlp")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# google.rpc.Code numbers (googleapis google/rpc/code.proto)
INVALID_ARGUMENT = 3
RESOURCE_EXHAUSTED = 8


def _status(status: int, code: int, message: str, as_json: bool) -> Response:
    from collectors.otlp import encode_status

    return Response(encode_status(code, message, as_json), status_code=status,
                    media_type=JSON if as_json else PROTOBUF)


def _store(settings: Settings, principal, body: bytes, content_type: str | None,
           content_encoding: str | None) -> TraceIngestResult | Response:
    from collectors import otlp

    as_json = (content_type or "").split(";", 1)[0].strip().lower() == JSON
    try:
        request = otlp.parse_request(body, content_type, content_encoding,
                                     max_bytes=settings.max_body_bytes)
    except otlp.UnsupportedMediaType as exc:
        return _status(415, INVALID_ARGUMENT, str(exc), as_json)
    except otlp.OtlpTooLarge as exc:
        return _status(413, RESOURCE_EXHAUSTED, f"{exc} (COLLAPSEWATCH_MAX_BODY_BYTES); "
                       "lower the exporter's batch size", as_json)
    except otlp.OtlpDecodeError as exc:
        return _status(400, INVALID_ARGUMENT, str(exc), as_json)
    with session_scope() as session:
        return ingest_spans(session, settings, request,
                            allowed=lambda name: principal.allows("ingest", name))


@router.post(
    "/v1/traces", summary="OTLP/HTTP trace export (GenAI and OpenInference LLM spans)",
    response_class=Response,
    responses={200: {"description": "ExportTraceServiceResponse, in the request's encoding"},
               400: {"description": "google.rpc.Status: the body cannot be decoded"}},
)
async def post_traces(request: Request, principal: IngestPrincipal, settings: SettingsDep,
                      background: BackgroundTasks) -> Response:
    """Each LLM span becomes a sample of the monitored model its model name maps to
    (`COLLAPSEWATCH_OTLP_MODEL_RULES`); other spans are skipped. Sample id: trace id and
    span id, so a re-sent batch is stored once."""
    try:
        import collectors.otlp  # noqa: F401  (opentelemetry-proto, the otel extra)
    except ImportError:
        raise ProblemError(501, "this server cannot decode OTLP: install the otel extra "
                           "(pip install 'collapsewatch[otel]')") from None
    body = await request.body()
    content_type = request.headers.get("content-type")
    as_json = (content_type or "").split(";", 1)[0].strip().lower() == JSON
    # decoding and the database both block: off the event loop
    outcome = await run_in_threadpool(_store, settings, principal, body, content_type,
                                      request.headers.get("content-encoding"))
    if isinstance(outcome, Response):
        return outcome
    from collectors.otlp import encode_response

    log.info("traces received", extra={
        "accepted": outcome.accepted, "duplicates": outcome.duplicates,
        "skipped_spans": outcome.skipped, "rejected_spans": outcome.rejected_spans,
        "unknown_models": dict(outcome.unknown_models.most_common(10))})
    if settings.plan_on_ingest and outcome.models:
        from service.dispatch import plan_after_ingest

        for name in outcome.models:
            background.add_task(plan_after_ingest, name)
    return Response(encode_response(outcome.rejected_spans, outcome.message(), as_json),
                    media_type=JSON if as_json else PROTOBUF)
