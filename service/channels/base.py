"""The one small base class every notification channel implements.

A channel turns one outbox row (a :class:`Message`) into one HTTP request and says whether a
failure is worth retrying. Delivery bookkeeping (claiming rows, backoff, dead letters) lives in
``service.delivery.outbox`` and is the same for every channel.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from collectors.transport import parse_retry_after


class ChannelConfigError(ValueError):
    """A channel's configuration is unusable; the message says which field and why."""


class DeliveryError(Exception):
    """Sending failed. ``retryable`` tells the outbox whether another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


@dataclass(frozen=True)
class Message:
    """What a channel sends: one alert event, as stored in the outbox row."""

    notification_id: int
    event: str  # trigger | acknowledge | resolve
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        """Stable across retries of this row, different for every row."""
        return f"collapsewatch-notification-{self.notification_id}"


@dataclass(frozen=True)
class OutgoingRequest:
    url: str
    body: bytes
    headers: dict[str, str]


# HTTP answers that may succeed later: timeouts, throttling, server errors
# (PagerDuty Events API v2 documents 429 and 5xx as retryable, 400 as a bad event).
RETRYABLE_STATUSES = frozenset({408, 425, 429})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def require_http_url(config: dict[str, Any], key: str) -> str:
    value = config.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ChannelConfigError(f"config.{key} is required (an http or https URL)")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ChannelConfigError(f"config.{key} must be an http or https URL, got {value!r}")
    return value.strip()


def json_body(obj: Any) -> bytes:
    """Compact, key-sorted JSON: the same payload always gives the same bytes (and signature)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


class NotificationChannel(ABC):
    """Base class: subclasses set ``kind``, validate their config and build one request."""

    kind: ClassVar[str]
    # config fields that are secrets: never returned by the API
    secret_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: dict[str, Any], *, timeout: float = 10.0) -> None:
        self.config = self.validate_config(config)
        self.timeout = timeout

    @classmethod
    @abstractmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Return the normalised config or raise :class:`ChannelConfigError`."""

    @abstractmethod
    def build_request(self, message: Message) -> OutgoingRequest:
        """The HTTP request that delivers ``message``."""

    @classmethod
    def redact(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The config with secrets masked (for API answers and logs)."""
        out = dict(config)
        for key in cls.secret_fields:
            if out.get(key):
                out[key] = "***"
        return out

    def check_response(self, response: httpx.Response) -> None:
        """Raise :class:`DeliveryError` unless the answer means 'delivered'."""
        if 200 <= response.status_code < 300:
            return
        text = response.text[:300].replace("\n", " ")
        raise DeliveryError(
            f"{self.kind} answered HTTP {response.status_code}: {text}",
            retryable=is_retryable_status(response.status_code),
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            status=response.status_code,
        )

    def send(self, message: Message) -> None:
        """Deliver ``message`` once; raise :class:`DeliveryError` on failure."""
        request = self.build_request(message)
        headers = {"content-type": "application/json", "user-agent": "collapsewatch",
                   **request.headers}
        try:
            response = httpx.post(request.url, content=request.body, headers=headers,
                                  timeout=self.timeout, follow_redirects=False)
        except httpx.HTTPError as exc:
            # connection refused, DNS, timeouts: the far end may come back
            raise DeliveryError(f"{self.kind}: {type(exc).__name__}: {exc}",
                                retryable=True) from exc
        self.check_response(response)
