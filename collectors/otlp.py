"""OTLP/HTTP trace requests → collapsewatch samples (pure: no I/O, no server parts).

Decoding follows the OTLP specification (opentelemetry-proto, ``docs/specification.md``,
"OTLP/HTTP"): the body is an ``ExportTraceServiceRequest``, binary protobuf
(``application/x-protobuf``) or JSON (``application/json``), optionally gzip-compressed
(``Content-Encoding: gzip``). JSON uses the lowerCamelCase field names, trace and span ids as
hex strings (not base64 as the generic protobuf JSON mapping would have it), enums as integers
and 64-bit integers as decimal strings (numbers are accepted too); unknown fields are ignored.

Which spans become samples
--------------------------
A span is an **LLM span** when it carries the OpenTelemetry GenAI semantic conventions
(``gen_ai.operation.name`` of ``chat``, ``text_completion`` or ``generate_content``, or no
operation but ``gen_ai.request.model``/``gen_ai.response.model``/``gen_ai.system``/
``gen_ai.provider.name``) or OpenInference (``openinference.span.kind = LLM``, or
``llm.model_name``). Agent, tool and embedding spans are not samples: an agent's answer is the
output of the chat span under it, which is already counted. Everything else is skipped after a
look at its attribute keys only.

The completion text, first found wins:

1. ``gen_ai.output.messages`` — a JSON array of ``{"role", "parts": [{"type": "text",
   "content"}], "finish_reason"}`` (GenAI conventions ≥ 1.37); text parts only.
2. ``gen_ai.completion.N.content`` (the older flat attributes, OpenLLMetry).
3. span events ``gen_ai.choice`` (attributes ``message`` as JSON or map, ``message.content``,
   ``content``, or ``gen_ai.event.content`` with the event body as JSON) and the 1.27-era
   ``gen_ai.content.completion`` event (attribute ``gen_ai.completion``).
4. OpenInference ``llm.output_messages.N.message.content`` (or its ``message.contents.M``
   text parts), then ``output.value`` (plain text; with ``output.mime_type`` JSON an
   OpenAI-shaped response is read: ``choices[].message.content``, ``choices[].text``,
   ``output_text``).

Each choice is one sample (a span with ``n=3`` has three outputs). Sample id: ``<trace id>-<span
id>`` in hex, ``-<index>`` appended for choices after the first, so a batch exported twice is
stored once. Timestamp: the span's end (its start if the end is missing). The prompt is the
last user message found the same ways (``gen_ai.input.messages``, ``gen_ai.prompt.N``,
``gen_ai.user.message`` events, ``llm.input_messages.N``, ``input.value``).

Model names come from ``gen_ai.response.model``, ``gen_ai.request.model`` and
``llm.model_name`` (in that order) and are mapped by :class:`ModelRules`.
"""

from __future__ import annotations

import base64
import fnmatch
import gzip
import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
MAX_TEXT_CHARS = 1_000_000

# Operations whose output is a model completion (GenAI conventions, gen_ai.operation.name)
COMPLETION_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
_GENAI_MARKERS = frozenset({
    "gen_ai.operation.name", "gen_ai.system", "gen_ai.provider.name", "gen_ai.request.model",
    "gen_ai.response.model", "gen_ai.output.messages",
})
_OPENINFERENCE_MARKERS = frozenset({"openinference.span.kind", "llm.model_name"})
_MARKERS = _GENAI_MARKERS | _OPENINFERENCE_MARKERS
_MARKER_PREFIXES = ("gen_ai.completion.", "llm.output_messages.")
MODEL_ATTRIBUTES = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")


class OtlpDecodeError(ValueError):
    """The request body is not an ExportTraceServiceRequest in the declared encoding."""


class OtlpTooLarge(ValueError):
    """The request body (after decompression) is larger than the limit."""


class UnsupportedMediaType(ValueError):
    """A Content-Type or Content-Encoding that OTLP/HTTP does not define."""


# -- decoding -------------------------------------------------------------------------------

def media_type(content_type: str | None) -> str:
    """``application/json`` or ``application/x-protobuf`` from a Content-Type header."""
    kind = (content_type or PROTOBUF).split(";", 1)[0].strip().lower()
    if kind in (PROTOBUF, JSON):
        return kind
    raise UnsupportedMediaType(
        f"Content-Type {content_type!r} is not OTLP/HTTP; send {PROTOBUF} or {JSON}")


def decompress(body: bytes, content_encoding: str | None,
               max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The body without its Content-Encoding (gzip or identity), at most ``max_bytes``.

    Decompression stops as soon as the output passes the limit, so a small gzip bomb costs
    no more memory than the limit.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        if len(body) > max_bytes:
            raise OtlpTooLarge(f"request body is {len(body)} bytes; the limit is {max_bytes}")
        return body
    if encoding != "gzip":
        raise UnsupportedMediaType(
            f"Content-Encoding {content_encoding!r} is not supported; send gzip or none")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, max_bytes + 1)
        if len(out) > max_bytes or inflater.unconsumed_tail:
            raise OtlpTooLarge(f"decompressed request body is over the limit of {max_bytes} "
                               "bytes")
        if not inflater.eof:
            raise OtlpDecodeError("gzip body is truncated")
    except zlib.error as exc:
        raise OtlpDecodeError(f"gzip body cannot be decompressed: {exc}") from None
    return out


def _hex_to_base64(value: Any, what: str) -> Any:
    if not isinstance(value, str) or not value:
        return value
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise OtlpDecodeError(f"{what} {value[:40]!r} is not hex") from None
    return base64.b64encode(raw).decode("ascii")


def _list(value: Any) -> list:
    """A JSON array, or nothing (the protobuf parser reports a wrong type afterwards)."""
    return value if isinstance(value, list) else []


def _ids_to_base64(data: Any) -> None:
    """OTLP JSON ids are hex; the generic protobuf JSON parser wants base64 for bytes."""
    if not isinstance(data, dict):
        raise OtlpDecodeError("an OTLP JSON request is an object with resourceSpans")
    for resource_spans in _list(data.get("resourceSpans", data.get("resource_spans"))):
        if not isinstance(resource_spans, dict):
            continue
        for scope_spans in _list(resource_spans.get("scopeSpans",
                                                    resource_spans.get("scope_spans"))):
            if not isinstance(scope_spans, dict):
                continue
            for span in _list(scope_spans.get("spans")):
                if not isinstance(span, dict):
                    continue
                for key in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId",
                            "parent_span_id"):
                    if key in span:
                        span[key] = _hex_to_base64(span[key], key)
                for link in _list(span.get("links")):
                    if isinstance(link, dict):
                        for key in ("traceId", "trace_id", "spanId", "span_id"):
                            if key in link:
                                link[key] = _hex_to_base64(link[key], f"link {key}")


def parse_request(body: bytes, content_type: str | None = PROTOBUF,
                  content_encoding: str | None = None,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> ExportTraceServiceRequest:
    """An ``ExportTraceServiceRequest`` from an OTLP/HTTP request body.

    Raises :class:`UnsupportedMediaType`, :class:`OtlpTooLarge` or :class:`OtlpDecodeError`.
    """
    kind = media_type(content_type)
    raw = decompress(body, content_encoding, max_bytes)
    request = ExportTraceServiceRequest()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(raw)
        except (DecodeError, RecursionError) as exc:
            raise OtlpDecodeError(f"body is not a protobuf ExportTraceServiceRequest: {exc}")\
                from None
        return request
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise OtlpDecodeError(f"body is not JSON: {exc}") from None
    _ids_to_base64(data)
    try:
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, RecursionError) as exc:
        raise OtlpDecodeError(f"JSON is not an ExportTraceServiceRequest: {exc}") from None
    return request


def encode_response(rejected_spans: int = 0, error_message: str = "",
                    as_json: bool = False) -> bytes:
    """An ``ExportTraceServiceResponse`` (with ``partial_success`` when spans were rejected)."""
    response = ExportTraceServiceResponse()
    if rejected_spans or error_message:
        response.partial_success.rejected_spans = rejected_spans
        response.partial_success.error_message = error_message
    if as_json:
        return json.dumps(json_format.MessageToDict(response)).encode()
    return response.SerializeToString()


def encode_status(code: int, message: str, as_json: bool = False) -> bytes:
    """A ``google.rpc.Status`` body, the error shape OTLP/HTTP answers bad requests with.

    Written by hand (fields 1 ``code`` int32 and 2 ``message`` string): the ``google.rpc``
    protos are not a dependency of opentelemetry-proto.
    """
    if as_json:
        return json.dumps({"code": code, "message": message}).encode()
    text = message.encode("utf-8")
    return bytes([0x08]) + _varint(code) + bytes([0x12]) + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# -- model mapping ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelRule:
    """``exact``: a model name → target; ``glob``: a pattern → target; ``attribute``: the
    value of a span (or resource) attribute is the collapsewatch model name."""

    kind: str
    pattern: str
    target: str = ""

    def apply(self, names: Iterable[str], attributes: dict[str, Any]) -> str | None:
        if self.kind == "attribute":
            value = attributes.get(self.pattern)
            return value if isinstance(value, str) and value else None
        for name in names:
            if self.kind == "exact" and name == self.pattern:
                return self.target
            if self.kind == "glob" and fnmatch.fnmatchcase(name, self.pattern):
                return self.target
        return None


@dataclass(frozen=True)
class ModelRules:
    """Ordered rules; the first that matches names the collapsewatch model.

    Without a match the span's own model names are candidates (the service takes the first
    one it knows), unless ``passthrough`` is off.
    """

    rules: tuple[ModelRule, ...] = ()
    passthrough: bool = True

    @classmethod
    def parse(cls, spec: str | Iterable[str] | None, passthrough: bool = True) -> ModelRules:
        """Rules from ``"gpt-4o*=chatbot, llama-3-8b=summarizer, @collapsewatch.model"``.

        ``NAME=MODEL`` is exact, ``PATTERN=MODEL`` a glob when it has ``*?[``, ``@KEY`` takes
        the model from attribute KEY. Entries are separated by commas or new lines.
        """
        if spec is None:
            return cls((), passthrough)
        items = spec.replace("\n", ",").split(",") if isinstance(spec, str) else list(spec)
        rules = []
        for raw in items:
            item = raw.strip()
            if not item:
                continue
            if item.startswith("@"):
                if not item[1:].strip():
                    raise ValueError(f"model rule {item!r}: name the attribute after @")
                rules.append(ModelRule("attribute", item[1:].strip()))
                continue
            pattern, sep, target = item.partition("=")
            pattern, target = pattern.strip(), target.strip()
            if not sep or not pattern or not target:
                raise ValueError(f"model rule {item!r} is not NAME=MODEL, GLOB=MODEL or @ATTRIBUTE")
            kind = "glob" if any(c in pattern for c in "*?[") else "exact"
            rules.append(ModelRule(kind, pattern, target))
        return cls(tuple(rules), passthrough)

    def candidates(self, names: tuple[str, ...], attributes: dict[str, Any]) -> tuple[str, ...]:
        """The collapsewatch model names to try, best first (empty: no model)."""
        for rule in self.rules:
            target = rule.apply(names, attributes)
            if target:
                return (target,)
        return names if self.passthrough else ()


def resolve_model(candidates: tuple[str, ...], exists: Callable[[str], bool]) -> str | None:
    """The first candidate that ``exists``; None when none does."""
    for name in candidates:
        if exists(name):
            return name
    return None


# -- extraction ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpanSample:
    """One model output found in a span."""

    id: str
    text: str
    prompt: str | None
    timestamp: float | None           # Unix seconds of the span's end
    models: tuple[str, ...]           # collapsewatch model candidates, best first
    source_model: str | None          # the model name the span reports
    attributes: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The sample as the ingest API takes it."""
        out: dict[str, Any] = {"id": self.id, "text": self.text,
                               "attributes": self.attributes}
        if self.prompt is not None:
            out["prompt"] = self.prompt
        if self.timestamp is not None:
            out["timestamp"] = self.timestamp
        return out


@dataclass
class Extraction:
    """Samples found in one request, and what happened to the other spans."""

    samples: list[SpanSample] = field(default_factory=list)
    spans: int = 0
    llm_spans: int = 0
    skipped: int = 0           # not LLM spans, or LLM spans without completion text
    rejected: int = 0          # LLM spans that cannot become samples (see reasons)
    reasons: Counter = field(default_factory=Counter)

    def reject(self, reason: str, count: int = 1) -> None:
        self.rejected += count
        self.reasons[reason] += count


def value_of(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a Python value (maps become dicts, arrays lists)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value
    return None


def _is_llm_span(span) -> bool:
    """Cheap: attribute keys only (plus the two values that decide)."""
    for kv in span.attributes:
        key = kv.key
        if key in _MARKERS or key.startswith(_MARKER_PREFIXES):
            break
    else:
        return any(event.name in ("gen_ai.choice", "gen_ai.content.completion")
                   for event in span.events)
    for kv in span.attributes:
        if kv.key == "gen_ai.operation.name":
            return kv.value.string_value in COMPLETION_OPERATIONS
        if kv.key == "openinference.span.kind":
            return kv.value.string_value.upper() == "LLM"
    return True


def _json(value: Any) -> Any:
    """A JSON attribute: a string holding JSON, or an already structured value."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _text_of_content(content: Any) -> str | None:
    """Message content: a string, or a list of parts (``{"type": "text", "text"|"content"}``)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") in ("text", "output_text"):
                text = part.get("content", part.get("text"))
                if isinstance(text, str):
                    texts.append(text)
        return "\n".join(texts) if texts else None
    return None


def _message_text(message: Any) -> str | None:
    """Text of one message in the GenAI (``parts``) or OpenAI (``content``) shape."""
    if isinstance(message, str):
        return message
    if not isinstance(message, dict):
        return None
    if "parts" in message:
        return _text_of_content(message["parts"])
    if "message" in message and isinstance(message["message"], dict):
        return _message_text(message["message"])
    return _text_of_content(message.get("content"))


def _indexed(attributes: dict[str, Any], prefix: str, suffix: str) -> list[tuple[int, Any]]:
    """``prefix.N.suffix`` attributes as (N, value), by N."""
    out = []
    for key, value in attributes.items():
        if key.startswith(prefix) and key.endswith(suffix):
            middle = key[len(prefix):len(key) - len(suffix)]
            if middle.isdigit():
                out.append((int(middle), value))
    return sorted(out)


def _role_ok(attributes: dict[str, Any], prefix: str, index: int, role_suffix: str,
             want: str) -> bool:
    role = attributes.get(f"{prefix}{index}{role_suffix}")
    return role is None or str(role).lower() == want


def _openinference_text(attributes: dict[str, Any], prefix: str, index: int) -> str | None:
    content = attributes.get(f"{prefix}{index}.message.content")
    if isinstance(content, str):
        return content
    parts = _indexed(attributes, f"{prefix}{index}.message.contents.",
                     ".message_content.text")
    return "\n".join(v for _, v in parts if isinstance(v, str)) or None


def _openai_response_texts(data: Any) -> list[str]:
    """Outputs of an OpenAI-shaped response body (chat, completions or responses API)."""
    if not isinstance(data, dict):
        return []
    texts = []
    for choice in data.get("choices") or []:
        if isinstance(choice, dict):
            text = _message_text(choice.get("message")) if "message" in choice \
                else choice.get("text")
            if isinstance(text, str):
                texts.append(text)
    if not texts and isinstance(data.get("output_text"), str):
        texts.append(data["output_text"])
    if not texts:
        for item in data.get("output") or []:
            if isinstance(item, dict) and item.get("type") == "message":
                text = _text_of_content(item.get("content"))
                if text:
                    texts.append(text)
    return texts


def _event_choice_text(event_attributes: dict[str, Any]) -> str | None:
    for key in ("message", "gen_ai.event.content"):
        if key in event_attributes:
            text = _message_text(_json(event_attributes[key]))
            if text:
                return text
    for key in ("message.content", "content", "gen_ai.completion"):
        value = event_attributes.get(key)
        if isinstance(value, str):
            parsed = _json(value) if key == "gen_ai.completion" else None
            if isinstance(parsed, list):
                texts = [t for t in map(_message_text, parsed) if t]
                return "\n".join(texts) or None
            return value
    return None


def completions(attributes: dict[str, Any], events: list[tuple[str, dict[str, Any]]]
                ) -> tuple[list[str], str]:
    """(completion texts in choice order, the convention they came from)."""
    raw = attributes.get("gen_ai.output.messages")
    if raw is not None:
        messages = _json(raw)
        if isinstance(messages, list):
            texts = [t for m in messages if (t := _message_text(m))]
            if texts:
                return texts, "gen_ai.output.messages"
    flat = [v for i, v in _indexed(attributes, "gen_ai.completion.", ".content")
            if isinstance(v, str) and v
            and _role_ok(attributes, "gen_ai.completion.", i, ".role", "assistant")]
    if flat:
        return flat, "gen_ai.completion"
    choices = []
    for position, (name, event_attributes) in enumerate(events):
        if name in ("gen_ai.choice", "gen_ai.content.completion"):
            text = _event_choice_text(event_attributes)
            if text:
                index = event_attributes.get("index", position)
                choices.append((index if isinstance(index, int) else position, text))
    if choices:
        return [t for _, t in sorted(choices, key=lambda c: c[0])], "gen_ai.choice"
    indices = sorted({i for i, _ in _indexed(attributes, "llm.output_messages.", ".message.role")}
                     | {i for i, _ in _indexed(attributes, "llm.output_messages.",
                                                ".message.content")})
    oi = [t for i in indices if (t := _openinference_text(attributes, "llm.output_messages.", i))]
    if not indices:  # contents only
        oi = [v for _, v in _indexed(attributes, "llm.output_messages.0.message.contents.",
                                     ".message_content.text") if isinstance(v, str)]
        oi = ["\n".join(oi)] if oi else []
    if oi:
        return oi, "llm.output_messages"
    value = attributes.get("output.value")
    if isinstance(value, str) and value:
        if "json" in str(attributes.get("output.mime_type", "")).lower():
            texts = _openai_response_texts(_json(value))
            return (texts, "output.value") if texts else ([], "")
        return [value], "output.value"
    return [], ""


def _last_user(messages: Any) -> str | None:
    if not isinstance(messages, list):
        return None
    last = None
    for message in messages:
        if isinstance(message, dict) and str(message.get("role", "user")).lower() == "user":
            last = _message_text(message) or last
    return last


def prompt_of(attributes: dict[str, Any], events: list[tuple[str, dict[str, Any]]]
              ) -> str | None:
    """The last user message the span carries, or None."""
    raw = attributes.get("gen_ai.input.messages")
    if raw is not None and (text := _last_user(_json(raw))):
        return text
    for prefix, role, content in (("gen_ai.prompt.", ".role", ".content"),
                                  ("llm.input_messages.", ".message.role", ".message.content")):
        users = [v for i, v in _indexed(attributes, prefix, content)
                 if isinstance(v, str) and _role_ok(attributes, prefix, i, role, "user")]
        if users:
            return users[-1]
    last = None
    for name, event_attributes in events:
        if name == "gen_ai.user.message":
            text = _event_choice_text(event_attributes)
            last = text or last
        elif name == "gen_ai.content.prompt":
            value = event_attributes.get("gen_ai.prompt")
            parsed = _json(value)
            last = (_last_user(parsed) if isinstance(parsed, list) else value) or last
    if isinstance(last, str):
        return last
    value = attributes.get("input.value")
    if isinstance(value, str) and value:
        if "json" in str(attributes.get("input.mime_type", "")).lower():
            data = _json(value)
            return _last_user(data.get("messages")) if isinstance(data, dict) else None
        return value
    return None


def extract(request: ExportTraceServiceRequest, rules: ModelRules | None = None) -> Extraction:
    """The samples in a decoded request, with counts of skipped and rejected spans."""
    rules = rules or ModelRules()
    out = Extraction()
    for resource_spans in request.resource_spans:
        resource_attributes: dict[str, Any] | None = None
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.spans += 1
                if not _is_llm_span(span):
                    out.skipped += 1
                    continue
                out.llm_spans += 1
                if resource_attributes is None:
                    resource_attributes = {kv.key: value_of(kv.value)
                                           for kv in resource_spans.resource.attributes}
                _span_samples(span, resource_attributes, rules, out)
    return out


def _span_samples(span, resource_attributes: dict[str, Any], rules: ModelRules,
                  out: Extraction) -> None:
    if len(span.trace_id) != 16 or len(span.span_id) != 8:
        out.reject("span without a valid trace id and span id")
        return
    attributes = {kv.key: value_of(kv.value) for kv in span.attributes}
    events = [(event.name, {kv.key: value_of(kv.value) for kv in event.attributes})
              for event in span.events]
    texts, convention = completions(attributes, events)
    if not texts:
        out.skipped += 1
        out.reasons["no completion text"] += 1
        return
    names = tuple(dict.fromkeys(
        v for key in MODEL_ATTRIBUTES if isinstance(v := attributes.get(key), str) and v))
    models = rules.candidates(names, {**resource_attributes, **attributes})
    if not models:
        out.reject("no model name in the span and no mapping rule matched")
        return
    end = span.end_time_unix_nano or span.start_time_unix_nano
    base_id = f"{span.trace_id.hex()}-{span.span_id.hex()}"
    prompt = prompt_of(attributes, events)
    info: dict[str, Any] = {"otel.trace_id": span.trace_id.hex(),
                            "otel.span_id": span.span_id.hex(), "otel.convention": convention}
    if names:
        info["otel.model"] = names[0]
    service = resource_attributes.get("service.name")
    if isinstance(service, str):
        info["service.name"] = service
    for index, text in enumerate(texts):
        if len(text) > MAX_TEXT_CHARS:
            out.reject(f"completion text over {MAX_TEXT_CHARS} characters")
            continue
        out.samples.append(SpanSample(
            id=base_id if index == 0 else f"{base_id}-{index}",
            text=text, prompt=prompt, timestamp=end / 1e9 if end else None, models=models,
            source_model=names[0] if names else None,
            attributes=info if len(texts) == 1 else {**info, "otel.choice": index}))


def decode(body: bytes, content_type: str | None = PROTOBUF, content_encoding: str | None = None,
           rules: ModelRules | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Extraction:
    """:func:`parse_request` then :func:`extract`."""
    return extract(parse_request(body, content_type, content_encoding, max_bytes), rules)


def gzip_bytes(data: bytes) -> bytes:
    """gzip as an OTLP exporter sends it (for tests and tools)."""
    return gzip.compress(data, mtime=0)
