"""Generic webhook: the alert event as JSON, signed with HMAC-SHA256.

Headers sent with every request:

- ``X-Collapsewatch-Event``: ``trigger``, ``update`` (the incident moved between the warning
  and the critical: same ``dedup_key``, the new alert's severity and text), ``acknowledge``
  (someone acknowledged the alert in collapsewatch; sent once, to the channels that got the
  trigger) or ``resolve``
- ``X-Collapsewatch-Delivery`` / ``Idempotency-Key``: the same on every retry of one
  notification, so a receiver can drop duplicates
- ``X-Collapsewatch-Signature``: ``t=<unix seconds>,sha256=<hex>`` when a secret is configured,
  where hex = HMAC-SHA256(secret, "<t>." + raw body) (RFC 2104). Receivers recompute it over
  the raw body and reject stale ``t`` values to stop replays.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from service.channels.base import (
    ChannelConfigError,
    Message,
    NotificationChannel,
    OutgoingRequest,
    json_body,
    require_http_url,
)

SIGNATURE_HEADER = "X-Collapsewatch-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},sha256={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, now: float | None = None,
           tolerance_seconds: float = 300.0) -> bool:
    """Check a signature header the way a receiver should (constant-time compare)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


class WebhookChannel(NotificationChannel):
    kind = "webhook"
    secret_fields = ("secret",)
    url_fields = ("url",)

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        out = {"url": require_http_url(config, "url")}
        secret = config.get("secret")
        if secret is not None:
            if not isinstance(secret, str) or len(secret) < 16:
                raise ChannelConfigError("config.secret must be a string of at least 16 "
                                         "characters (used as the HMAC-SHA256 key)")
            out["secret"] = secret
        unknown = set(config) - {"url", "secret"}
        if unknown:
            raise ChannelConfigError(
                f"unknown webhook config field(s): {', '.join(sorted(unknown))}; "
                "allowed: url, secret")
        return out

    def build_request(self, message: Message) -> OutgoingRequest:
        body = json_body({"event": message.event, "notification_id": message.notification_id,
                          **message.payload})
        headers = {
            "X-Collapsewatch-Event": message.event,
            "X-Collapsewatch-Delivery": str(message.notification_id),
            "Idempotency-Key": message.idempotency_key,
        }
        if self.config.get("secret"):
            headers[SIGNATURE_HEADER] = sign(self.config["secret"], int(time.time()), body)
        return OutgoingRequest(self.config["url"], body, headers)
