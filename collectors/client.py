"""The push SDK: ``Client.record()`` in the serving path, everything else in one background thread.

Guarantees and their limits
---------------------------
- ``record()`` never blocks and never does I/O: it checks its arguments, makes an id and
  appends a tuple to an in-memory queue (a ``collections.deque``; appends are atomic, so
  callers take no lock). Encoding, batching, HTTP and disk happen in the background thread.
- **Queue full policy: drop oldest.** The queue holds at most ``max_queue`` samples (plus at
  most one per thread recording at that very moment). When it is full, ``record()`` drops the
  oldest queued sample to make room, counts it in ``stats().dropped_queue_full`` and the
  background thread logs a warning. A full queue means the server and the spool together
  cannot keep up; newest data is the most useful for collapse detection.
- **Ids are made on the client** (a random per-client prefix and a counter, or the id you
  pass), so a batch sent twice is stored once: the server ignores ids it already has.
- **Spool.** With ``spool_dir``, a batch the server did not acknowledge is written to an
  append-only segment file and fsynced before it counts as spooled; spooled batches are sent
  again, oldest first, with exponential backoff and jitter until the server takes them, also
  by the next process that opens the same directory. While anything is spooled, new batches
  queue behind it on disk, so samples reach the server in the order they were recorded.
  Without ``spool_dir`` the spool is kept in memory (bounded by ``max_spool_bytes``).
- **What a crash can lose.** ``kill -9`` loses what was still in the in-memory queue (at most
  ``max_queue`` samples plus the batch being encoded). Everything already spooled on disk is
  sent by the next process using the same ``spool_dir``. To make a point durable, call
  ``flush()``: when it returns True, everything recorded before it was acknowledged by the
  server or written to the disk spool (the log tailer saves its offset only then).
- **Exit.** ``close()`` (and, unless ``flush_at_exit=False``, an ``atexit`` hook) sends what
  it can within its timeout and spools the rest; with a memory spool the rest is dropped
  and counted in ``dropped_on_close``.
- **Sampling.** ``sample_rate`` keeps a sample when a stable hash of its id falls under the
  rate, so every process and every replay makes the same decision for an id.

Processes that fork (pre-fork servers) should create the client in each child after the
fork: the background thread does not survive ``fork()``, and two processes must not share a
spool directory (the second one gets ``SpoolError``).

From asyncio code
-----------------
``record()`` is safe to call from a coroutine (it never blocks the event loop). Use
``await client.aflush()`` and ``await client.aclose()`` (they wait in a worker thread), or
``async with Client(...) as client:``.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import itertools
import json
import logging
import os
import threading
import time
import zlib
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Self

from collectors.spool import DiskSpool, MemorySpool
from collectors.transport import IngestTransport, SendResult, backoff_delay

log = logging.getLogger("collectors.client")

MAX_ID_CHARS = 200


@dataclass(frozen=True)
class ClientStats:
    """Counters since the client started (records are samples)."""

    recorded: int            # accepted by record() into the queue
    sampled_out: int         # skipped by sample_rate
    sent: int                # acknowledged by the server (accepted + duplicates)
    accepted: int            # new to the server
    duplicates: int          # the server already had them (replays after a lost answer)
    spooled: int             # written to the spool (counted once per spooling)
    replayed: int            # acknowledged after having been spooled
    retried: int             # requests that re-sent a batch after a failure
    failed_requests: int     # requests that failed (status or connection)
    rejected: int            # refused for good by the server (4xx), see the log
    invalid: int             # could not be encoded as JSON (see the log)
    dropped: int             # total lost: the four counters below
    dropped_queue_full: int
    dropped_spool_full: int
    dropped_on_close: int
    dropped_after_close: int
    queued: int              # in memory now
    spool_pending: int       # in the spool now
    spool_bytes: int
    batches: int             # batches acknowledged
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _FlushRequest:
    __slots__ = ("done", "event", "remaining")

    def __init__(self) -> None:
        self.event = threading.Event()
        # samples queued ahead of it; -1 until the background thread has looked at the queue
        self.remaining = -1
        self.done = False

    def answer(self, done: bool) -> None:
        self.done = done
        self.event.set()


def _stable_unit_hash(sample_id: str) -> float:
    """A hash of the id in [0, 1), the same in every process (unlike ``hash()``).

    CRC-32 is cheap but linear, so ids that differ only in a counter land close together;
    the MurmurHash3 32-bit finalizer (Austin Appleby, "fmix32") spreads them out.
    """
    h = zlib.crc32(sample_id.encode("utf-8"))
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h / 4294967296.0


def _count_value(counter: itertools.count) -> int:
    """The next value of an ``itertools.count`` without consuming it (its repr: "count(N)").

    ``next()`` on a count is atomic, so the caller's thread counts without a lock.
    """
    return int(repr(counter)[6:-1])


def keeps(sample_id: str, sample_rate: float) -> bool:
    """Whether ``sample_rate`` keeps ``sample_id`` (deterministic)."""
    return sample_rate >= 1.0 or _stable_unit_hash(sample_id) < sample_rate


class Client:
    """Push samples of one monitored model to collapsewatch.

    ``Client(url, api_key, model)``; then ``record(text, prompt=..., attributes=...)`` from any
    thread. See the module documentation for the delivery guarantees.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        model: str,
        *,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        spool_dir: str | os.PathLike[str] | None = None,
        max_spool_bytes: int | None = None,
        max_batch_bytes: int = 4 * 1024 * 1024,
        sample_rate: float = 1.0,
        timeout: float = 10.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        flush_at_exit: bool = True,
        exit_timeout: float = 5.0,
        user_agent: str = "collapsewatch-collectors",
    ) -> None:
        if not url:
            raise ValueError("url is required, e.g. http://127.0.0.1:8000")
        if not model:
            raise ValueError("model is required: the name of the monitored model")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if batch_size < 1 or max_queue < 1:
            raise ValueError("batch_size and max_queue must be at least 1")
        self.model = model
        self.sample_rate = float(sample_rate)
        self._batch_size = batch_size
        self._flush_interval = float(flush_interval)
        self._max_queue = max_queue
        self._max_batch_bytes = max_batch_bytes
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._exit_timeout = exit_timeout
        if spool_dir is not None:  # first: it is what can fail (SpoolError)
            self._spool: DiskSpool | MemorySpool = DiskSpool(
                spool_dir, max_bytes=max_spool_bytes or 256 * 1024 * 1024)
        else:
            self._spool = MemorySpool(max_bytes=max_spool_bytes or 32 * 1024 * 1024)
        self._transport = IngestTransport(url, api_key, model, timeout=timeout,
                                          user_agent=user_agent)

        # the caller's side: a deque and two atomic counters (next() on itertools.count)
        self._queue: deque[tuple] = deque()
        self._ids = itertools.count(1)
        self._prefix = base64.b32encode(os.urandom(10)).decode("ascii").lower() + "-"
        self._closed = False
        self._wake = threading.Event()
        self._dropped_queue = itertools.count()
        self._sampled_out = itertools.count()
        self._after_close = itertools.count()

        # the background thread's counters (single writer)
        self._n_taken = 0
        self._n_sent = self._n_accepted = self._n_duplicates = 0
        self._n_spooled = self._n_replayed = self._n_retried = 0
        self._n_failed_requests = self._n_rejected = self._n_invalid = 0
        self._n_dropped_spool = self._n_dropped_close = 0
        self._n_batches = 0
        self._last_error: str | None = None

        self._flushes: list[_FlushRequest] = []
        self._flush_lock = threading.Lock()
        self._failures = 0             # consecutive failed attempts at the spool head
        self._next_attempt = 0.0       # monotonic time of the next attempt at the spool head
        self._reported_drops = 0
        self._last_drop_log = 0.0
        self._stop_deadline: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"collapsewatch-{model}",
                                        daemon=True)
        self._thread.start()
        self._flush_at_exit = flush_at_exit
        if flush_at_exit:
            atexit.register(self._close_at_exit)

    # -- the caller's thread ---------------------------------------------------------------
    def record(
        self,
        text: str,
        prompt: str | None = None,
        id: str | None = None,
        attributes: dict[str, Any] | None = None,
        timestamp: float | datetime | None = None,
    ) -> bool:
        """Queue one output of the model; never blocks. Returns False if not queued.

        ``id`` makes the sample idempotent across retries and restarts (default: a new unique
        id). ``timestamp`` (epoch seconds or an aware datetime) defaults to now. False means
        sampled out by ``sample_rate`` or the client is closed (counted either way).
        """
        if type(text) is not str:
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if id is None:
            id = self._prefix + str(next(self._ids))
        elif type(id) is not str or len(id) > MAX_ID_CHARS or not id:
            raise ValueError(f"id must be a non-empty str of at most {MAX_ID_CHARS} characters")
        if self.sample_rate < 1.0 and _stable_unit_hash(id) >= self.sample_rate:
            next(self._sampled_out)
            return False
        if self._closed:
            next(self._after_close)
            return False
        queue = self._queue
        if len(queue) >= self._max_queue:
            try:
                queue.popleft()
                next(self._dropped_queue)
            except IndexError:  # the background thread emptied it meanwhile
                pass
        queue.append((id, text, prompt, attributes, time.time(), timestamp))
        if len(queue) >= self._batch_size and not self._wake.is_set():
            self._wake.set()
        return True

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything recorded before this call is acknowledged or durably spooled.

        True when done; False on timeout, or while batches wait in a memory-only spool.
        """
        if threading.current_thread() is self._thread:
            return False
        if not self._thread.is_alive():
            return not self._queue and (self._spool.durable or not self._spool.pending_records)
        request = _FlushRequest()
        with self._flush_lock:
            self._flushes.append(request)
        self._wake.set()
        if not request.event.wait(timeout):
            with self._flush_lock:
                if request in self._flushes:
                    self._flushes.remove(request)
        return request.done

    def close(self, timeout: float | None = None) -> None:
        """Send what can be sent within ``timeout`` seconds, spool the rest, stop the thread."""
        if self._closed:
            return
        self._closed = True
        wait = self._exit_timeout if timeout is None else timeout
        self._stop_deadline = time.monotonic() + wait
        self._wake.set()
        self._thread.join(wait + self._transport.timeout + 5)
        if self._thread.is_alive():
            log.error("collector thread did not stop in time", extra={"model": self.model})
        self._transport.close()
        self._spool.close()
        if self._flush_at_exit:
            atexit.unregister(self._close_at_exit)
        log.info("collector closed", extra={"model": self.model, **self.stats().as_dict()})

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except Exception:
            log.exception("closing the collector at exit failed")

    def stats(self) -> ClientStats:
        """A snapshot of the counters."""
        queued = len(self._queue)
        dropped_queue = _count_value(self._dropped_queue)
        after_close = _count_value(self._after_close)
        dropped = dropped_queue + self._n_dropped_spool + self._n_dropped_close + after_close
        return ClientStats(
            recorded=self._n_taken + dropped_queue + queued,
            sampled_out=_count_value(self._sampled_out),
            sent=self._n_sent, accepted=self._n_accepted, duplicates=self._n_duplicates,
            spooled=self._n_spooled, replayed=self._n_replayed, retried=self._n_retried,
            failed_requests=self._n_failed_requests, rejected=self._n_rejected,
            invalid=self._n_invalid, dropped=dropped,
            dropped_queue_full=dropped_queue, dropped_spool_full=self._n_dropped_spool,
            dropped_on_close=self._n_dropped_close, dropped_after_close=after_close,
            queued=queued, spool_pending=self._spool.pending_records,
            spool_bytes=self._spool.pending_bytes, batches=self._n_batches,
            last_error=self._last_error,
        )

    # -- asyncio ---------------------------------------------------------------------------
    async def aflush(self, timeout: float | None = 30.0) -> bool:
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self.close, timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the background thread -------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                stopping = self._stop_deadline is not None
                self._take_flush_requests()
                forced = stopping or bool(self._flushes)
                self._drain_queue(forced)
                self._replay_spool()
                self._answer_flushes()
                if stopping:
                    self._finish()
                    return
                self._wake.wait(self._idle_wait())
                self._wake.clear()
                self._log_drops()
        except Exception:
            log.exception("collector thread crashed; samples are no longer sent",
                          extra={"model": self.model})
            raise

    def _idle_wait(self) -> float:
        now = time.monotonic()
        waits = [min(self._flush_interval, 0.5)]
        if self._queue:
            try:
                waits.append(self._flush_interval - (time.time() - self._queue[0][4]))
            except IndexError:  # emptied meanwhile
                pass
        if self._spool.pending_records and self._next_attempt > now:
            waits.append(self._next_attempt - now)
        elif self._spool.pending_records:
            waits.append(0.0)
        return max(0.0, min(waits))

    def _take_flush_requests(self) -> None:
        queued = len(self._queue)
        with self._flush_lock:
            for request in self._flushes:
                if request.remaining < 0:
                    request.remaining = queued

    def _answer_flushes(self) -> None:
        if not self._flushes:
            return
        settled = self._spool.durable or not self._spool.pending_records
        if not settled:
            return
        with self._flush_lock:
            for request in list(self._flushes):
                # remaining < 0: the request arrived after this round looked at the queue
                if request.remaining == 0 or (request.remaining > 0 and not self._queue):
                    request.answer(True)
                    self._flushes.remove(request)

    def _drain_queue(self, forced: bool) -> None:
        """Turn queued samples into batches: full ones, old ones, or all when forced.

        Takes at most what was queued when it started, so that a flood of new samples cannot
        keep the thread here while spooled batches and flush() callers wait.
        """
        queue = self._queue
        budget = len(queue)
        while budget > 0 and queue:
            if (not forced and len(queue) < self._batch_size
                    and time.time() - queue[0][4] < self._flush_interval):
                return
            items = []
            for _ in range(min(self._batch_size, budget)):
                try:
                    items.append(queue.popleft())
                except IndexError:
                    break
            if not items:
                return
            budget -= len(items)
            self._n_taken += len(items)
            with self._flush_lock:
                for request in self._flushes:
                    if request.remaining > 0:
                        request.remaining = max(0, request.remaining - len(items))
            for payload, count in self._encode([_sample_dict(item) for item in items]):
                self._deliver(payload, count)
            self._answer_flushes()

    def _encode(self, samples: list[dict]) -> list[tuple[bytes, int]]:
        """JSON arrays of samples, each at most ``max_batch_bytes`` (unless one sample is more)."""
        try:
            payload = _dumps(samples)
        except (TypeError, ValueError):
            samples = self._valid_samples(samples)
            if not samples:
                return []
            payload = _dumps(samples)
        if len(payload) <= self._max_batch_bytes or len(samples) == 1:
            return [(payload, len(samples))]
        half = len(samples) // 2
        return self._encode(samples[:half]) + self._encode(samples[half:])

    def _valid_samples(self, samples: list[dict]) -> list[dict]:
        good = []
        for sample in samples:
            try:
                _dumps([sample])
                good.append(sample)
            except (TypeError, ValueError) as exc:
                self._n_invalid += 1
                log.warning("sample %s cannot be encoded as JSON (%s); skipped",
                            sample["id"], exc, extra={
                    "model": self.model, "sample_id": sample["id"], "error": str(exc)})
        return good

    def _deliver(self, payload: bytes, count: int) -> None:
        """Send a new batch now, or put it behind the spooled ones."""
        now = time.monotonic()
        if (self._spool.pending_records or now < self._next_attempt
                or (self._stop_deadline is not None and now >= self._stop_deadline)):
            self._to_spool(payload, count)
            return
        result = self._send(payload, count)
        if not result.ok:
            self._failed(result)
            self._to_spool(payload, count)

    def _replay_spool(self) -> None:
        """Send spooled batches oldest first until one fails or the spool is empty."""
        deadline = self._stop_deadline
        while self._spool.pending_records:
            now = time.monotonic()
            if now < self._next_attempt or (deadline is not None and now >= deadline):
                return
            frame = self._spool.peek()
            if frame is None:
                return
            if self._failures:
                self._n_retried += 1
            result = self._send(frame.payload, frame.count)
            if not result.ok:
                self._failed(result)
                return
            self._spool.ack()
            self._n_replayed += frame.count - result.rejected
            if self._failures:
                log.info("collapsewatch answers again; sending spooled batches", extra={
                    "model": self.model, "spool_pending": self._spool.pending_records})
            self._failures = 0
            if len(self._queue) >= self._batch_size or self._flushes:
                # back to the main loop: queue new samples behind the spooled ones (so the
                # queue does not overflow) and answer flush() callers, then replay on
                return

    def _send(self, payload: bytes, count: int) -> SendResult:
        timeout = None
        if self._stop_deadline is not None:
            timeout = max(0.1, min(self._transport.timeout,
                                   self._stop_deadline - time.monotonic()))
        result = self._transport.send(payload, count, timeout=timeout)
        self._n_failed_requests += result.failed_requests
        if result.ok:
            self._n_batches += 1
            self._n_sent += result.accepted + result.duplicates
            self._n_accepted += result.accepted
            self._n_duplicates += result.duplicates
        if result.rejected:
            self._n_rejected += result.rejected
            self._last_error = f"HTTP {result.status}: {result.detail}"
            log.error("collapsewatch refused %d samples (HTTP %s: %s); they are not sent "
                      "again", result.rejected, result.status, result.detail, extra={
                "model": self.model, "status": result.status, "samples": result.rejected,
                "detail": result.detail})
        return result

    def _failed(self, result: SendResult) -> None:
        self._failures += 1
        delay = backoff_delay(self._failures - 1, self._backoff_base, self._backoff_max)
        if result.retry_after is not None:
            delay = max(delay, min(result.retry_after, 300.0))
        self._next_attempt = time.monotonic() + delay
        what = f"HTTP {result.status}" if result.status else "unreachable"
        self._last_error = f"{what}: {result.detail}"
        log_fn = log.warning if self._failures == 1 or self._failures % 10 == 0 else log.debug
        log_fn("collapsewatch did not take a batch (%s); keeping it, retry %d in %.1fs",
               self._last_error, self._failures, delay, extra={
            "model": self.model, "error": self._last_error, "attempt": self._failures,
            "retry_in_seconds": round(delay, 3), "spool_pending": self._spool.pending_records})

    def _to_spool(self, payload: bytes, count: int) -> None:
        try:
            dropped = self._spool.append(payload, count)
        except OSError as exc:
            self._n_dropped_spool += count
            self._last_error = f"spool write failed: {exc}"
            log.error("cannot write to the spool (%s); %d samples dropped", exc, count, extra={
                "model": self.model, "samples": count, "error": str(exc)})
            return
        self._n_spooled += count
        if dropped:
            self._n_dropped_spool += dropped
            log.error("spool is full (max %d bytes); dropped the %d oldest spooled samples",
                      self._spool.max_bytes, dropped, extra={
                "model": self.model, "samples": dropped, "max_bytes": self._spool.max_bytes})

    def _log_drops(self) -> None:
        dropped = _count_value(self._dropped_queue)
        now = time.monotonic()
        if dropped != self._reported_drops and now - self._last_drop_log >= 10.0:
            log.warning("queue full (max %d); dropped the oldest samples: %d since the last "
                        "report", self._max_queue, dropped - self._reported_drops, extra={
                "model": self.model, "dropped_since_last_report": dropped - self._reported_drops,
                "dropped_queue_full": dropped, "max_queue": self._max_queue})
            self._reported_drops = dropped
            self._last_drop_log = now

    def _finish(self) -> None:
        """At close: whatever is still queued goes to the spool; memory spools are lost."""
        self._drain_queue(forced=True)
        self._log_drops()
        if _count_value(self._dropped_queue) != self._reported_drops:
            self._last_drop_log = 0.0
            self._log_drops()
        if not self._spool.durable and self._spool.pending_records:
            self._n_dropped_close += self._spool.pending_records
            log.error("collapsewatch did not take %d samples before close; they are lost "
                      "(configure spool_dir to keep them on disk)",
                      self._spool.pending_records, extra={
                          "model": self.model, "samples": self._spool.pending_records})
        self._take_flush_requests()
        self._answer_flushes()
        with self._flush_lock:  # what is left could not be made durable
            for request in self._flushes:
                request.answer(False)
            self._flushes.clear()


def _sample_dict(item: tuple) -> dict[str, Any]:
    sample_id, text, prompt, attributes, queued_at, ts = item
    sample: dict[str, Any] = {"id": sample_id, "text": text}
    if prompt is not None:
        sample["prompt"] = prompt
    # Unix seconds (the API takes them as well as ISO 8601) cost nothing to format
    if ts is None:
        sample["timestamp"] = queued_at
    elif isinstance(ts, datetime):
        sample["timestamp"] = (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).isoformat()
    else:
        sample["timestamp"] = float(ts)
    if attributes is not None:
        sample["attributes"] = attributes
    return sample


_ENCODE_CHUNK = 64


def _dumps(samples: list[dict]) -> bytes:
    """A JSON array of the samples, encoded a few at a time.

    One ``json.dumps`` call holds the GIL until it returns; for a batch of 500 long texts that
    is long enough to show in the p99 of ``record()`` in the serving threads. Chunks let them
    run in between. ``default=str``: datetimes or numpy scalars in attributes become strings.
    """
    parts = [
        json.dumps(samples[i:i + _ENCODE_CHUNK], separators=(",", ":"), ensure_ascii=False,
                   allow_nan=False, default=str)[1:-1]
        for i in range(0, len(samples), _ENCODE_CHUNK)
    ]
    return ("[" + ",".join(parts) + "]").encode("utf-8")
