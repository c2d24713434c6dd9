"""Slack incoming webhook: a short text message with the model, state and signals.

Slack answers 200 ``ok``; 4xx bodies such as ``invalid_payload`` or ``no_service`` will not
get better by retrying, 429 and 5xx may (https://api.slack.com/messaging/webhooks).
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

_EMOJI = {("trigger", "critical"): ":red_circle:", ("trigger", "warning"): ":warning:",
          ("update", "critical"): ":arrow_up:", ("update", "warning"): ":arrow_down:"}


def _update_head(p: dict) -> str:
    """An update (one incident moving between the warning and the critical) reads as an
    update, not as a new page: "UPDATED [critical] escalated to collapse from early collapse
    (alert 3) — now bot: collapse — tail coverage …"."""
    emoji = _EMOJI.get(("update", p.get("severity")), ":arrows_counterclockwise:")
    change = ((p.get("details") or {}).get("supersedes_summary") or "").strip()
    change = f" {change} —" if change else ""
    return f"{emoji} UPDATED [{p.get('severity', '?')}]{change} now {p.get('title', '')}"


def format_text(message: Message) -> str:
    p = message.payload
    if message.event == "update":
        head = _update_head(p)
    elif message.event == "resolve":
        head = f":white_check_mark: RESOLVED [{p.get('severity', '?')}] {p.get('title', '')}"
    elif message.event == "acknowledge":
        who = p.get("acknowledged_by") or "someone"
        head = (f":eyes: ACKNOWLEDGED by {who} [{p.get('severity', '?')}] "
                f"{p.get('title', '')}")
    else:
        emoji = _EMOJI.get((message.event, p.get("severity")), ":bell:")
        head = f"{emoji} FIRING [{p.get('severity', '?')}] {p.get('title', '')}"
    summary = p.get("summary", "") or ""
    change = ((p.get("details") or {}).get("supersedes_summary") or "").strip()
    if message.event == "update" and change and summary.startswith(f"{change}. "):
        # the head already says what changed
        summary = summary[len(change) + 2:]
    lines = [head, summary]
    if p.get("url"):
        lines.append(f"<{p['url']}|open in collapsewatch>")
    return "\n".join(line for line in lines if line)


def _escape(text: str) -> str:
    # Slack's mrkdwn control characters: a phrase from model output must not become a
    # link or an @channel mention (https://api.slack.com/reference/surfaces/formatting)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def evidence_block(message: Message) -> dict[str, Any] | None:
    """A section listing the phrases that took over (with their rate change) and the terms
    that vanished in the window that fired; None when the event carries no evidence."""
    phrases, vanished = evidence_lines(message.payload)
    if not phrases and not vanished:
        return None
    parts = []
    if phrases:
        parts.append("*Phrases that took over*\n" + "\n".join(f"• {_escape(x)}" for x in phrases))
    if vanished:
        parts.append("*Vanished terms*\n" + "\n".join(f"• {_escape(x)}" for x in vanished))
    # a section's text may hold at most 3000 characters (Block Kit reference)
    return {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(parts)[:3000]}}


class SlackChannel(NotificationChannel):
    kind = "slack"
    # the webhook URL itself is the credential
    secret_fields = ("webhook_url",)
    url_fields = ("webhook_url",)

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        unknown = set(config) - {"webhook_url"}
        if unknown:
            raise ChannelConfigError(f"unknown slack config field(s): {', '.join(sorted(unknown))}"
                                     "; allowed: webhook_url")
        return {"webhook_url": require_http_url(config, "webhook_url")}

    def build_request(self, message: Message) -> OutgoingRequest:
        text = format_text(message)
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        evidence = evidence_block(message)
        if evidence is not None:
            blocks.append(evidence)
        body = json_body({"text": text, "blocks": blocks})
        return OutgoingRequest(self.config["webhook_url"], body, {})
