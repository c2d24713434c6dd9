"""Sending one batch to the ingest API, and what to do with the answer.

``POST {url}/api/v1/models/{model}/samples`` with ``{"samples": [...]}``; the server answers
202 ``{"accepted": n, "duplicates": k}``. What the answer means for the batch:

- 2xx: acknowledged (the server stored it, or already had every id).
- 408, 429, 5xx, connection errors and timeouts: retry later (the batch is kept).
- 400, 413, 422: something in the batch itself; a batch of more than one sample is split in
  halves and each half sent again, so one bad sample cannot take its neighbours down.
  A single sample refused this way is rejected.
- other 4xx (401 unknown key, 403 key for another model, 404 unknown model): rejected;
  retrying cannot help, and the log line carries the server's explanation.
"""

from __future__ import annotations

import email.utils
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

RETRIABLE_4XX = frozenset({408, 429})
PER_SAMPLE_4XX = frozenset({400, 413, 422})


@dataclass
class SendResult:
    """What happened to one batch (possibly sent as several requests after splitting)."""

    ok: bool = True              # nothing left to retry (acknowledged or rejected)
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0            # samples refused for good (counted, logged)
    requests: int = 0
    failed_requests: int = 0
    status: int | None = None    # the last failing status, None for a connection error
    detail: str = ""             # the last failure, for the log
    retry_after: float | None = None

    def merge(self, other: SendResult) -> None:
        self.ok = self.ok and other.ok
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.requests += other.requests
        self.failed_requests += other.failed_requests
        if other.failed_requests:
            self.status, self.detail = other.status, other.detail
        if other.retry_after is not None:
            self.retry_after = max(self.retry_after or 0.0, other.retry_after)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half the step fixed, half random.

    After Marc Brooker, "Exponential Backoff And Jitter" (AWS Architecture Blog, 2015): jitter
    spreads the retries of many collectors that lost the server at the same moment; keeping
    half of the step fixed avoids near-zero waits.
    """
    step = min(cap, base * (2 ** max(0, attempt)))
    return step / 2 + (rng or random).uniform(0, step / 2)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date, RFC 9110 §10.2.3).

    None when absent or unreadable; an HTTP-date without a zone counts as UTC.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _problem_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)[:500]
    return str(body)[:200]


class IngestTransport:
    """An HTTP connection pool to one model's ingest endpoint."""

    def __init__(self, url: str, api_key: str, model: str, timeout: float = 10.0,
                 user_agent: str = "collapsewatch-collectors") -> None:
        self.endpoint = f"{url.rstrip('/')}/api/v1/models/{quote(model, safe='')}/samples"
        self.timeout = timeout
        self._http = httpx.Client(headers={
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "User-Agent": user_agent,
        }, timeout=timeout)

    def send(self, payload: bytes, count: int, timeout: float | None = None) -> SendResult:
        """Send a JSON array of samples; split on per-sample errors (see the module doc)."""
        result = self._post(payload, count, timeout)
        if result.ok or result.status not in PER_SAMPLE_4XX:
            return result
        if count <= 1:
            result.ok = True
            result.rejected = count
            return result
        samples = json.loads(payload)
        half = len(samples) // 2
        merged = SendResult(requests=result.requests, failed_requests=result.failed_requests,
                            status=result.status, detail=result.detail)
        for part in (samples[:half], samples[half:]):
            sub = self.send(_encode_samples(part), len(part), timeout)
            merged.merge(sub)
            if not sub.ok:  # stop at the first retriable failure; the batch is kept whole
                break
        return merged

    def _post(self, payload: bytes, count: int, timeout: float | None) -> SendResult:
        body = b'{"samples":' + payload + b"}"
        try:
            response = self._http.post(self.endpoint, content=body,
                                       timeout=self.timeout if timeout is None else timeout)
        except httpx.HTTPError as exc:
            return SendResult(ok=False, requests=1, failed_requests=1,
                              detail=f"{type(exc).__name__}: {exc}" if str(exc)
                              else type(exc).__name__)
        status = response.status_code
        if 200 <= status < 300:
            accepted, duplicates = count, 0
            try:
                answer = response.json()
                accepted = int(answer.get("accepted", count))
                duplicates = int(answer.get("duplicates", 0))
            except (ValueError, AttributeError, TypeError):
                pass  # a 2xx without the usual body still means the server has the batch
            return SendResult(accepted=accepted, duplicates=duplicates, requests=1)
        failed = SendResult(requests=1, failed_requests=1, status=status,
                            detail=_problem_detail(response))
        if status >= 500 or status in RETRIABLE_4XX:
            failed.ok = False
            failed.retry_after = parse_retry_after(response.headers.get("retry-after"))
        elif status not in PER_SAMPLE_4XX:
            failed.rejected = count  # 401/403/404...: retrying cannot help
        else:
            failed.ok = False  # the caller splits the batch
        return failed

    def close(self) -> None:
        self._http.close()


def _encode_samples(samples: list) -> bytes:
    return json.dumps(samples, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")
