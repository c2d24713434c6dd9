"""POST /v1/traces on a real API process: the OpenTelemetry SDK's OTLP/HTTP exporter, a recorded
Collector payload, and bad input (OTLP error shapes)."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collectors import otlp
from tests.collectors.harness import ApiServer, create_model, stored
from tests.support import REPO

FIXTURE = REPO / "tests" / "fixtures" / "otlp_collector_traces.json"
PROTOBUF = {"content-type": "application/x-protobuf"}


def spans_of(*shapes: dict) -> list:
    """Finished SDK spans, one per shape: {"name", "attributes", "events": [(name, attrs)]}."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    for shape in shapes:
        with tracer.start_as_current_span(shape.get("name", "llm"),
                                          attributes=shape.get("attributes", {})) as span:
            for name, attributes in shape.get("events", []):
                span.add_event(name, attributes)
    provider.shutdown()
    return list(memory.get_finished_spans())


def span_id(span) -> str:
    ctx = span.get_span_context()
    return f"{ctx.trace_id:032x}-{ctx.span_id:016x}"


CONVENTIONS = [
    {"name": "chat gpt-4o", "attributes": {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
            {"type": "text", "content": "Where is my parcel?"}]}]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
            {"type": "text", "content": "It is in the depot."}], "finish_reason": "stop"}])}},
    {"name": "openai.chat", "attributes": {
        "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Name a bird.",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "A wren."}},
    {"name": "chat", "attributes": {"gen_ai.operation.name": "chat",
                                    "gen_ai.request.model": "gpt-4o"},
     "events": [("gen_ai.choice", {"index": 0, "message.content": "Choice event text."})]},
    {"name": "ChatOpenAI", "attributes": {
        "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "OpenInference messages."}},
    {"name": "llm", "attributes": {"openinference.span.kind": "LLM", "llm.model_name": "local-7b",
                                   "collapsewatch.model": "chat-v3",
                                   "output.value": "OpenInference output value."}},
    {"name": "GET /health", "attributes": {"http.request.method": "GET"}},
]


@pytest.fixture
def api(service_env, tmp_path):
    """The API process with span model names mapped onto the monitored model chat-v3."""
    env = {**service_env, "COLLAPSEWATCH_MAX_BODY_BYTES": "200000",
           "COLLAPSEWATCH_OTLP_MODEL_RULES": "gpt-4o*=chat-v3, @collapsewatch.model"}
    server = ApiServer(env, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def exporter(api: ApiServer, key: str) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=f"{api.url}/v1/traces", compression=Compression.Gzip,
                            headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_sdk_exporter_spans_of_each_convention_become_samples_and_a_resend_is_stored_once(
        api, database_url):
    key = create_model("chat-v3")
    spans = spans_of(*CONVENTIONS)
    sender = exporter(api, key)
    assert sender.export(spans) == SpanExportResult.SUCCESS
    rows = stored(database_url, "chat-v3")
    assert {r[0]: r[1] for r in rows} == {
        span_id(spans[0]): "It is in the depot.",
        span_id(spans[1]): "A wren.",
        span_id(spans[2]): "Choice event text.",
        span_id(spans[3]): "OpenInference messages.",
        span_id(spans[4]): "OpenInference output value.",
    }
    assert rows[0][2]["otel.model"] == "gpt-4o-2024-08-06"
    assert rows[0][2]["service.name"] == "support-bot"
    # the exporter retries a batch whose answer it lost: stored once
    assert sender.export(spans) == SpanExportResult.SUCCESS
    assert len(stored(database_url, "chat-v3")) == 5
    sender.shutdown()
    health = httpx.get(f"{api.url}/api/v1/models/chat-v3").json()  # loopback: open reads
    assert health["samples_ingested"] == 5


def test_recorded_collector_payload_in_json_and_protobuf(api, database_url):
    key = create_model("chat-v3")
    auth = {"Authorization": f"Bearer {key}"}
    body = FIXTURE.read_bytes()
    answer = httpx.post(f"{api.url}/v1/traces", content=body,
                        headers={**auth, "content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {}  # no partial success: every LLM span was stored
    rows = stored(database_url, "chat-v3")
    assert sorted((r[0], r[1]) for r in rows) == [
        ("0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", "Yes, until the label is printed."),
        ("5b8efff798038103d269b633813fc60c-eee19b7ec3c1b175",
         "The parcel leaves the warehouse on Monday morning."),
    ]
    # the same payload as the Collector's default protobuf encoding, gzip: duplicates only
    protobuf = otlp.parse_request(body, "application/json").SerializeToString()
    again = httpx.post(f"{api.url}/v1/traces", content=gzip.compress(protobuf),
                       headers={**auth, **PROTOBUF, "content-encoding": "gzip"})
    assert again.status_code == 200
    assert again.headers["content-type"] == "application/x-protobuf"
    assert not ExportTraceServiceResponse.FromString(again.content).HasField("partial_success")
    assert len(stored(database_url, "chat-v3")) == 2


def test_unknown_models_are_counted_in_partial_success_and_dropped(api, database_url):
    key = create_model("chat-v3")
    from service.domain.db import session_scope
    from service.domain.keys import create_key

    with session_scope() as session:
        unlimited = create_key(session, "ingest")
    spans = spans_of(CONVENTIONS[0], {"attributes": {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-9",
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
            {"type": "text", "content": "no such model"}]}])}})
    body = encode_spans(spans).SerializeToString()
    answer = httpx.post(f"{api.url}/v1/traces", content=body,
                        headers={"Authorization": f"Bearer {unlimited}", **PROTOBUF})
    assert answer.status_code == 200
    partial = ExportTraceServiceResponse.FromString(answer.content).partial_success
    assert partial.rejected_spans == 1
    assert "'claude-9' (1)" in partial.error_message
    assert [r[1] for r in stored(database_url, "chat-v3")] == ["It is in the depot."]
    # a key limited to chat-v3 cannot write to another model through traces either
    create_model("other")
    other = spans_of({"attributes": {"openinference.span.kind": "LLM", "llm.model_name": "other",
                                     "output.value": "not for this key"}})
    answer = httpx.post(f"{api.url}/v1/traces", headers={"Authorization": f"Bearer {key}",
                                                         **PROTOBUF},
                        content=encode_spans(other).SerializeToString())
    partial = ExportTraceServiceResponse.FromString(answer.content).partial_success
    assert partial.rejected_spans == 1 and "may not write to model 'other'" in \
        partial.error_message
    assert stored(database_url, "other") == []
    # one completion over COLLAPSEWATCH_MAX_TEXT_CHARS is rejected; its neighbour is stored
    long_and_short = spans_of(
        {"attributes": {"openinference.span.kind": "LLM", "llm.model_name": "chat-v3",
                        "output.value": "x" * 100_001}},
        {"attributes": {"openinference.span.kind": "LLM", "llm.model_name": "chat-v3",
                        "output.value": "short enough"}})
    answer = httpx.post(f"{api.url}/v1/traces", headers={"Authorization": f"Bearer {key}",
                                                         **PROTOBUF},
                        content=encode_spans(long_and_short).SerializeToString())
    partial = ExportTraceServiceResponse.FromString(answer.content).partial_success
    assert partial.rejected_spans == 1 and "over 100000 characters" in partial.error_message
    assert [r[1] for r in stored(database_url, "chat-v3")] == ["It is in the depot.",
                                                               "short enough"]


def test_bad_requests_get_the_otlp_error_shape(api, database_url):
    key = create_model("chat-v3")
    auth = {"Authorization": f"Bearer {key}"}
    url = f"{api.url}/v1/traces"
    bad = httpx.post(url, content=b"\x0a\xff\xff\xff\xff\x0fjunk", headers={**auth, **PROTOBUF})
    assert bad.status_code == 400
    status = status_pb2.Status.FromString(bad.content)
    assert status.code == 3 and "protobuf" in status.message
    bad_json = httpx.post(url, content=b"{oops", headers={**auth,
                                                          "content-type": "application/json"})
    assert bad_json.status_code == 400
    assert bad_json.json()["code"] == 3 and "not JSON" in bad_json.json()["message"]
    assert httpx.post(url, content=b"x", headers={**auth, "content-type": "text/plain"}
                      ).status_code == 415
    # over COLLAPSEWATCH_MAX_BODY_BYTES once decompressed (a small gzip bomb), and as sent
    bomb = httpx.post(url, content=gzip.compress(b"\n" * 1_000_000),
                      headers={**auth, **PROTOBUF, "content-encoding": "gzip"})
    assert bomb.status_code == 413
    assert "limit" in status_pb2.Status.FromString(bomb.content).message
    assert httpx.post(url, content=b"\0" * 300_000, headers={**auth, **PROTOBUF}
                      ).status_code == 413
    assert httpx.post(url, content=b"", headers=PROTOBUF).status_code == 401
    assert httpx.post(url, content=b"", headers={"Authorization": "Bearer cw_wrong",
                                                 **PROTOBUF}).status_code == 401
    # an empty request is a valid export of nothing
    empty = httpx.post(url, content=b"", headers={**auth, **PROTOBUF})
    assert empty.status_code == 200 and empty.content == b""
    assert stored(database_url, "chat-v3") == []


def test_auto_create_models_makes_a_model_for_an_unknown_name(service_env, tmp_path,
                                                             database_url):
    create_model("chat-v3")  # also stores the reference "ref-chat-v3"
    from service.domain.db import session_scope
    from service.domain.keys import create_key

    with session_scope() as session:
        key = create_key(session, "ingest")
    env = {**service_env, "COLLAPSEWATCH_AUTO_CREATE_MODELS": "1",
           "COLLAPSEWATCH_AUTO_CREATE_REFERENCE": "ref-chat-v3"}
    server = ApiServer(env, tmp_path)
    server.start()
    try:
        spans = spans_of({"attributes": {"openinference.span.kind": "LLM",
                                         "llm.model_name": "mistral-small",
                                         "output.value": "auto created"}})
        assert exporter(server, key).export(spans) == SpanExportResult.SUCCESS
        model = httpx.get(f"{server.url}/api/v1/models/mistral-small")
        assert model.status_code == 200 and model.json()["samples_ingested"] == 1
    finally:
        server.stop()
    assert [r[1] for r in stored(database_url, "mistral-small")] == ["auto created"]
