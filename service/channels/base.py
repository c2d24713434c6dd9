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
from service.channels import netguard
from service.channels.errors import ChannelConfigError, DeliveryError
from service.logging import get_logger
from service.settings import get_settings

log = get_logger("collapsewatch.channels")


@dataclass(frozen=True)
class Message:
    """What a channel sends: one alert event, as stored in the outbox row."""

    notification_id: int
    event: str  # trigger | update | acknowledge | resolve
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


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else "?"


def evidence_lines(payload: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The payload's evidence as two lists of short lines: phrases that took over, with
    their rate change, and vanished terms with how often they were expected. Empty when the
    event carries no evidence. Only the n-gram lists are read: quoted sample text is never
    sent to a channel."""
    evidence = payload.get("evidence")
    if not isinstance(evidence, dict):
        return [], []
    against = "baseline" if evidence.get("against") == "baseline" else "human reference"
    phrases = [
        f"\"{row.get('ngram', '')}\": {_num(row.get('baseline_per_10k'))} → "
        f"{_num(row.get('window_per_10k'))} per 10k tokens ({against}; z {_num(row.get('z'))})"
        for row in evidence.get("overrepresented") or [] if isinstance(row, dict)]
    vanished = [
        f"\"{row.get('term', '')}\": seen {_num(row.get('observed'))}, expected "
        f"{_num(round(row['expected'], 1) if isinstance(row.get('expected'), float) else None)}"
        for row in evidence.get("vanished") or [] if isinstance(row, dict)]
    return phrases, vanished


class NotificationChannel(ABC):
    """Base class: subclasses set ``kind``, validate their config and build one request."""

    kind: ClassVar[str]
    # config fields that are secrets: never returned by the API, encrypted at rest
    secret_fields: ClassVar[tuple[str, ...]] = ()
    # config fields holding the URL a send goes to (checked against internal addresses)
    url_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: dict[str, Any], *, timeout: float = 10.0,
                 allowed_hosts: frozenset[str] | None = None) -> None:
        self.config = self.validate_config(config)
        # one total deadline per send: lookup + connect + request + reply
        self.timeout = timeout
        self.allowed_hosts = (allowed_hosts if allowed_hosts is not None
                              else default_allowed_hosts())

    @classmethod
    def check_destinations(cls, config: dict[str, Any],
                           allowed_hosts: frozenset[str] | None = None) -> None:
        """Raise :class:`~service.channels.netguard.DestinationRefused` when a URL of the
        (validated) config resolves to an internal address (see ``netguard``)."""
        allowed = allowed_hosts if allowed_hosts is not None else default_allowed_hosts()
        for key in cls.url_fields:
            if config.get(key):
                netguard.check_url(config[key], allowed, field=key)

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

    def check_response(self, reply: netguard.Reply) -> None:
        """Raise :class:`DeliveryError` unless the answer means 'delivered'.

        The reply body goes to the server log only: it may hold anything the far end chose
        to say, and ``last_error`` is shown to API readers."""
        if 200 <= reply.status_code < 300:
            return
        log.warning("channel answered an error", extra={
            "channel_kind": self.kind, "status": reply.status_code,
            "reply_body": reply.text[:2000], "reply_truncated": reply.truncated})
        raise DeliveryError(
            f"{self.kind} answered HTTP {reply.status_code} (reply body in the server log)",
            retryable=is_retryable_status(reply.status_code),
            retry_after=parse_retry_after(reply.headers.get("retry-after")),
            status=reply.status_code,
        )

    def send(self, message: Message) -> None:
        """Deliver ``message`` once; raise :class:`DeliveryError` on failure."""
        request = self.build_request(message)
        headers = {"content-type": "application/json", "user-agent": "collapsewatch",
                   **request.headers}
        field = self.url_fields[0] if self.url_fields else "url"
        try:
            reply = netguard.guarded_post(request.url, request.body, headers,
                                          timeout=self.timeout,
                                          allowed_hosts=self.allowed_hosts, field=field)
        except netguard.DestinationRefused as exc:
            # DNS may point somewhere public again later, but an operator should look first
            raise DeliveryError(f"{self.kind}: refused to send: {exc}",
                                retryable=False) from exc
        except netguard.DeadlineExceeded as exc:
            raise DeliveryError(f"{self.kind}: {exc}", retryable=True) from exc
        except (httpx.HTTPError, OSError) as exc:
            # connection refused, DNS, protocol errors: the far end may come back. The
            # exception type is enough for last_error; its text goes to the log.
            log.warning("channel send failed", extra={"channel_kind": self.kind,
                                                      "error": f"{type(exc).__name__}: {exc}"})
            raise DeliveryError(f"{self.kind}: could not deliver ({type(exc).__name__})",
                                retryable=True) from exc
        self.check_response(reply)


def default_allowed_hosts() -> frozenset[str]:
    """``COLLAPSEWATCH_CHANNEL_ALLOWED_HOSTS``: hosts exempt from the internal-address check."""
    return netguard.parse_allowed_hosts(get_settings().channel_allowed_hosts)
