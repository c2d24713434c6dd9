"""A loopback server speaking the OpenAI chat, completions and responses shapes (and streams).

OpenAI cannot run here; this real HTTP/1.1 server stands in for it and records what it
receives. Streams are sent as chunked Server-Sent Events, one event per word, ``chunk_delay``
seconds apart. Prompts steer it: ``FAIL429``/``FAIL500`` answer that status with an OpenAI
error body. With ``gzip=True`` non-streaming answers are gzip-compressed when the request
accepts it (OpenAI's own API does this).

Run alone (for benchmarks): ``python -m tests.collectors.openai_upstream --port 9000``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    chunk_delay: float = 0.0
    gzip: bool = False
    words: int = 12
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def answer_text(self, prompt: str, index: int = 0) -> str:
        words = [f"w{i}" for i in range(self.words)]
        return f"Answer {index} to {prompt!r}: " + " ".join(words)


def _prompt(path: str, body: dict) -> str:
    if path.endswith("/chat/completions"):
        content = body["messages"][-1]["content"]
        return content if isinstance(content, str) else json.dumps(content)
    if path.endswith("/responses"):
        value = body.get("input")
        return value if isinstance(value, str) else value[-1]["content"]
    return body["prompt"]


def _chat(up: Upstream, body: dict, prompt: str) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"] + "-0613",
            "choices": [{"index": i, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": up.answer_text(prompt, i)}}
                        for i in range(body.get("n") or 1)],
            "usage": {"prompt_tokens": 3, "completion_tokens": up.words,
                      "total_tokens": 3 + up.words}}


def _completion(up: Upstream, body: dict, prompt: str) -> dict:
    return {"id": "cmpl-1", "object": "text_completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": i, "text": up.answer_text(prompt, i), "finish_reason": "length",
                         "logprobs": None} for i in range(body.get("n") or 1)]}


def _response(up: Upstream, body: dict, prompt: str) -> dict:
    return {"id": "resp_1", "object": "response", "created_at": int(time.time()),
            "status": "completed", "model": body["model"],
            "output": [{"type": "message", "id": "msg_1", "status": "completed",
                        "role": "assistant", "content": [
                            {"type": "output_text", "text": up.answer_text(prompt),
                             "annotations": []}]}],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}


def _stream_events(up: Upstream, path: str, body: dict, prompt: str):
    text = up.answer_text(prompt)
    pieces = [w + " " for w in text.split(" ")[:-1]] + [text.split(" ")[-1]]
    if path.endswith("/responses"):
        final = _response(up, body, prompt)
        yield {"type": "response.created", "sequence_number": 0,
               "response": {**final, "status": "in_progress", "output": []}}
        for n, piece in enumerate(pieces):
            yield {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
                   "content_index": 0, "delta": piece, "sequence_number": n + 1}
        yield {"type": "response.completed", "response": final,
               "sequence_number": len(pieces) + 1}
        return
    chat = path.endswith("/chat/completions")
    model = body["model"] + ("-0613" if chat else "")
    for n, piece in enumerate(pieces):
        choice = ({"index": 0, "delta": ({"role": "assistant", "content": piece} if n == 0
                                         else {"content": piece}), "finish_reason": None}
                  if chat else {"index": 0, "text": piece, "finish_reason": None})
        yield {"id": "chatcmpl-1", "object": "chat.completion.chunk" if chat
               else "text_completion", "created": 1, "model": model, "choices": [choice]}
    last = ({"index": 0, "delta": {}, "finish_reason": "stop"} if chat
            else {"index": 0, "text": "", "finish_reason": "stop"})
    yield {"id": "chatcmpl-1", "object": "chat.completion.chunk" if chat else "text_completion",
           "created": 1, "model": model, "choices": [last]}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, chunked streams
    # headers and body are separate writes: with Nagle on, the body waits for a delayed ACK
    disable_nagle_algorithm = True
    upstream: Upstream

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, payload: dict, extra: dict | None = None) -> None:
        raw = json.dumps(payload).encode()
        headers = {"content-type": "application/json", "x-request-id": "req-standin"}
        if self.upstream.gzip and "gzip" in self.headers.get("accept-encoding", ""):
            raw = gzip.compress(raw)
            headers["content-encoding"] = "gzip"
        self.send_response(status)
        for k, v in {**headers, **(extra or {})}.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._record(b"")
        if self.path.startswith("/v1/models"):
            self._send(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def _record(self, body: bytes) -> None:
        with self.upstream._lock:
            self.upstream.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                           body))

    def do_POST(self) -> None:
        body_raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        self._record(body_raw)
        body = json.loads(body_raw)
        path = self.path.split("?", 1)[0]
        builders = {"/v1/chat/completions": _chat, "/v1/completions": _completion,
                    "/v1/responses": _response}
        if path not in builders:
            self._send(404, {"error": {"message": f"no route {path}"}})
            return
        prompt = _prompt(path, body)
        for status in (429, 500):
            if f"FAIL{status}" in prompt:
                self._send(status, {"error": {"message": f"injected {status}",
                                              "type": "standin", "code": None}},
                           {"retry-after": "0"} if status == 429 else None)
                return
        if not body.get("stream"):
            self._send(200, builders[path](self.upstream, body, prompt))
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for event in _stream_events(self.upstream, path, body, prompt):
            self._chunk(f"data: {json.dumps(event)}\n\n".encode())
            if self.upstream.chunk_delay:
                time.sleep(self.upstream.chunk_delay)
        if not path.endswith("/responses"):
            self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


@contextmanager
def openai_upstream(**options):
    """A running stand-in on a free loopback port (in a thread of this process)."""
    up = Upstream(**options)
    handler = type("Handler", (_Handler,), {"upstream": up})
    server = ThreadingHTTPServer(("127.0.0.1", up.port), handler)
    server.daemon_threads = True
    up.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield up
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--words", type=int, default=12)
    args = parser.parse_args()
    with openai_upstream(port=args.port, chunk_delay=args.chunk_delay, words=args.words) as up:
        print(f"listening on {up.base_url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
