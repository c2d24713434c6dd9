"""The SDK client against a real loopback HTTP server that records what it receives."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time

import pytest

from collectors import Client, SpoolError, keeps
from tests.collectors.harness import wait_until
from tests.support import REPO, free_port, recording_server

JSON = {"content-type": "application/json"}


def _accept(rec):
    n = len(rec.json()["samples"])
    return 202, JSON, json.dumps({"accepted": n, "duplicates": 0}).encode()


def _samples(server) -> list[dict]:
    """Samples of the requests the server recorded (custom responders may refuse some)."""
    return [s for r in server.received() if r.method == "POST" for s in r.json()["samples"]]


class Accepted:
    """Samples a custom responder accepted (the recording server also keeps refused ones)."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def __call__(self, rec):
        self.ids.extend(s["id"] for s in rec.json()["samples"])
        return _accept(rec)


def _ids(server) -> list[str]:
    return [s["id"] for s in _samples(server)]


@pytest.fixture
def server():
    with recording_server(_accept) as srv:
        yield srv


def test_record_batches_by_size_and_sends_ids_timestamps_and_fields(server):
    with Client(server.url, "key-1", "m/1", batch_size=10, flush_interval=60) as client:
        for i in range(25):
            client.record(f"text {i}", prompt="why?", attributes={"i": i})
        requests = server.wait_for(2, timeout=10)
        assert [len(r.json()["samples"]) for r in requests[:2]] == [10, 10]
        assert client.flush(10)
    posts = server.received()
    assert posts[0].path == "/api/v1/models/m%2F1/samples"
    assert posts[0].headers["Authorization"] == "Bearer key-1"
    samples = _samples(server)
    assert [s["text"] for s in samples] == [f"text {i}" for i in range(25)]
    assert len({s["id"] for s in samples}) == 25
    assert all(s["prompt"] == "why?" for s in samples)
    assert all(abs(s["timestamp"] - time.time()) < 60 for s in samples)  # Unix seconds
    assert samples[3]["attributes"] == {"i": 3}


def test_record_batches_by_time_when_the_batch_does_not_fill(server):
    with Client(server.url, "k", "m", batch_size=1000, flush_interval=0.2) as client:
        for i in range(3):
            client.record(f"t{i}")
        # the timer sends them although the batch never fills (on a loaded machine it may
        # fire between two record() calls, so they can arrive in more than one request)
        wait_until(lambda: len(_samples(server)) == 3, 10, "the three samples")
        assert [s["text"] for s in _samples(server)] == ["t0", "t1", "t2"]
        assert len(server.received()) <= 3
        # the client counts a batch as sent once it has read the response
        wait_until(lambda: client.stats().sent == 3, 10, "the client to count them sent")


def test_explicit_id_and_timestamp_are_sent_as_given(server):
    from datetime import UTC, datetime

    with Client(server.url, "k", "m") as client:
        client.record("a", id="req-1", timestamp=0.0)
        client.record("b", id="req-2", timestamp=datetime(2024, 5, 1, 12, tzinfo=UTC))
        assert client.flush(10)
    samples = _samples(server)
    assert [(s["id"], s["timestamp"]) for s in samples] == [
        ("req-1", 0.0), ("req-2", "2024-05-01T12:00:00+00:00")]


def test_bad_arguments_are_refused_in_the_callers_thread(server):
    with Client(server.url, "k", "m") as client:
        with pytest.raises(TypeError, match="text must be str"):
            client.record(b"bytes")
        with pytest.raises(ValueError, match="at most 200"):
            client.record("x", id="i" * 201)
    with pytest.raises(ValueError, match="sample_rate"):
        Client(server.url, "k", "m", sample_rate=0)


def test_5xx_is_retried_with_backoff_until_accepted(server):
    server.fail_next(503, 3)
    with Client(server.url, "k", "m", batch_size=5, backoff_base=0.05, backoff_max=0.2) as client:
        for i in range(5):
            client.record(f"t{i}", id=f"id{i}")
        wait_until(lambda: client.stats().sent == 5, 20, "delivery after three 503s")
        stats = client.stats()
    assert _ids(server) == [f"id{i}" for i in range(5)]
    assert stats.failed_requests == 3 and stats.retried == 3 and stats.dropped == 0


def test_retry_after_from_a_429_is_respected():
    times: list[float] = []

    def responder(rec):
        times.append(time.monotonic())
        if len(times) == 1:
            return 429, {**JSON, "retry-after": "1"}, b'{"detail": "slow down"}'
        return _accept(rec)

    with recording_server(responder) as srv, Client(srv.url, "k", "m", backoff_base=0.01) as client:
        client.record("x")
        wait_until(lambda: client.stats().sent == 1, 20, "delivery after a 429")
    assert times[1] - times[0] >= 0.9


def test_4xx_is_not_retried_and_the_refusal_is_counted_and_logged(caplog):
    def responder(rec):
        return 404, {"content-type": "application/problem+json"}, \
            b'{"status": 404, "detail": "model \'m\' does not exist"}'

    caplog.set_level(logging.ERROR, "collectors.client")
    with recording_server(responder) as srv, Client(srv.url, "k", "m") as client:
        for i in range(7):
            client.record(f"t{i}")
        assert client.flush(10)
        stats = client.stats()
    assert len(srv.received()) == 1
    assert stats.rejected == 7 and stats.sent == 0 and stats.spool_pending == 0
    assert "does not exist" in caplog.text


def test_413_splits_the_batch_until_it_fits():
    accepted = Accepted()

    def responder(rec):
        if len(rec.json()["samples"]) > 4:
            return 413, JSON, b'{"detail": "too large"}'
        return accepted(rec)

    with recording_server(responder) as srv, Client(srv.url, "k", "m", batch_size=20) as client:
        for i in range(20):
            client.record(f"t{i}", id=f"id{i}")
        assert client.flush(10)
        stats = client.stats()
    assert accepted.ids == [f"id{i}" for i in range(20)]
    assert stats.sent == 20 and stats.rejected == 0


def test_422_isolates_the_bad_sample_and_delivers_its_neighbours():
    accepted = Accepted()

    def responder(rec):
        if any(s["text"] == "bad" for s in rec.json()["samples"]):
            return 422, JSON, b'{"detail": "samples.0.text: invalid"}'
        return accepted(rec)

    with recording_server(responder) as srv, Client(srv.url, "k", "m", batch_size=16) as client:
        for i in range(16):
            client.record("bad" if i == 9 else f"t{i}", id=f"id{i}")
        assert client.flush(10)
        stats = client.stats()
    assert accepted.ids == [f"id{i}" for i in range(16) if i != 9]
    assert stats.rejected == 1 and stats.sent == 15


def test_samples_that_are_not_json_are_counted_invalid_not_sent(server):
    with Client(server.url, "k", "m") as client:
        client.record("ok", id="a", attributes={"when": time.gmtime(0), "tags": {1, 2}})
        client.record("nan", id="b", attributes={"score": float("nan")})
        client.record("ok2", id="c")
        assert client.flush(10)
        stats = client.stats()
    assert _ids(server) == ["a", "c"]  # values json cannot encode become strings
    assert stats.invalid == 1


def test_unreachable_server_spools_to_disk_and_a_new_client_replays_in_order(tmp_path):
    spool = tmp_path / "spool"
    dead = f"http://127.0.0.1:{free_port()}"
    client = Client(dead, "k", "m", batch_size=10, spool_dir=spool, backoff_base=0.05)
    for i in range(45):
        client.record(f"t{i}", id=f"id{i}")
    assert client.flush(10)  # durable: on disk
    stats = client.stats()
    assert stats.spooled == 45 and stats.spool_pending == 45 and stats.sent == 0
    client.close(timeout=0.5)
    assert list(spool.glob("*.seg"))

    with recording_server(_accept) as srv:
        again = Client(srv.url, "k", "m", spool_dir=spool)
        wait_until(lambda: again.stats().spool_pending == 0, 20, "replay of the spool")
        again.close()
        assert _ids(srv) == [f"id{i}" for i in range(45)]
        assert again.stats().replayed == 45
    assert not list(spool.glob("*.seg"))


def test_a_spool_directory_has_one_owner(tmp_path, server):
    with Client(server.url, "k", "m", spool_dir=tmp_path / "s"), \
            pytest.raises(SpoolError, match="in use by another process"):
        Client(server.url, "k", "m", spool_dir=tmp_path / "s")


def test_full_queue_drops_the_oldest_and_counts_it(caplog):
    release = threading.Event()

    def responder(rec):
        release.wait(10)  # the first request stalls the background thread
        return _accept(rec)

    caplog.set_level(logging.WARNING, "collectors.client")
    with recording_server(responder) as srv:
        client = Client(srv.url, "k", "m", batch_size=10, max_queue=100, flush_interval=60)
        for i in range(10):
            client.record(f"t{i}", id=f"id{i}")
        srv.wait_for(1, timeout=10)
        for i in range(10, 500):
            client.record(f"t{i}", id=f"id{i}")
        assert client.stats().queued == 100
        release.set()
        assert client.flush(20)
        client.close()
        stats = client.stats()
        received = _ids(srv)
    assert stats.dropped_queue_full == 390 and stats.dropped == 390
    assert stats.recorded == 500 and stats.sent == 110
    assert received == [f"id{i}" for i in range(10)] + [f"id{i}" for i in range(400, 500)]
    assert "dropped the oldest samples: 390" in caplog.text


def test_sample_rate_keeps_the_same_ids_every_time(server):
    ids = [f"req-{i}" for i in range(2000)]
    with Client(server.url, "k", "m", sample_rate=0.3) as client:
        kept = [client.record("x", id=i) for i in ids]
        assert client.flush(10)
        stats = client.stats()
    expected = [i for i in ids if keeps(i, 0.3)]
    assert _ids(server) == expected == [i for i, k in zip(ids, kept, strict=True) if k]
    assert stats.sampled_out == len(ids) - len(expected)
    assert 0.25 < len(expected) / len(ids) < 0.35
    # a fresh process decides the same (the hash is not Python's per-process hash())
    code = ("from collectors import keeps; import sys; "
            "print(sum(keeps(f'req-{i}', 0.3) for i in range(2000)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert int(out) == len(expected)


def test_close_sends_what_is_queued_and_later_records_are_counted(server):
    client = Client(server.url, "k", "m", batch_size=1000, flush_interval=60)
    for i in range(30):
        client.record(f"t{i}")
    client.close()
    assert len(_ids(server)) == 30
    assert client.record("late") is False
    assert client.stats().dropped_after_close == 1


def test_close_with_a_memory_spool_counts_what_is_lost(caplog):
    caplog.set_level(logging.ERROR, "collectors.client")
    client = Client(f"http://127.0.0.1:{free_port()}", "k", "m", batch_size=10)
    for i in range(25):
        client.record(f"t{i}")
    assert client.flush(0.5) is False  # a memory spool is not durable
    client.close(timeout=0.5)
    stats = client.stats()
    assert stats.dropped_on_close == 25 and stats.dropped == 25
    assert "they are lost" in caplog.text


def test_interpreter_exit_flushes_what_was_recorded(server):
    code = (
        "from collectors import Client\n"
        f"c = Client({server.url!r}, 'k', 'm', batch_size=1000, flush_interval=3600)\n"
        "for i in range(123):\n"
        "    c.record(f't{i}', id=f'exit-{i}')\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
    assert _ids(server) == [f"exit-{i}" for i in range(123)]


def test_many_threads_record_concurrently_without_loss_or_duplicates(server):
    threads, per_thread = 8, 2000
    with Client(server.url, "k", "m", batch_size=500, max_queue=100_000) as client:
        def work(t: int) -> None:
            for i in range(per_thread):
                client.record(f"thread {t} sample {i}")

        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        assert client.flush(30)
        stats = client.stats()
    ids = _ids(server)
    assert len(ids) == len(set(ids)) == threads * per_thread
    assert stats.recorded == stats.sent == threads * per_thread


def test_flush_returns_while_another_thread_keeps_recording(server):
    stop = threading.Event()
    with Client(server.url, "k", "m", batch_size=200, max_queue=1_000_000) as client:
        def flood() -> None:  # 5,000 samples/s: more than a serving path, less than overload
            while not stop.is_set():
                for _ in range(50):
                    client.record("flood")
                time.sleep(0.01)

        thread = threading.Thread(target=flood)
        thread.start()
        try:
            client.record("mine", id="mine")
            assert client.flush(20)
            assert "mine" in _ids(server)
        finally:
            stop.set()
            thread.join()


def test_use_from_asyncio(server):
    async def main() -> int:
        async with Client(server.url, "k", "m") as client:
            async def handler(i: int) -> None:
                await asyncio.sleep(0)
                client.record(f"async {i}")  # never blocks the event loop

            await asyncio.gather(*(handler(i) for i in range(50)))
            assert await client.aflush(10)
            return client.stats().sent

    assert asyncio.run(main()) == 50
    assert len(_ids(server)) == 50


def test_the_sdk_imports_without_the_server_parts():
    code = (
        "import sys\n"
        "import collectors, collectors.client, collectors.prober, collectors.tail\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'service', 'fastapi', 'sqlalchemy', 'celery', 'pydantic', 'numpy'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.strip()
    assert out == ""
