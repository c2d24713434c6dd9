"""Transport-level protections: security headers on every response, CORS only when configured,
and a per-key token bucket."""

from __future__ import annotations

import math
import threading
import time

from service.domain.errors import RateLimited

# Added to every response (pages, assets, JSON, problems, 413s written by other middleware);
# a route that sets its own value keeps it.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeadersMiddleware:
    """Pure ASGI: adds the CSP and ``SECURITY_HEADERS`` to every HTTP response."""

    def __init__(self, app, content_security_policy: str) -> None:
        self.app = app
        self.extra = (*SECURITY_HEADERS,
                      (b"content-security-policy", content_security_policy.encode()))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in self.extra if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class TokenBuckets:
    """One token bucket per API key: ``rate`` tokens a second, at most ``burst`` saved up.

    Kept in this process's memory: with N API processes behind a balancer a key may make up
    to N times the rate. A revoked key needs no cleanup here (it fails authentication first).
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_keys = max_keys
        self._buckets: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key_id: int, now: float | None = None) -> None:
        """Spend one token of ``key_id``'s bucket or raise RateLimited with the wait."""
        if self.rate <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key_id] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
                raise RateLimited(
                    f"rate limit of {self.rate:g} requests/s (burst {self.burst:g}) for this "
                    f"key exceeded; retry in {math.ceil(wait)} s "
                    "(COLLAPSEWATCH_RATE_LIMIT_PER_KEY)", retry_after=wait)
            if len(self._buckets) >= self.max_keys and key_id not in self._buckets:
                self._buckets.clear()  # bounded memory; a full bucket is the safe default
            self._buckets[key_id] = (tokens - 1.0, now)
