"""A recording proxy in front of an OpenAI-compatible endpoint.

Point a client's base URL at the proxy (``OPENAI_BASE_URL=http://127.0.0.1:8088/v1``); every
request goes to the upstream unchanged and the upstream's answer comes back unchanged: status,
headers and body bytes (a compressed body stays compressed; streaming responses are passed on
chunk by chunk as they arrive). Completions of ``POST /v1/chat/completions``,
``/v1/completions`` and ``/v1/responses`` that succeed (2xx) are recorded through the SDK
(:class:`collectors.Client`, spooled on disk), so collapsewatch being down never slows or fails
the caller: recording happens after the caller has the last byte, and ``record()`` only
appends to a queue.

Paths: a request to ``/v1/REST`` goes to ``UPSTREAM/REST``, where UPSTREAM is the base URL as
OpenAI clients take it (``https://api.openai.com/v1``, ``http://vllm:8000/v1``); any other path
goes to the upstream's origin unchanged.

What is never kept: the caller's ``Authorization``, ``api-key`` and other headers are forwarded
to the upstream only; the proxy does not log headers, query strings or bodies, and a sample
holds only the completion text, the prompt (last user message) and a few attributes
(endpoint, upstream model, finish reason).

Not recorded: upstream errors (passed to the caller as they are), responses cut short,
bodies larger than ``max_record_bytes``, encodings other than gzip/deflate/identity, and
requests left out by ``sample_rate`` (decided per request before anything is buffered).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from collectors.client import keeps

log = logging.getLogger("collectors.proxy")

RECORDED_ENDPOINTS = {
    "/chat/completions": "chat",
    "/completions": "completions",
    "/responses": "responses",
}
# RFC 9110 §7.6.1: connection-specific fields are not forwarded by proxies. Host and
# Content-Length are set again by the HTTP client for the upstream request.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"host", b"content-length",
})
RESPONSE_HOP_BY_HOP = HOP_BY_HOP - {b"content-length"}


@dataclass(frozen=True)
class Completion:
    """One output of one call, ready to record."""

    text: str
    prompt: str | None
    model: str | None            # the model the upstream says answered
    endpoint: str
    finish_reason: str | None = None


class Recorder(Protocol):
    def record(self, model: str, sample_id: str, completion: Completion) -> bool: ...

    def close(self) -> None: ...


@dataclass
class ProxyStats:
    requests: int = 0
    forwarded: int = 0            # answered by the upstream (any status)
    upstream_errors: int = 0      # upstream answered >= 400 (passed through, not recorded)
    upstream_unreachable: int = 0
    sampled_out: int = 0
    recorded: int = 0             # completions handed to the SDK
    unrecordable: int = 0         # successful answers without readable completions
    no_model: int = 0             # --model-from-response, and the response named none

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# -- reading requests and responses ----------------------------------------------------------

def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content
                 if isinstance(p, dict) and p.get("type") in ("text", "input_text", "output_text")
                 and isinstance(p.get("text"), str)]
        return "\n".join(texts) if texts else None
    return None


def prompt_of(endpoint: str, request: Any) -> str | None:
    """The prompt of a request body: the last user message, or the completion prompt."""
    if not isinstance(request, dict):
        return None
    if endpoint == "chat":
        messages = request.get("messages")
    elif endpoint == "completions":
        prompt = request.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            return prompt[0]
        return prompt if isinstance(prompt, str) else None
    else:
        messages = request.get("input")
        if isinstance(messages, str):
            return messages
    last = None
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and message.get("role") == "user":
            last = _content_text(message.get("content")) or last
    return last


def completions_of(endpoint: str, response: Any, prompt: str | None = None) -> list[Completion]:
    """The outputs in a (non-streaming) response body of ``endpoint``."""
    if not isinstance(response, dict):
        return []
    model = response.get("model") if isinstance(response.get("model"), str) else None
    out = []
    if endpoint == "responses":
        texts = []
        for item in response.get("output") or []:
            if isinstance(item, dict) and item.get("type") == "message":
                text = _content_text(item.get("content"))
                if text:
                    texts.append(text)
        if texts:
            out.append(Completion("\n".join(texts), prompt, model, endpoint,
                                  response.get("status")))
        return out
    choices = sorted((c for c in response.get("choices") or [] if isinstance(c, dict)),
                     key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int) else 0)
    for choice in choices:
        if endpoint == "chat":
            message = choice.get("message")
            text = _content_text(message.get("content")) if isinstance(message, dict) else None
        else:
            text = choice.get("text")
        if isinstance(text, str) and text:
            out.append(Completion(text, prompt, model, endpoint, choice.get("finish_reason")))
    return out


def sse_events(body: bytes) -> Iterable[Any]:
    """The JSON ``data:`` payloads of a text/event-stream body (HTML Living Standard §9.2)."""
    text = body.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    for block in text.split("\n\n"):
        data = [line[5:].removeprefix(" ") for line in block.split("\n")
                if line.startswith("data:")]
        if not data:
            continue
        payload = "\n".join(data)
        if payload.strip() == "[DONE]":
            continue
        try:
            yield json.loads(payload)
        except ValueError:
            continue


def completions_of_stream(endpoint: str, body: bytes, prompt: str | None = None
                          ) -> list[Completion]:
    """The outputs of a streamed response, reassembled from its SSE chunks."""
    if endpoint == "responses":
        for event in sse_events(body):
            if not isinstance(event, dict):
                continue
            if event.get("type") == "response.completed":
                # the final event carries the whole response: the authoritative text
                return completions_of(endpoint, event.get("response"), prompt)
        return []  # no completed event: the stream was cut short or failed
    parts: dict[int, list[str]] = {}
    finish: dict[int, str | None] = {}
    model = None
    for event in sse_events(body):
        if not isinstance(event, dict):
            continue
        if isinstance(event.get("model"), str):
            model = event["model"]
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0) if isinstance(choice.get("index"), int) else 0
            if endpoint == "chat":
                delta = choice.get("delta")
                piece = delta.get("content") if isinstance(delta, dict) else None
            else:
                piece = choice.get("text")
            if isinstance(piece, str):
                parts.setdefault(index, []).append(piece)
            if choice.get("finish_reason"):
                finish[index] = choice["finish_reason"]
    return [Completion("".join(parts[i]), prompt, model, endpoint, finish.get(i))
            for i in sorted(parts) if "".join(parts[i])]


class _Inflater:
    """Undo a response's Content-Encoding for recording (the caller gets the raw bytes)."""

    def __init__(self, encoding: str) -> None:
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            self._z = None
        elif encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.decompressobj()
        else:
            raise ValueError(encoding)

    def run(self, raw: bytes) -> bytes:
        return raw if self._z is None else self._z.decompress(raw) + self._z.flush()


# -- the proxy -------------------------------------------------------------------------------

class RecordingProxy:
    """An ASGI application: forward everything to ``upstream``, record completions."""

    def __init__(
        self,
        upstream: str,
        recorder: Recorder,
        *,
        model: str | None = None,
        model_from_response: bool = False,
        sample_rate: float = 1.0,
        timeout: float = 600.0,
        max_record_bytes: int = 8 * 1024 * 1024,
        max_connections: int = 200,
    ) -> None:
        if bool(model) == bool(model_from_response):
            raise ValueError("give either a model name or model_from_response")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"upstream {upstream!r} is not an http(s) URL such as "
                             "https://api.openai.com/v1")
        self.upstream = upstream.rstrip("/")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self.recorder = recorder
        self.model = model
        self.model_from_response = model_from_response
        self.sample_rate = sample_rate
        self.max_record_bytes = max_record_bytes
        self.stats = ProxyStats()
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._limits = httpx.Limits(max_connections=max_connections,
                                    max_keepalive_connections=max_connections)
        self._client: httpx.AsyncClient | None = None
        self._ids = 0
        self._prefix = os.urandom(6).hex()

    def target(self, raw_path: bytes, query: bytes) -> str:
        """The upstream URL of a request path (see the module documentation)."""
        path = raw_path.decode("latin-1")
        url = self.upstream + path[3:] if path.startswith("/v1/") else self._origin + path
        return url + "?" + query.decode("latin-1") if query else url

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # no environment proxies, no redirects: the proxy forwards exactly what it got
            self._client = httpx.AsyncClient(timeout=self._timeout, limits=self._limits,
                                             trust_env=False, follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.stats.requests += 1
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        method = scope["method"]
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        request = self._http().build_request(
            method, self.target(raw_path.split(b"?", 1)[0], scope.get("query_string", b"")),
            headers=headers, content=body)
        try:
            response = await self._http().send(request, stream=True)
        except httpx.HTTPError as exc:
            self.stats.upstream_unreachable += 1
            # the error names the upstream URL only; no header or body goes into the log
            log.warning("upstream unreachable: %s", type(exc).__name__,
                        extra={"upstream": self.upstream, "error": type(exc).__name__})
            await _send_error(send, 502, f"upstream {self.upstream} is unreachable "
                              f"({type(exc).__name__})")
            return
        try:
            await self._relay(scope, method, body, response, send)
        finally:
            await response.aclose()

    async def _relay(self, scope: dict, method: str, body: bytes, response: httpx.Response,
                     send: Callable) -> None:
        self.stats.forwarded += 1
        status = response.status_code
        endpoint = None
        path = scope["path"]
        if method == "POST" and path.startswith("/v1/"):
            endpoint = RECORDED_ENDPOINTS.get(path[3:].rstrip("/"))
        if status >= 400:
            self.stats.upstream_errors += 1
        buffer: list[bytes] | None = None
        sample_id = ""
        if endpoint and 200 <= status < 300:
            self._ids += 1
            sample_id = f"px-{self._prefix}-{self._ids}"
            if keeps(sample_id, self.sample_rate):
                buffer = []
            else:
                self.stats.sampled_out += 1
        headers = [(k, v) for k, v in response.headers.raw if k.lower() not in
                   RESPONSE_HOP_BY_HOP]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        size = 0
        complete = False
        try:
            async for chunk in response.aiter_raw():
                if buffer is not None:
                    size += len(chunk)
                    if size > self.max_record_bytes:
                        buffer = None
                        self.stats.unrecordable += 1
                    else:
                        buffer.append(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            complete = True
        except httpx.HTTPError as exc:
            # the upstream broke off mid-answer: the caller sees a cut-short body, as it would
            # without the proxy; a partial completion is not recorded
            log.warning("upstream response cut short: %s", type(exc).__name__,
                        extra={"upstream": self.upstream, "error": type(exc).__name__})
        if buffer is not None and complete:
            self._record(endpoint, body, b"".join(buffer),
                         response.headers.get("content-encoding", ""),
                         response.headers.get("content-type", ""), sample_id)

    def _record(self, endpoint: str, request_body: bytes, raw: bytes, encoding: str,
                content_type: str, sample_id: str) -> None:
        try:
            payload = _Inflater(encoding).run(raw)
            try:
                request = json.loads(request_body) if request_body else None
            except ValueError:
                request = None
            prompt = prompt_of(endpoint, request)
            if "text/event-stream" in content_type.lower():
                found = completions_of_stream(endpoint, payload, prompt)
            else:
                found = completions_of(endpoint, json.loads(payload), prompt)
        except (ValueError, zlib.error):
            found = []
        if not found:
            self.stats.unrecordable += 1
            return
        for index, completion in enumerate(found):
            model = self.model
            if self.model_from_response:
                model = completion.model or (request.get("model")
                                             if isinstance(request, dict) else None)
            if not isinstance(model, str) or not model:
                self.stats.no_model += 1
                continue
            if self.recorder.record(model, sample_id if index == 0 else f"{sample_id}-{index}",
                                    completion):
                self.stats.recorded += 1

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _send_error(send: Callable, status: int, message: str) -> None:
    """An error in the OpenAI error shape, so OpenAI clients show the message."""
    body = json.dumps({"error": {"message": message, "type": "proxy_error",
                                 "code": "upstream_unreachable"}}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# -- recording through the SDK ---------------------------------------------------------------

class SdkRecorder:
    """One SDK client per collapsewatch model, each with its own spool directory."""

    def __init__(self, factory: Callable[[str], Any], max_models: int = 100) -> None:
        self._factory = factory
        self._clients: dict[str, Any] = {}
        self._max_models = max_models
        self._warned = False

    def client(self, model: str) -> Any:
        """The SDK client of ``model`` (made on first use); None past ``max_models``."""
        client = self._clients.get(model)
        if client is None:
            if len(self._clients) >= self._max_models:
                if not self._warned:
                    log.warning("more than %d model names in responses; new ones are not "
                                "recorded", self._max_models)
                    self._warned = True
                return None
            client = self._clients[model] = self._factory(model)
        return client

    def record(self, model: str, sample_id: str, completion: Completion) -> bool:
        client = self.client(model)
        if client is None:
            return False
        attributes = {"source": "proxy", "endpoint": completion.endpoint}
        if completion.model:
            attributes["upstream_model"] = completion.model
        if completion.finish_reason:
            attributes["finish_reason"] = str(completion.finish_reason)
        return client.record(completion.text, prompt=completion.prompt, id=sample_id,
                             attributes=attributes)

    def clients(self) -> dict[str, Any]:
        return dict(self._clients)

    def close(self, timeout: float | None = None) -> None:
        for client in self._clients.values():
            client.close(timeout)


def serve(proxy: RecordingProxy, host: str, port: int,
          stop: Callable[[], bool] | None = None) -> None:
    """Run the proxy with uvicorn until SIGINT/SIGTERM (or ``stop()`` turns true)."""
    import uvicorn

    # no access log: a request line may carry keys in its query string (Azure's api-key=)
    config = uvicorn.Config(proxy, host=host, port=port, log_level="warning", access_log=False,
                            lifespan="on", timeout_keep_alive=75, server_header=False,
                            date_header=False)
    server = uvicorn.Server(config)
    if stop is not None:
        async def _watch() -> None:
            while not server.should_exit:
                if stop():
                    server.should_exit = True
                await asyncio.sleep(0.2)

        async def _main() -> None:
            watcher = asyncio.create_task(_watch())
            try:
                await server.serve()
            finally:
                watcher.cancel()

        asyncio.run(_main())
    else:
        server.run()
    log.info("proxy stopped", extra=proxy.stats.as_dict())


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8088`` for IPv6) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {value!r} is not HOST:PORT, e.g. 127.0.0.1:8088")
    return host.strip("[]") or "127.0.0.1", int(port)
