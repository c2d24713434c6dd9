"""PagerDuty Events API v2 (https://developer.pagerduty.com/docs/events-api-v2/overview).

``trigger`` opens (or appends to) the incident with our ``dedup_key``; an ``update`` (the
incident escalated or downgraded) is sent as a ``trigger`` with the same ``dedup_key``, which
PagerDuty folds into the open incident with the new summary; ``acknowledge`` (an
operator acknowledged the alert in collapsewatch) stops its escalation; ``resolve`` with the
same key closes it. The dedup_key is deterministic per model and alert kind, so a retried
trigger is folded into the same incident by PagerDuty itself. 202 means accepted; 400 is an
invalid event (not retried); 429 and 5xx are retried with backoff.
"""

from __future__ import annotations

from typing import Any

from service.channels.base import (
    ChannelConfigError,
    Message,
    NotificationChannel,
    OutgoingRequest,
    evidence_lines,
    json_body,
    require_http_url,
)

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
# Events API v2 limits
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255
SEVERITIES = ("critical", "error", "warning", "info")


class PagerDutyChannel(NotificationChannel):
    kind = "pagerduty"
    secret_fields = ("routing_key",)
    url_fields = ("url",)

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        unknown = set(config) - {"routing_key", "url"}
        if unknown:
            raise ChannelConfigError(
                f"unknown pagerduty config field(s): {', '.join(sorted(unknown))}; "
                "allowed: routing_key, url")
        key = config.get("routing_key")
        if not isinstance(key, str) or not key.strip():
            raise ChannelConfigError("config.routing_key is required: the Integration Key of an "
                                     "'Events API V2' integration on your PagerDuty service")
        out = {"routing_key": key.strip(), "url": EVENTS_URL}
        if config.get("url") is not None:
            out["url"] = require_http_url(config, "url")
        return out

    def event_body(self, message: Message) -> dict[str, Any]:
        p = message.payload
        dedup_key = str(p["dedup_key"])[:MAX_DEDUP_KEY]
        if message.event in ("acknowledge", "resolve"):
            # the incident is named by dedup_key alone; no payload for these two actions
            return {"routing_key": self.config["routing_key"], "event_action": message.event,
                    "dedup_key": dedup_key}
        severity = p.get("severity") if p.get("severity") in SEVERITIES else "error"
        summary = p.get("title") or p.get("summary") or "collapsewatch alert"
        body: dict[str, Any] = {
            "routing_key": self.config["routing_key"],
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": {
                "summary": summary[:MAX_SUMMARY],
                "source": f"collapsewatch/{p.get('model', 'unknown')}",
                "severity": severity,
                "timestamp": p.get("started_at"),
                "component": p.get("model"),
                "group": "collapsewatch",
                "class": p.get("kind"),
                "custom_details": self.custom_details(p),
            },
            "client": "collapsewatch",
        }
        if p.get("url"):
            body["client_url"] = p["url"]
            body["links"] = [{"href": p["url"], "text": "collapsewatch alert"}]
        return body

    @staticmethod
    def custom_details(p: dict[str, Any]) -> dict[str, Any]:
        """The alert's details, plus what changed in the window that fired: phrases that
        took over and vanished terms, one readable line each (n-grams only)."""
        details: dict[str, Any] = {"summary": p.get("summary"), **(p.get("details") or {})}
        phrases, vanished = evidence_lines(p)
        if phrases:
            details["phrases_that_took_over"] = phrases
        if vanished:
            details["vanished_terms"] = vanished
        if p.get("url"):
            details["page"] = p["url"]
        return details

    def build_request(self, message: Message) -> OutgoingRequest:
        return OutgoingRequest(self.config["url"], json_body(self.event_body(message)), {})
