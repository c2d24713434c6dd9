"""The SDK's cost in the caller's thread, and its sustained rate into a running API.

1. ``record()`` in the caller's thread while the background thread ships the samples to a
   real ``collapsewatch api``: the mean of a back-to-back loop timed as a whole, and the
   mean, p50 and p99 of each call timed alone (the timer's own cost is printed, not
   subtracted); back to back and paced at 10,000 calls/s. Side by side with what a caller would
   otherwise pay to hand work to another thread: ``queue.Queue.put_nowait`` and a
   ``logging`` call through a ``QueueHandler``. Goal: ``record()`` mean <= 5 us.
2. Sustained end-to-end rate: 50,000 samples recorded as fast as one thread can, until
   ``flush()`` says the server acknowledged all of them (checked in ``samples_ingested``).

    .venv/bin/python -m benchmarks.sdk                         # SQLite
    .venv/bin/python -m benchmarks.sdk --databases sqlite,postgresql
    .venv/bin/python -m benchmarks.sdk --url http://127.0.0.1:8000 --key cw_... --model m
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import math
import os
import queue
import sys
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.ingest import api_on
from collectors import Client


def _texts(n: int) -> list[str]:
    from service.demo.sample_data import human_documents

    docs = human_documents()
    return [docs[i % len(docs)] for i in range(n)]


def _timer_cost(n: int = 200_000) -> float:
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in range(n):
        clock()
    return (clock() - t0) / n / 1000


def _stats(ns: list[int]) -> tuple[float, float, float]:
    ns.sort()
    return (sum(ns) / len(ns) / 1000, ns[len(ns) // 2] / 1000, ns[int(len(ns) * 0.99)] / 1000)


def _per_call(fn, texts: list[str]) -> tuple[float, float, float, float]:
    """(bulk mean, timed mean, p50, p99) in microseconds of ``fn(text)`` called back to back."""
    t0 = time.perf_counter()
    for text in texts:
        fn(text)
    bulk = (time.perf_counter() - t0) / len(texts) * 1e6
    clock = time.perf_counter_ns
    samples = []
    for text in texts:
        t = clock()
        fn(text)
        samples.append(clock() - t)
    return (bulk, *_stats(samples))


def _paced(fn, texts: list[str], rate: float) -> tuple[float, float, float, float]:
    """The same at ``rate`` calls per second (bursts of 50, then sleep): the serving path."""
    clock = time.perf_counter_ns
    samples = []
    began = time.perf_counter()
    for start in range(0, len(texts), 50):
        for text in texts[start:start + 50]:
            t = clock()
            fn(text)
            samples.append(clock() - t)
        ahead = (start + 50) / rate - (time.perf_counter() - began)
        if ahead > 0:
            time.sleep(ahead)
    mean, p50, p99 = _stats(samples)
    return (float("nan"), mean, p50, p99)


def caller_cost(base: str, key: str, model: str, n: int,
                paced_rate: float) -> list[tuple[str, float, float, float, float]]:
    texts = _texts(n)
    rows = []
    cases = (
        ("record(text)", {}, lambda c: c.record, None),
        ("record(text, prompt, attributes)", {},
         lambda c: lambda t: c.record(t, prompt="p", attributes={"temperature": 0.7}), None),
        ("record(text), sample_rate=0.5", {"sample_rate": 0.5}, lambda c: c.record, None),
        (f"record(text) at {paced_rate:,.0f}/s", {}, lambda c: c.record, paced_rate),
    )
    for label, kwargs, record, rate in cases:
        client = Client(base, key, model, max_queue=4 * n, **kwargs)
        try:
            fn = record(client)
            rows.append((label, *(_per_call(fn, texts) if rate is None
                                  else _paced(fn, texts, rate))))
            if not client.flush(300):
                raise SystemExit(f"{label}: the server did not take the samples")
            stats = client.stats()
            if stats.dropped or stats.rejected:
                raise SystemExit(f"{label}: dropped {stats.dropped}, rejected {stats.rejected}")
        finally:
            client.close()

    q: queue.Queue = queue.Queue()
    rows.append(("peer: queue.Queue.put_nowait", *_per_call(q.put_nowait, texts)))
    sink: queue.SimpleQueue = queue.SimpleQueue()
    logger = logging.getLogger("benchmarks.sdk.peer")
    logger.propagate = False
    logger.handlers[:] = [logging.handlers.QueueHandler(sink)]
    logger.setLevel(logging.INFO)
    rows.append(("peer: logging.info + QueueHandler",
                 *_per_call(lambda t: logger.info("%s", t), texts)))
    return rows


def sustained_rate(base: str, key: str, model: str, n: int) -> tuple[float, float, int]:
    """(samples/s, seconds, samples the server counted) for ``n`` samples end to end."""
    texts = _texts(n)
    run = uuid.uuid4().hex[:8]
    headers = {"Authorization": f"Bearer {key}"}
    before = httpx.get(f"{base}/api/v1/models/{model}", headers=headers).json()
    client = Client(base, key, model, max_queue=n + 1, batch_size=500)
    try:
        t0 = time.perf_counter()
        for i, text in enumerate(texts):
            client.record(text, id=f"{run}-{i}")
        if not client.flush(600):
            raise SystemExit("the server did not take every sample within 600 s")
        seconds = time.perf_counter() - t0
    finally:
        client.close()
    after = httpx.get(f"{base}/api/v1/models/{model}", headers=headers).json()
    return n / seconds, seconds, after["samples_ingested"] - before["samples_ingested"]


def report(where: str, base: str, key: str, model: str, args) -> None:
    rows = caller_cost(base, key, model, args.calls, args.paced_rate)
    rate, seconds, counted = sustained_rate(base, key, model, args.samples)
    print(
        f"\n## {where}  (load average {os.getloadavg()[0]:.2f}, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]})"
    )
    print(
        f"caller's thread, {args.calls:,} calls each; per-call timer cost "
        f"{_timer_cost():.3f} us (included in p50/p99)"
    )
    print("bulk = a back-to-back loop timed as a whole (includes the time the background "
          "thread holds the GIL); timed = each call timed alone")
    print(f"{'call':36} {'bulk mean':>10} {'timed mean':>11} {'p50':>8} {'p99':>8}  (us)")
    for label, bulk, mean, p50, p99 in rows:
        bulk_text = "-" if math.isnan(bulk) else f"{bulk:.3f}"
        print(f"{label:36} {bulk_text:>10} {mean:11.3f} {p50:8.3f} {p99:8.3f}")
    print(
        f"sustained: {args.samples:,} samples recorded and acknowledged in {seconds:.2f} s "
        f"= {rate:,.0f} samples/s (server counted {counted:,})"
    )
    if counted != args.samples:
        raise SystemExit(f"server counted {counted} samples, expected {args.samples}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="sqlite")
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--paced-rate", type=float, default=10_000,
                        help="calls per second of the paced row (default 10,000)")
    parser.add_argument("--url", help="target a running server instead of starting one")
    parser.add_argument("--key", help="ingest key for --url")
    parser.add_argument("--model", help="existing model for --url")
    args = parser.parse_args(argv)
    if args.url:
        if not (args.key and args.model):
            parser.error("--url needs --key and --model")
        report(args.url, args.url.rstrip("/"), args.key, args.model, args)
        return 0
    for database in args.databases.split(","):
        if database not in ("sqlite", "postgresql"):
            parser.error(f"unknown database {database!r}; use sqlite or postgresql")
        with api_on(database) as (base, key, model):
            report(f"collapsewatch api on {database}", base, key, model, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
