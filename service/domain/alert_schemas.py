"""REST schemas of the alerting side: alerts, alert rules, channels (one schema per use)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from service.domain.alerts import SIGNALS, TIME_KINDS
from service.domain.clock import as_utc_or_none

Utc = Annotated[datetime, AfterValidator(as_utc_or_none)]
UtcOrNone = Annotated[datetime | None, AfterValidator(as_utc_or_none)]
Severity = Literal["warning", "critical"]
AlertKind = Literal["early_collapse", "collapse", "no_samples", "evaluations_stale"]


class NotificationPublic(BaseModel):
    id: int
    channel: str
    event: str
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: Utc
    sent_at: UtcOrNone = None


class AlertPublic(BaseModel):
    id: int
    model: str
    kind: str
    severity: str
    state: str
    dedup_key: str
    summary: str
    details: dict[str, Any]
    started_at: Utc
    resolved_at: UtcOrNone = None
    acknowledged_at: UtcOrNone = None
    acknowledged_by: str | None = None
    last_evaluation_id: int | None = None
    notifications: list[NotificationPublic] | None = Field(
        default=None, description="outbox rows of this alert (single-alert view only)")


class AlertList(BaseModel):
    alerts: list[AlertPublic]
    next_cursor: str | None = Field(
        None, description="pass as `cursor` for the next page; null on the last page")


class RuleParams(BaseModel):
    """Optional ratio thresholds on top of the library's health verdict.

    ``thresholds`` maps a signal to a ratio: a floor for diversity and tail_coverage, a
    ceiling for sameness. ``against`` picks the baseline ratio (when the window has a
    baseline) or the human ratio.
    """

    model_config = ConfigDict(extra="forbid")

    thresholds: dict[str, Annotated[float, Field(gt=0, lt=100)]] = Field(default_factory=dict)
    against: Literal["baseline", "human"] = "baseline"

    @field_validator("thresholds")
    @classmethod
    def _known_signals(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(SIGNALS))
        if unknown:
            raise ValueError(f"unknown signal(s) {', '.join(unknown)}; "
                             f"use {', '.join(SIGNALS)}")
        return value


class AlertRulePublic(BaseModel):
    id: int
    kind: str
    severity: str
    enabled: bool
    fire_after_windows: int
    resolve_after_windows: int
    threshold_seconds: int | None
    params: dict[str, Any]
    updated_at: Utc


class AlertRuleList(BaseModel):
    model: str
    rules: list[AlertRulePublic]


class AlertRuleUpdate(BaseModel):
    """Fields to change; absent fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    severity: Severity | None = None
    fire_after_windows: Annotated[int, Field(ge=1, le=1000)] | None = None
    resolve_after_windows: Annotated[int, Field(ge=1, le=1000)] | None = None
    threshold_seconds: Annotated[int, Field(ge=1, le=30 * 86400)] | None = None
    params: RuleParams | None = None

    def changes(self, kind: str) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.model_fields_set}
        if any(v is None for v in out.values()):
            nulls = ", ".join(sorted(k for k, v in out.items() if v is None))
            raise ValueError(f"{nulls}: cannot be null; leave a field out to keep it")
        if "threshold_seconds" in out and kind not in TIME_KINDS:
            raise ValueError(f"threshold_seconds applies to {', '.join(TIME_KINDS)} rules, "
                             f"not to {kind}")
        if "params" in out:
            if kind in TIME_KINDS:
                raise ValueError(f"params (signal thresholds) apply to window rules, not to {kind}")
            out["params"] = self.params.model_dump()
        return out


class ChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
    kind: Annotated[str, Field(examples=["webhook", "slack", "pagerduty"])]
    config: dict[str, Any]
    min_severity: Severity = "warning"
    models: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = None
    enabled: bool = True


class ChannelPublic(BaseModel):
    id: int
    name: str
    kind: str
    config: dict[str, Any]
    min_severity: str
    models: list[str] | None
    enabled: bool
    created_at: Utc
    notifications: dict[str, int] = Field(default_factory=dict,
                                          description="outbox rows of this channel by status")


class ChannelList(BaseModel):
    channels: list[ChannelPublic]
    next_cursor: str | None = Field(
        None, description="pass as `cursor` for the next page; null on the last page")


class RetryResult(BaseModel):
    requeued: int = Field(description="dead-lettered notifications given a fresh set of attempts")
