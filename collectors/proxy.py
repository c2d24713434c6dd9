"""A recording proxy in front of an OpenAI-compatible endpoint.

Point a client's base URL at the proxy (``OPENAI_BASE_URL=http://127.0.0.1:8088/v1``); every
request goes to the upstream unchanged and the upstream's answer comes back unchanged: status,
headers and body bytes (a compressed body stays compressed; streaming responses are passed on
chunk by chunk as they arrive). Only the connection-level headers of RFC 9110 §7.6.1 are
not forwarded, and message framing is redone per hop (h11 on plain asyncio streams; an
ASGI server plus an HTTP client library cost three times the CPU per call and two more
socket writes, each of which wakes the peer). Completions of ``POST /v1/chat/completions``,
``/v1/completions`` and ``/v1/responses`` that succeed (2xx) are recorded through the SDK
(:class:`collectors.Client`, spooled on disk), so collapsewatch being down never slows or fails
the caller: recording happens after the caller has the last byte, and ``record()`` only
appends to a queue.

Paths: a request to ``/v1/REST`` goes to ``UPSTREAM/REST``, where UPSTREAM is the base URL as
OpenAI clients take it (``https://api.openai.com/v1``, ``http://vllm:8000/v1``; without a
trailing ``/v1``, as in ``http://vllm:8000``, ``/v1`` is kept); any other path goes to the
upstream's origin unchanged.

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
import contextlib
import json
import logging
import os
import signal
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import h11

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

class _UpstreamClosed(Exception):
    """The upstream closed a connection before answering."""


class _Connection:
    """One HTTP/1.1 connection to the upstream, kept alive between requests."""

    __slots__ = ("conn", "reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(h11.CLIENT)
        self.reused = False

    def close(self) -> None:
        self.writer.close()


class RecordingProxy:
    """Forward HTTP/1.1 requests to ``upstream``; record the completions of successful calls.

    Plain asyncio streams with h11 for the framing on both sides. Written for a small cost per
    call: the response head goes out in the same write as the body bytes that came with it,
    the request head in the same write as its body, and upstream connections are reused.
    """

    def __init__(
        self,
        upstream: str,
        recorder: Recorder | None,
        *,
        model: str | None = None,
        model_from_response: bool = False,
        sample_rate: float = 1.0,
        timeout: float = 600.0,
        max_record_bytes: int = 8 * 1024 * 1024,
        max_idle_connections: int = 100,
        idle_timeout: float = 300.0,
    ) -> None:
        if bool(model) == bool(model_from_response):
            raise ValueError("give either a model name or model_from_response")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream {upstream!r} is not an http(s) URL such as "
                             "https://api.openai.com/v1")
        self.upstream = upstream.rstrip("/")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._host_header = parts.netloc.encode("idna")
        base = parts.path.rstrip("/").encode()
        # the proxy's /v1 stands for the upstream's base URL, with or without its own /v1
        self._v1_prefix = base.removesuffix(b"/v1")
        self.recorder = recorder
        self.model = model
        self.model_from_response = model_from_response
        self.sample_rate = sample_rate
        self.timeout = timeout
        self.max_record_bytes = max_record_bytes
        self.idle_timeout = idle_timeout
        self.stats = ProxyStats()
        self._idle: list[_Connection] = []
        self._max_idle = max_idle_connections
        self._clients: dict[asyncio.StreamWriter, bool] = {}  # open client connections: busy?
        self._ids = 0
        self._prefix = os.urandom(6).hex()

    def target(self, path: bytes) -> bytes:
        """The upstream request-target of a request-target (see the module documentation)."""
        return self._v1_prefix + path if path.startswith(b"/v1/") else path

    def endpoint(self, method: bytes, target: bytes) -> str | None:
        """The recorded endpoint a request calls (chat, completions, responses), or None."""
        if method != b"POST" or not target.startswith(b"/v1/"):
            return None
        path = target.split(b"?", 1)[0][3:].rstrip(b"/").decode("latin-1")
        return RECORDED_ENDPOINTS.get(path)

    def sample_id(self) -> str | None:
        """A new sample id, or None when ``sample_rate`` leaves this call out (decided before
        anything is buffered)."""
        self._ids += 1
        sample_id = f"px-{self._prefix}-{self._ids}"
        if keeps(sample_id, self.sample_rate):
            return sample_id
        self.stats.sampled_out += 1
        return None

    def close(self) -> None:
        """Close the idle upstream connections."""
        while self._idle:
            self._idle.pop().close()

    # -- one client connection ---------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection (asyncio.start_server's callback)."""
        conn = h11.Connection(h11.SERVER)
        self._clients[writer] = False
        try:
            while True:
                request, body = await self._read_request(conn, reader, writer)
                if request is None:
                    return
                self._clients[writer] = True
                if not await self._exchange(conn, request, body, writer):
                    return
                self._clients[writer] = False
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                with contextlib.suppress(Exception):
                    writer.write(_error(conn, exc.error_status_hint,
                                        f"bad request: {exc}", "bad_request"))
                    await writer.drain()
        except (OSError, TimeoutError, h11.LocalProtocolError):
            pass  # the client went away, or sat idle too long
        finally:
            self._clients.pop(writer, None)
            writer.close()

    async def drain_clients(self, grace: float) -> None:
        """At shutdown: close idle client connections now, busy ones after their answer (or
        after ``grace`` seconds)."""
        deadline = time.monotonic() + grace
        while self._clients and time.monotonic() < deadline:
            for writer, busy in list(self._clients.items()):
                if not busy:
                    writer.close()  # its handler sees the end of the stream and returns
            await asyncio.sleep(0.05)
        for writer in list(self._clients):
            writer.close()
        await asyncio.sleep(0)

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> tuple[h11.Request | None, bytes]:
        request = None
        chunks = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    writer.write(conn.send(h11.InformationalResponse(status_code=100,
                                                                     headers=[])))
                async with asyncio.timeout(self.idle_timeout if request is None
                                           else self.timeout):
                    conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
                self.stats.requests += 1
            elif isinstance(event, h11.Data):
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return request, b"".join(chunks)
            else:  # ConnectionClosed between requests
                return None, b""

    async def _connection(self, fresh: bool) -> _Connection:
        while self._idle and not fresh:
            up = self._idle.pop()
            if not up.reader.at_eof():
                up.reused = True
                return up
            up.close()
        async with asyncio.timeout(min(self.timeout, 10.0)):
            reader, writer = await asyncio.open_connection(
                self._host, self._port, ssl=self._ssl, limit=1024 * 1024,
                server_hostname=self._host if self._ssl else None)
        return _Connection(reader, writer)

    def _release(self, up: _Connection) -> None:
        if (up.conn.our_state is h11.DONE and up.conn.their_state is h11.DONE
                and len(self._idle) < self._max_idle):
            up.conn.start_next_cycle()
            self._idle.append(up)
        else:
            up.close()

    async def _next_event(self, up: _Connection):
        while True:
            event = up.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            async with asyncio.timeout(self.timeout):
                data = await up.reader.read(65536)
            up.conn.receive_data(data)

    async def _send_upstream(self, request: h11.Request, body: bytes
                             ) -> tuple[_Connection, h11.Response]:
        headers = [(k, v) for k, v in request.headers if k not in HOP_BY_HOP and k != b"expect"]
        headers.append((b"host", self._host_header))
        if body or request.method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
            headers.append((b"content-length", str(len(body)).encode()))
        outgoing = h11.Request(method=request.method, target=self.target(request.target),
                               headers=headers)
        for attempt in range(2):
            up = await self._connection(fresh=attempt > 0)
            try:
                data = up.conn.send(outgoing)
                if body:
                    data += up.conn.send(h11.Data(data=body))
                up.writer.write(data + up.conn.send(h11.EndOfMessage()))
                await up.writer.drain()
                while True:
                    event = await self._next_event(up)
                    if isinstance(event, h11.Response):
                        return up, event
                    if not isinstance(event, h11.InformationalResponse):
                        raise _UpstreamClosed()
            except (OSError, h11.RemoteProtocolError, _UpstreamClosed):
                up.close()
                # a kept-alive connection the upstream had closed meanwhile: once more on a
                # new one (nothing of an answer was received)
                if attempt == 0 and up.reused:
                    continue
                raise
        raise _UpstreamClosed()

    async def _exchange(self, conn: h11.Connection, request: h11.Request, body: bytes,
                        writer: asyncio.StreamWriter) -> bool:
        """Forward one request and relay its answer; False when the connection must close."""
        try:
            up, response = await self._send_upstream(request, body)
        except (OSError, TimeoutError, h11.RemoteProtocolError, _UpstreamClosed) as exc:
            self.stats.upstream_unreachable += 1
            # the error names the upstream URL only; no header or body goes into the log
            log.warning("upstream unreachable: %s", type(exc).__name__,
                        extra={"upstream": self.upstream, "error": type(exc).__name__})
            writer.write(_error(conn, 502, f"upstream {self.upstream} did not answer "
                                f"({type(exc).__name__})", "upstream_unreachable"))
            await writer.drain()
            return True
        self.stats.forwarded += 1
        status = response.status_code
        if status >= 400:
            self.stats.upstream_errors += 1
        endpoint = self.endpoint(request.method, request.target)
        sample_id = self.sample_id() if endpoint and 200 <= status < 300 else None
        buffer: list[bytes] | None = [] if sample_id else None
        size = 0
        headers = [(k, v) for k, v in response.headers if k not in RESPONSE_HOP_BY_HOP]
        pending = conn.send(h11.Response(status_code=status, headers=headers,
                                         reason=response.reason))
        # A body of known length (not a stream) goes out with its head once it is here: the
        # caller can do nothing with the head alone, and one write wakes it once, not twice.
        # Streams (chunked, or until close) go out chunk by chunk as they arrive.
        hold = _header(response, b"content-length") != ""
        try:
            while True:
                event = up.conn.next_event()
                if event is h11.NEED_DATA:
                    if pending and (not hold or len(pending) >= 65536):
                        writer.write(pending)
                        pending = b""
                        await writer.drain()
                    async with asyncio.timeout(self.timeout):
                        data = await up.reader.read(65536)
                    up.conn.receive_data(data)
                elif isinstance(event, h11.Data):
                    if buffer is not None:
                        size += len(event.data)
                        if size > self.max_record_bytes:
                            buffer = None
                            self.stats.unrecordable += 1
                        else:
                            buffer.append(event.data)
                    pending += conn.send(h11.Data(data=event.data))
                elif isinstance(event, h11.EndOfMessage):
                    writer.write(pending + conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    break
                else:
                    raise _UpstreamClosed()
        except (OSError, TimeoutError, h11.RemoteProtocolError, _UpstreamClosed) as exc:
            # the upstream broke off mid-answer (or the client left): the client sees the
            # connection close, as it would without the proxy; nothing partial is recorded
            log.warning("response cut short: %s", type(exc).__name__,
                        extra={"upstream": self.upstream, "error": type(exc).__name__})
            up.close()
            return False
        self._release(up)
        if buffer is not None:
            self._record(endpoint, body, b"".join(buffer), _header(response, b"content-encoding"),
                         _header(response, b"content-type"), sample_id)
        return True

    def _record(self, endpoint: str, request_body: bytes, raw: bytes, encoding: str,
                content_type: str, sample_id: str) -> None:
        request = None
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


def _header(response: h11.Response, name: bytes) -> str:
    for key, value in response.headers:
        if key == name:
            return value.decode("latin-1")
    return ""


def _error(conn: h11.Connection, status: int, message: str, code: str) -> bytes:
    """A complete error response in the OpenAI error shape, so OpenAI clients show it."""
    body = json.dumps({"error": {"message": message, "type": "proxy_error",
                                 "code": code}}).encode()
    return (conn.send(h11.Response(status_code=status, headers=[
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]))
        + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))


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
    """Run the proxy until SIGINT/SIGTERM (or until ``stop()`` turns true)."""
    asyncio.run(_serve(proxy, host, port, stop))
    log.info("proxy stopped", extra=proxy.stats.as_dict())


async def _serve(proxy: RecordingProxy, host: str, port: int,
                 stop: Callable[[], bool] | None) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    if threading.current_thread() is threading.main_thread():  # signals reach only that one
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
    server = await asyncio.start_server(proxy.handle, host, port, limit=1024 * 1024)
    log.info("proxy listening", extra={"listen": f"{host}:{port}", "upstream": proxy.upstream})
    try:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.2)
            if stop is not None and stop():
                break
    finally:
        server.close()
        await proxy.drain_clients(grace=10.0)
        proxy.close()


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8088`` for IPv6) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {value!r} is not HOST:PORT, e.g. 127.0.0.1:8088")
    return host.strip("[]") or "127.0.0.1", int(port)
