"""The recording proxy: the official openai client → `collapsewatch collect proxy` (a process) →
a loopback OpenAI stand-in, with completions recorded into the real API process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from contextlib import ExitStack, contextmanager

import httpx
import openai
import pytest

from collectors.proxy import (
    RecordingProxy,
    _serve,
    completions_of,
    completions_of_stream,
    parse_listen,
    prompt_of,
)
from tests.collectors.harness import COLLAPSEWATCH, ApiServer, create_model, stored, wait_until
from tests.collectors.openai_upstream import openai_upstream
from tests.support import free_port, process, wait_http

SECRET = "sk-caller-secret-0123456789"


@pytest.fixture
def database_url(tmp_path):
    """The proxy is a collector: one database (SQLite) is enough to see what it recorded."""
    from service.domain.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'collapsewatch.db'}"
    upgrade(url)
    return url


class Stack:
    def __init__(self, api: ApiServer, upstream, proxy, proxy_url: str, log_path) -> None:
        self.api, self.upstream, self.proxy, self.url, self.log_path = (
            api, upstream, proxy, proxy_url, log_path)

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=SECRET, max_retries=0)


@pytest.fixture
def start_stack(service_env, tmp_path):
    """Starts API process + stand-in upstream + proxy process: ``start_stack(*flags, **up)``."""
    key = create_model("chat-v3")
    with ExitStack() as cleanup:
        def start(*flags: str, key: str = key, **upstream_options) -> Stack:
            api = ApiServer(service_env, tmp_path)
            api.start()
            cleanup.callback(api.stop)
            upstream = cleanup.enter_context(openai_upstream(**upstream_options))
            port = free_port()
            log_path = tmp_path / "proxy.log"
            args = [COLLAPSEWATCH, "collect", "proxy", "--listen", f"127.0.0.1:{port}",
                    "--upstream", upstream.base_url, "--collapsewatch-url", api.url,
                    "--spool-dir", str(tmp_path / "spool"),
                    *(flags or ("--model", "chat-v3"))]
            env = {**service_env, "COLLAPSEWATCH_INGEST_KEY": key,
                   "COLLAPSEWATCH_LOG_LEVEL": "DEBUG"}
            proxy = cleanup.enter_context(process(args, log_path, env=env))
            wait_http(f"http://127.0.0.1:{port}/v1/models", timeout=30, proc=proxy.popen)
            return Stack(api, upstream, proxy, f"http://127.0.0.1:{port}", log_path)

        yield start


@pytest.fixture
def stack(start_stack) -> Stack:
    return start_stack()


def _stored_texts(database_url: str, model: str = "chat-v3", n: int = 1) -> list:
    return wait_until(lambda: (rows := stored(database_url, model)) and len(rows) >= n and rows,
                      30, f"{n} stored samples")


def test_chat_completion_through_the_proxy_is_answered_unchanged_and_recorded(
        stack, database_url):
    client = stack.openai()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "When does it ship?"}])
    answer = raw.parse()
    assert answer.choices[0].message.content == stack.upstream.answer_text("When does it ship?")
    assert raw.headers["x-request-id"] == "req-standin"  # upstream headers come back
    seen = stack.upstream.seen[-1]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {SECRET}"  # forwarded to the upstream
    [(_, text, attributes)] = _stored_texts(database_url)
    assert text == answer.choices[0].message.content
    assert attributes == {"source": "proxy", "endpoint": "chat",
                          "upstream_model": "gpt-4o-0613", "finish_reason": "stop"}
    assert SECRET not in stack.proxy.log()


def test_streamed_chat_is_passed_chunk_by_chunk_and_recorded_reassembled(stack, database_url):
    client = stack.openai()
    stream = client.chat.completions.create(
        model="gpt-4o", stream=True, messages=[{"role": "user", "content": "Stream it."}])
    expected = stack.upstream.answer_text("Stream it.")
    pieces = [c.choices[0].delta.content for c in stream
              if c.choices and c.choices[0].delta.content]
    assert len(pieces) == len(expected.split(" "))  # one chunk per word, as sent
    assert "".join(pieces) == expected
    [(_, text, attributes)] = _stored_texts(database_url)
    assert text == expected and attributes["endpoint"] == "chat"


def test_stream_chunks_reach_the_caller_before_the_upstream_finishes(start_stack, database_url):
    stack = start_stack(chunk_delay=0.3)
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", timeout=30, json={
            "model": "m", "stream": True,
            "messages": [{"role": "user", "content": "slow"}]}) as response:
        began = time.monotonic()
        chunks = response.iter_raw()
        first = next(chunks)
        first_at = time.monotonic() - began
        rest = b"".join(chunks)
        total = time.monotonic() - began
    assert first.startswith(b"data: ")
    # the stand-in needs about 17 * 0.3 s for the whole stream
    assert first_at < 0.3 * 3 < total
    assert b"[DONE]" in rest
    _stored_texts(database_url)


def test_completions_and_responses_endpoints_plain_and_streamed(stack, database_url):
    client = stack.openai()
    done = client.completions.create(model="davinci", prompt="Once upon a time", n=2)
    assert [c.text for c in done.choices] == [
        stack.upstream.answer_text("Once upon a time", i) for i in range(2)]
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="davinci", prompt="Streamed tale", stream=True))
    response = client.responses.create(model="gpt-4.1", input="Say hi.")
    assert response.output_text == stack.upstream.answer_text("Say hi.")
    events = list(client.responses.create(model="gpt-4.1", input="Say it streamed.",
                                          stream=True))
    assert events[-1].type == "response.completed"
    rows = _stored_texts(database_url, n=5)
    assert sorted(text for _, text, _ in rows) == sorted([
        *(stack.upstream.answer_text("Once upon a time", i) for i in range(2)), streamed,
        stack.upstream.answer_text("Say hi."), stack.upstream.answer_text("Say it streamed.")])
    assert sorted(a["endpoint"] for _, _, a in rows) == [
        "completions", "completions", "completions", "responses", "responses"]
    ids = [i for i, _, _ in rows]
    assert len(set(ids)) == 5


def test_upstream_errors_pass_through_as_is_and_nothing_is_recorded(stack, database_url):
    client = stack.openai()
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="m", messages=[
            {"role": "user", "content": "FAIL429 please"}])
    assert caught.value.response.headers["retry-after"] == "0"
    assert caught.value.body == {"message": "injected 429", "type": "standin", "code": None}
    with pytest.raises(openai.InternalServerError):
        client.completions.create(model="m", prompt="FAIL500")
    missing = httpx.post(f"{stack.url}/v1/embeddingz", json={"x": 1})
    assert missing.status_code == 404 and "no route" in missing.json()["error"]["message"]
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "ok"}])
    rows = _stored_texts(database_url)
    assert [t for _, t, _ in rows] == [stack.upstream.answer_text("ok")]


def test_model_from_response_and_gzip_bodies(start_stack, database_url):
    from service.domain.db import session_scope
    from service.domain.keys import create_key

    with session_scope() as session:
        unlimited = create_key(session, "ingest")  # writes to whichever model answered
    stack = start_stack("--model-from-response", key=unlimited, gzip=True)
    create_model("gpt-4o-0613")
    client = stack.openai()
    answer = client.chat.completions.create(model="gpt-4o", messages=[
        {"role": "user", "content": "zip it"}])
    assert answer.choices[0].message.content == stack.upstream.answer_text("zip it")
    # the caller gets the upstream's compressed bytes unchanged
    raw = httpx.post(f"{stack.url}/v1/chat/completions", headers={"accept-encoding": "gzip"},
                     json={"model": "gpt-4o", "messages": [{"role": "user", "content": "b"}]})
    assert raw.headers["content-encoding"] == "gzip"
    rows = _stored_texts(database_url, model="gpt-4o-0613", n=2)
    assert sorted(t for _, t, _ in rows) == sorted(
        [stack.upstream.answer_text("zip it"), stack.upstream.answer_text("b")])


def test_collapsewatch_down_neither_blocks_nor_fails_the_caller(stack, database_url):
    stack.api.stop()
    client = stack.openai()
    for i in range(5):
        answer = client.chat.completions.create(model="m", messages=[
            {"role": "user", "content": f"while down {i}"}], timeout=10)
        assert answer.choices[0].message.content.startswith("Answer 0")
    stack.api.start()
    rows = _stored_texts(database_url, n=5)  # replayed from the spool
    assert len(rows) == 5


def test_proxy_process_exits_with_a_one_line_error_on_bad_flags(service_env, tmp_path):
    env = {**os.environ, **service_env, "COLLAPSEWATCH_INGEST_KEY": "k"}
    for flags, message in (
            (["--upstream", "http://x/v1"], "--model"),
            (["--upstream", "ftp://x", "--model", "m"], "not an http(s) URL"),
            (["--upstream", "http://x/v1", "--model", "m", "--listen", "nope"], "HOST:PORT"),
            (["--upstream", "http://x/v1", "--model", "m", "--sample-rate", "2"], "sample")):
        result = subprocess.run([COLLAPSEWATCH, "collect", "proxy", *flags], env=env, check=False,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


# -- pure pieces -----------------------------------------------------------------------------

def test_sample_rate_is_decided_per_request_before_anything_is_buffered():
    proxy = RecordingProxy("http://127.0.0.1:1/v1", None, model="m", sample_rate=0.25)
    kept = [proxy.sample_id() for _ in range(4000)]
    assert 800 <= sum(k is not None for k in kept) <= 1200
    assert proxy.stats.sampled_out == sum(k is None for k in kept)
    assert len({k for k in kept if k}) == sum(k is not None for k in kept)  # ids are unique


def test_prompt_and_completion_readers():
    assert prompt_of("chat", {"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": [{"type": "text", "text": "c"}]}]}) == "c"
    assert prompt_of("completions", {"prompt": ["p1", "p2"]}) == "p1"
    assert prompt_of("responses", {"input": [{"role": "user", "content": "r"}]}) == "r"
    assert prompt_of("chat", "not a dict") is None
    assert completions_of("chat", {"choices": [{"index": 0, "message": {"content": None,
                                                                        "tool_calls": []}}]}) == []
    stream = b"".join(
        f"data: {json.dumps(e)}\r\n\r\n".encode() for e in (
            {"model": "x", "choices": [{"index": 1, "delta": {"content": "B"}}]},
            {"choices": [{"index": 0, "delta": {"content": "A1"}}]},
            {"choices": [{"index": 0, "delta": {"content": "A2"}, "finish_reason": "stop"}]},
        )) + b": comment\n\ndata: [DONE]\n\n"
    found = completions_of_stream("chat", stream, "p")
    assert [(c.text, c.model, c.finish_reason) for c in found] == [
        ("A1A2", "x", "stop"), ("B", "x", None)]
    # a responses stream without its completed event was cut short: nothing to record
    cut = b'data: {"type": "response.output_text.delta", "delta": "half"}\n\n'
    assert completions_of_stream("responses", cut) == []


def test_listen_target_and_recorded_endpoints():
    assert parse_listen("127.0.0.1:8088") == ("127.0.0.1", 8088)
    assert parse_listen("[::1]:9") == ("::1", 9)
    for bad in ("8088", "host:", "h:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)
    proxy = RecordingProxy("https://api.example.com/v1/", None, model="m")
    assert proxy.target(b"/v1/chat/completions") == b"/v1/chat/completions"
    assert proxy.target(b"/v1/models?a=1") == b"/v1/models?a=1"
    assert proxy.target(b"/healthz") == b"/healthz"
    nested = RecordingProxy("http://gateway:8080/openai/v1", None, model="m")
    assert nested.target(b"/v1/chat/completions") == b"/openai/v1/chat/completions"
    bare = RecordingProxy("http://vllm:8000", None, model="m")
    assert bare.target(b"/v1/chat/completions") == b"/v1/chat/completions"
    prefixed = RecordingProxy("http://gateway/llm/", None, model="m")
    assert prefixed.target(b"/v1/completions") == b"/llm/v1/completions"
    assert proxy.endpoint(b"POST", b"/v1/chat/completions") == "chat"
    assert proxy.endpoint(b"POST", b"/v1/completions/?x=1") == "completions"
    assert proxy.endpoint(b"POST", b"/v1/responses") == "responses"
    assert proxy.endpoint(b"GET", b"/v1/responses") is None
    assert proxy.endpoint(b"POST", b"/v1/embeddings") is None
    with pytest.raises(ValueError):
        RecordingProxy("https://x/v1", None, model="m", model_from_response=True)


# -- the transport, with the proxy in a thread of this process -------------------------------

class Collected:
    """A recorder that keeps what it is given (the SDK path is tested above)."""

    def __init__(self) -> None:
        self.samples: list[tuple[str, str, str]] = []

    def record(self, model, sample_id, completion) -> bool:
        self.samples.append((model, sample_id, completion.text))
        return True

    def close(self) -> None:
        pass


@contextmanager
def proxy_in_thread(upstream: str, **options):
    import threading

    port = free_port()
    collected = Collected()
    proxy = RecordingProxy(upstream, collected, model="m", **options)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(_serve(proxy, "127.0.0.1", port,
                                                                 stop.is_set)), daemon=True)
    thread.start()
    try:
        wait_until(lambda: _listening(port), 10, "the proxy to listen")
        yield f"http://127.0.0.1:{port}", proxy, collected
    finally:
        stop.set()
        thread.join(10)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_dead_pooled_upstream_connection_does_not_fail_the_next_call():
    with openai_upstream() as up, proxy_in_thread(up.base_url) as (url, proxy, collected):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}])
        # kept alive for the next call (put back right after the caller has the last byte)
        wait_until(lambda: len(proxy._idle) == 1, 10, "the upstream connection in the pool")
        # the pooled connection dies (an upstream restart, an idle timeout on its side):
        # the next call must not see it
        import socket

        proxy._idle[0].writer.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        answer = client.chat.completions.create(model="m", messages=[
            {"role": "user", "content": "b"}])
        assert answer.choices[0].message.content == up.answer_text("b")
        # recorded right after the caller has the last byte
        wait_until(lambda: len(collected.samples) == 2, 10, "the second completion")
        assert [t for _, _, t in collected.samples] == [up.answer_text("a"), up.answer_text("b")]


def test_unreachable_upstream_is_a_502_in_the_openai_error_shape():
    with proxy_in_thread(f"http://127.0.0.1:{free_port()}/v1") as (url, proxy, collected):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert caught.value.status_code == 502
        assert caught.value.body["code"] == "upstream_unreachable"
        assert proxy.stats.upstream_unreachable == 1 and collected.samples == []


def test_chunked_request_bodies_and_expect_100_continue_are_forwarded_with_a_length():
    with openai_upstream() as up, proxy_in_thread(up.base_url) as (url, _, collected):
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "chunks"}]})

        def pieces():
            yield body[:10].encode()
            yield body[10:].encode()

        answer = httpx.post(f"{url}/v1/chat/completions", content=pieces(),
                            headers={"expect": "100-continue"})
        assert answer.status_code == 200
        seen = up.seen[-1]
        assert seen.body == body.encode() and seen.headers["content-length"] == str(len(body))
        assert "transfer-encoding" not in seen.headers and "expect" not in seen.headers
        # garbage instead of HTTP gets a 400, not a hang
        import socket

        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as raw:
            raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.1 400")
        wait_until(lambda: collected.samples, 10, "the completion")
    assert [t for _, _, t in collected.samples] == [up.answer_text("chunks")]


def test_concurrent_streams_and_calls_each_get_their_own_answer_and_record():
    from concurrent.futures import ThreadPoolExecutor

    with openai_upstream(chunk_delay=0.01) as up, proxy_in_thread(up.base_url) as (url, proxy,
                                                                                  collected):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)

        def call(i: int) -> str:
            messages = [{"role": "user", "content": f"caller {i}"}]
            if i % 2:
                return client.chat.completions.create(model="m", messages=messages
                                                      ).choices[0].message.content
            stream = client.chat.completions.create(model="m", messages=messages, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(call, range(48)))
        assert answers == [up.answer_text(f"caller {i}") for i in range(48)]
        wait_until(lambda: len(collected.samples) == 48, 10, "48 recorded completions")
        assert sorted(t for _, _, t in collected.samples) == sorted(answers)
        assert proxy.stats.upstream_unreachable == 0
