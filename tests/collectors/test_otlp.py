"""OTLP trace decoding: spans made by the real opentelemetry-sdk, encoded as its exporter does."""

from __future__ import annotations

import gzip
import json

import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collectors import otlp


def make_spans(*shapes: dict) -> list:
    """Finished SDK spans, one per shape: {"name", "attributes", "events": [(name, attrs)]}."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "chat-api"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    for shape in shapes:
        with tracer.start_as_current_span(shape.get("name", "span"),
                                          attributes=shape.get("attributes", {})) as span:
            for name, attributes in shape.get("events", []):
                span.add_event(name, attributes)
    provider.shutdown()
    return exporter.get_finished_spans()


def protobuf_body(spans) -> bytes:
    return encode_spans(spans).SerializeToString()


def otlp_json(spans) -> bytes:
    """OTLP/JSON as the spec writes it: lowerCamelCase, hex ids, int64 as strings."""
    data = json_format.MessageToDict(encode_spans(spans))
    for resource_spans in data["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = __import__("base64").b64decode(span[key]).hex()
    return json.dumps(data).encode()


GENAI = {"name": "chat gpt-4o", "attributes": {
    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.input.messages": json.dumps([
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "When does it ship?"}]}]),
    "gen_ai.output.messages": json.dumps([
        {"role": "assistant", "finish_reason": "stop",
         "parts": [{"type": "text", "content": "It ships on Monday."}]}]),
}}


def test_genai_output_messages_span_becomes_one_sample_with_trace_and_span_id():
    spans = make_spans(GENAI)
    result = otlp.decode(protobuf_body(spans))
    assert (result.spans, result.llm_spans, result.skipped, result.rejected) == (1, 1, 0, 0)
    [sample] = result.samples
    ctx = spans[0].get_span_context()
    assert sample.id == f"{ctx.trace_id:032x}-{ctx.span_id:016x}"
    assert sample.text == "It ships on Monday."
    assert sample.prompt == "When does it ship?"
    assert sample.timestamp == pytest.approx(spans[0].end_time / 1e9)
    assert sample.models == ("gpt-4o-2024-08-06", "gpt-4o")  # response model first
    assert sample.attributes["service.name"] == "chat-api"
    assert sample.attributes["otel.convention"] == "gen_ai.output.messages"


def test_json_encoding_with_hex_ids_decodes_like_protobuf():
    spans = make_spans(GENAI)
    from_protobuf = otlp.decode(protobuf_body(spans)).samples
    from_json = otlp.decode(otlp_json(spans), "application/json; charset=utf-8").samples
    assert from_json == from_protobuf
    # int64 timestamps may also come as JSON numbers
    data = json.loads(otlp_json(spans))
    span = data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["endTimeUnixNano"] = int(span["endTimeUnixNano"])
    span["unknownFutureField"] = {"x": 1}  # receivers ignore unknown fields
    assert otlp.decode(json.dumps(data).encode(), "application/json").samples == from_protobuf


def test_gzip_bodies_decode_and_a_gzip_bomb_stops_at_the_limit():
    body = protobuf_body(make_spans(GENAI))
    assert otlp.decode(gzip.compress(body), content_encoding="gzip").samples[0].text \
        == "It ships on Monday."
    bomb = gzip.compress(b"\0" * 5_000_000)
    assert len(bomb) < 10_000
    with pytest.raises(otlp.OtlpTooLarge):
        otlp.parse_request(bomb, content_encoding="gzip", max_bytes=1_000_000)
    with pytest.raises(otlp.OtlpTooLarge):
        otlp.parse_request(body, max_bytes=len(body) - 1)
    with pytest.raises(otlp.OtlpDecodeError, match="truncated"):
        otlp.parse_request(gzip.compress(body)[:-12], content_encoding="gzip")
    with pytest.raises(otlp.OtlpDecodeError):
        otlp.parse_request(b"not gzip at all", content_encoding="gzip")


def test_malformed_bodies_raise_decode_errors():
    with pytest.raises(otlp.OtlpDecodeError):
        otlp.parse_request(b"\x0a\xff\xff\xff\xff\x0f garbage")
    with pytest.raises(otlp.OtlpDecodeError, match="not JSON"):
        otlp.parse_request(b"{not json", "application/json")
    with pytest.raises(otlp.OtlpDecodeError):
        otlp.parse_request(b'{"resourceSpans": 3}', "application/json")
    with pytest.raises(otlp.OtlpDecodeError, match="not hex"):
        otlp.parse_request(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
            {"traceId": "zz", "spanId": "00"}]}]}]}).encode(), "application/json")
    with pytest.raises(otlp.OtlpDecodeError):
        otlp.parse_request(b"[1, 2]", "application/json")
    with pytest.raises(otlp.UnsupportedMediaType):
        otlp.parse_request(b"", "text/plain")
    with pytest.raises(otlp.UnsupportedMediaType):
        otlp.parse_request(b"", otlp.PROTOBUF, "br")


def test_older_flat_gen_ai_completion_attributes():
    spans = make_spans({"attributes": {
        "gen_ai.system": "openai", "gen_ai.request.model": "gpt-3.5-turbo",
        "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "Be brief.",
        "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "Name a bird.",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "A wren.",
        "gen_ai.completion.1.role": "assistant", "gen_ai.completion.1.content": "A heron.",
    }})
    result = otlp.decode(protobuf_body(spans))
    assert [s.text for s in result.samples] == ["A wren.", "A heron."]
    assert [s.prompt for s in result.samples] == ["Name a bird."] * 2
    first, second = result.samples
    assert second.id == first.id + "-1"  # each choice is its own sample, ids stay stable
    assert second.attributes["otel.choice"] == 1


def test_gen_ai_choice_and_user_message_events():
    spans = make_spans({"attributes": {"gen_ai.operation.name": "chat",
                                       "gen_ai.request.model": "llama-3-8b"},
                        "events": [
        ("gen_ai.user.message", {"content": "Tell me a joke."}),
        ("gen_ai.choice", {"index": 1, "message": json.dumps({"content": "Second."})}),
        ("gen_ai.choice", {"index": 0, "message.content": "First.", "finish_reason": "stop"}),
    ]})
    result = otlp.decode(protobuf_body(spans))
    assert [s.text for s in result.samples] == ["First.", "Second."]
    assert result.samples[0].prompt == "Tell me a joke."
    assert result.samples[0].attributes["otel.convention"] == "gen_ai.choice"


def test_semconv_1_27_completion_events():
    spans = make_spans({"attributes": {"gen_ai.system": "openai",
                                       "gen_ai.request.model": "gpt-4"},
                        "events": [
        ("gen_ai.content.prompt", {"gen_ai.prompt": json.dumps(
            [{"role": "user", "content": "Hi?"}])}),
        ("gen_ai.content.completion", {"gen_ai.completion": json.dumps(
            [{"role": "assistant", "content": "Hello."}])}),
    ]})
    [sample] = otlp.decode(protobuf_body(spans)).samples
    assert (sample.text, sample.prompt) == ("Hello.", "Hi?")


def test_openinference_output_messages_and_plain_output_value():
    spans = make_spans(
        {"attributes": {
            "openinference.span.kind": "LLM", "llm.model_name": "mistral-7b",
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": "Capital of Peru?",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "Lima.",
            "output.value": "{\"ignored\": true}", "output.mime_type": "application/json"}},
        {"attributes": {"openinference.span.kind": "LLM", "llm.model_name": "mistral-7b",
                        "input.value": "Capital of Chile?", "output.value": "Santiago."}},
        {"attributes": {"openinference.span.kind": "LLM", "llm.model_name": "mistral-7b",
                        "llm.output_messages.0.message.role": "assistant",
                        "llm.output_messages.0.message.contents.0.message_content.type": "text",
                        "llm.output_messages.0.message.contents.0.message_content.text": "Quito."}},
    )
    result = otlp.decode(protobuf_body(spans))
    assert [(s.text, s.prompt) for s in result.samples] == [
        ("Lima.", "Capital of Peru?"), ("Santiago.", "Capital of Chile?"), ("Quito.", None)]
    assert [s.attributes["otel.convention"] for s in result.samples] == [
        "llm.output_messages", "output.value", "llm.output_messages"]


def test_openinference_json_output_value_is_read_as_an_openai_response():
    response = {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant",
                                                                "content": "Blue."}}]}
    request = {"model": "m", "messages": [{"role": "user", "content": "Sky colour?"}]}
    spans = make_spans({"attributes": {
        "openinference.span.kind": "LLM", "llm.model_name": "m",
        "input.value": json.dumps(request), "input.mime_type": "application/json",
        "output.value": json.dumps(response), "output.mime_type": "application/json"}})
    [sample] = otlp.decode(protobuf_body(spans)).samples
    assert (sample.text, sample.prompt) == ("Blue.", "Sky colour?")


def test_non_llm_spans_and_llm_spans_without_text_are_skipped_not_rejected():
    spans = make_spans(
        {"name": "GET /", "attributes": {"http.request.method": "GET", "url.path": "/"}},
        {"attributes": {"openinference.span.kind": "CHAIN", "output.value": "chain output"}},
        {"attributes": {"gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": "m",
                        "gen_ai.output.messages": GENAI["attributes"]["gen_ai.output.messages"]}},
        {"attributes": {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e"}},
        {"attributes": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}},
        GENAI,
    )
    result = otlp.decode(protobuf_body(spans))
    assert (result.spans, result.llm_spans, result.skipped, result.rejected) == (6, 2, 5, 0)
    assert result.reasons["no completion text"] == 1
    assert [s.text for s in result.samples] == ["It ships on Monday."]


def test_llm_span_without_model_name_is_rejected_unless_a_rule_names_it():
    shape = {"attributes": {"openinference.span.kind": "LLM", "output.value": "text",
                            "app.model": "chatbot"}}
    body = protobuf_body(make_spans(shape))
    result = otlp.decode(body)
    assert (result.samples, result.rejected) == ([], 1)
    assert "no model name" in next(iter(result.reasons))
    [sample] = otlp.decode(body, rules=otlp.ModelRules.parse("@app.model")).samples
    assert sample.models == ("chatbot",)


def test_model_rules_exact_glob_attribute_first_match_wins():
    rules = otlp.ModelRules.parse("gpt-4o=exact-target, gpt-4o*=glob-target\n@collapsewatch.model")
    assert [r.kind for r in rules.rules] == ["exact", "glob", "attribute"]
    assert rules.candidates(("gpt-4o",), {}) == ("exact-target",)
    assert rules.candidates(("gpt-4o-2024-08-06", "gpt-4o"), {}) == ("exact-target",)
    assert rules.candidates(("gpt-4o-mini",), {}) == ("glob-target",)
    assert rules.candidates(("llama",), {"collapsewatch.model": "chat"}) == ("chat",)
    assert rules.candidates(("llama",), {}) == ("llama",)  # passthrough
    assert otlp.ModelRules.parse("x=y", passthrough=False).candidates(("llama",), {}) == ()
    assert otlp.resolve_model(("a", "b"), {"b"}.__contains__) == "b"
    assert otlp.resolve_model(("a",), {"b"}.__contains__) is None
    for bad in ("gpt-4o", "=x", "x=", "@"):
        with pytest.raises(ValueError, match="model rule"):
            otlp.ModelRules.parse(bad)


def test_model_rule_reads_resource_attributes_too():
    spans = make_spans(GENAI)
    rules = otlp.ModelRules.parse("@service.name")
    [sample] = otlp.decode(protobuf_body(spans), rules=rules).samples
    assert sample.models == ("chat-api",)


def test_response_and_status_bodies_parse_as_their_messages():
    response = ExportTraceServiceResponse.FromString(otlp.encode_response(3, "unknown model"))
    assert response.partial_success.rejected_spans == 3
    assert ExportTraceServiceResponse.FromString(otlp.encode_response()).HasField(
        "partial_success") is False
    as_json = json.loads(otlp.encode_response(2, "x", as_json=True))
    assert as_json == {"partialSuccess": {"rejectedSpans": "2", "errorMessage": "x"}}
    status = status_pb2.Status.FromString(otlp.encode_status(3, "bad protobuf " + "é" * 100))
    assert (status.code, status.message) == (3, "bad protobuf " + "é" * 100)
    assert json.loads(otlp.encode_status(3, "m", as_json=True)) == {"code": 3, "message": "m"}
