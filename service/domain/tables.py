"""ORM models (SQLAlchemy 2.0). The database is the source of truth.

Schema changes go through Alembic (``migrations/``); ``alembic check`` in the tests
keeps these models and the migrations from drifting apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.domain.clock import utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY autoincrements).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, list[Any]: JSON}


def _ts(nullable: bool = False, default: bool = True) -> Mapped[datetime]:
    if default:
        return mapped_column(DateTime(timezone=True), nullable=nullable, default=utcnow)
    return mapped_column(DateTime(timezone=True), nullable=nullable)


class Reference(Base):
    """A frozen human reference. Immutable; the same name again makes a new version."""

    __tablename__ = "references"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    document_count: Mapped[int] = mapped_column(Integer)
    token_count: Mapped[int] = mapped_column(BigInteger)
    # gzipped JSON list of the normalised documents
    documents_gz: Mapped[bytes] = mapped_column(LargeBinary)
    # serialised metrics profile (metrics.Profile.to_bytes())
    profile: Mapped[bytes] = mapped_column(LargeBinary)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = _ts()


class MonitoredModel(Base):
    """A deployed model that collapsewatch watches."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    reference_id: Mapped[int] = mapped_column(ForeignKey("references.id"))
    # the current baseline (baselines.id); no FK: baselines reference models, and a
    # cycle of foreign keys cannot be created on SQLite
    baseline_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    window_size: Mapped[int] = mapped_column(Integer, default=500)
    window_max_age_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    window_min_size: Mapped[int] = mapped_column(Integer, default=50)
    # 0 disables the automatic baseline from the first K windows
    auto_baseline_windows: Mapped[int] = mapped_column(Integer, default=3)
    samples_ingested: Mapped[int] = mapped_column(BigInteger, default=0)
    last_sample_at: Mapped[datetime | None] = _ts(nullable=True, default=False)
    # highest sample id already assigned to a window (windows are contiguous id ranges)
    windowed_through_sample_id: Mapped[int] = mapped_column(BigInteger, default=0)
    next_window_index: Mapped[int] = mapped_column(Integer, default=0)
    # retention in days for this model (null: the global defaults, settings.retention_*)
    samples_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    evaluations_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # per-metric Prometheus series for this model (null: settings.metrics_per_metric_series)
    metric_series: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    # "model" (a deployed generator) or "stream" (a data source judged for its synthetic share)
    kind: Mapped[str] = mapped_column(String(16), default="model", server_default="model")
    # a stream's generator sources: baseline ids whose outputs may be mixed into it
    sources: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    # a stream's mixing-ratio guard: warn when the share's lower bound exceeds it
    max_synthetic_share: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the automatic baseline refused: why (null: not refused since the last pin)
    baseline_rejection: Mapped[str | None] = mapped_column(Text, nullable=True)
    baseline_rejected_at: Mapped[datetime | None] = _ts(nullable=True, default=False)
    # set by DELETE: the model is gone for every reader at once; the reaper purges its rows
    # in bounded batches and then the model row itself
    deleted_at: Mapped[datetime | None] = _ts(nullable=True, default=False)
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Sample(Base):
    """One model output. ``client_id`` makes retries idempotent (unique per model)."""

    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("model_id", "client_id"),
        Index("ix_samples_model_id_id", "model_id", "id"),
        Index("ix_samples_model_id_received_at", "model_id", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    timestamp: Mapped[datetime | None] = _ts(nullable=True, default=False)
    received_at: Mapped[datetime] = _ts()
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Baseline(Base):
    """A frozen profile of a model's own outputs from a known-good time."""

    __tablename__ = "baselines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    reference_id: Mapped[int] = mapped_column(ForeignKey("references.id"))
    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(20))  # upload | range | auto
    range_from: Mapped[datetime | None] = _ts(nullable=True, default=False)
    range_to: Mapped[datetime | None] = _ts(nullable=True, default=False)
    document_count: Mapped[int] = mapped_column(Integer)
    token_count: Mapped[int] = mapped_column(BigInteger)
    profile: Mapped[bytes] = mapped_column(LargeBinary)
    # the baseline's ratios to the human reference, computed once
    human_ratios: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # newest sample built into it (range and auto sources): windows that end at or before it
    # are part of the baseline and are not scored against it
    last_sample_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = _ts()


class BaselinePin(Base):
    """Audit log of baseline changes: who, when, old and new sha256."""

    __tablename__ = "baseline_pins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    old_baseline_id: Mapped[int | None] = mapped_column(ForeignKey("baselines.id"), nullable=True)
    new_baseline_id: Mapped[int] = mapped_column(ForeignKey("baselines.id"))
    old_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    new_sha256: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # pinned although it reads as collapsed against human (an admin's deliberate choice)
    accept_collapsed: Mapped[bool] = mapped_column(Boolean, default=False,
                                                   server_default=false())
    created_at: Mapped[datetime] = _ts()


class Evaluation(Base):
    """One scored window: a contiguous range of a model's sample ids."""

    __tablename__ = "evaluations"
    __table_args__ = (
        UniqueConstraint("model_id", "window_index", "reference_id"),
        Index("ix_evaluations_model_id_window_end", "model_id", "window_end"),
        Index("ix_evaluations_status", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    reference_id: Mapped[int] = mapped_column(ForeignKey("references.id"))
    baseline_id: Mapped[int | None] = mapped_column(ForeignKey("baselines.id"), nullable=True)
    window_index: Mapped[int] = mapped_column(Integer)
    first_sample_id: Mapped[int] = mapped_column(BigInteger)
    last_sample_id: Mapped[int] = mapped_column(BigInteger)
    sample_count: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime | None] = _ts(nullable=True, default=False)
    window_end: Mapped[datetime | None] = _ts(nullable=True, default=False)
    # pending | running | done | failed
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    health: Mapped[str | None] = mapped_column(String(32), nullable=True)
    documents: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # the full Score JSON (DESIGN.md)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = _ts()
    # last time a score_window message was sent for it (null: never sent, e.g. broker down)
    enqueued_at: Mapped[datetime | None] = _ts(nullable=True, default=False)
    started_at: Mapped[datetime | None] = _ts(nullable=True, default=False)
    # the scoring worker's lease: renewed by its heartbeat while it scores; once past, the
    # window is another worker's to take (a killed worker's window is re-scored quickly)
    lease_expires_at: Mapped[datetime | None] = _ts(nullable=True, default=False)
    # attempts that ran into the soft time limit (the second one fails the window)
    timeouts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    finished_at: Mapped[datetime | None] = _ts(nullable=True, default=False)


class Score(Base):
    """One metric or signal of one evaluation (the Score JSON flattened for queries)."""

    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("evaluation_id", "kind", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    evaluation_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("evaluations.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(10))  # metric | signal
    name: Mapped[str] = mapped_column(String(64))
    signal: Mapped[str | None] = mapped_column(String(32), nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    human_mean: Mapped[float | None] = mapped_column(Float, nullable=True)
    human_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    human_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    ratio: Mapped[float | None] = mapped_column(Float, nullable=True)
    percentile: Mapped[float | None] = mapped_column(Float, nullable=True)
    outside_band: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    baseline_ratio: Mapped[float | None] = mapped_column(Float, nullable=True)
    outside_baseline_band: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class ApiKey(Base):
    """An API key; only its SHA-256 is stored. ``prefix`` finds it without a scan."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(10))  # ingest | read | admin
    model_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = _ts()
    revoked_at: Mapped[datetime | None] = _ts(nullable=True, default=False)
    expires_at: Mapped[datetime | None] = _ts(nullable=True, default=False)
    # written at most once a minute per key (KEY_LAST_USED_INTERVAL_SECONDS)
    last_used_at: Mapped[datetime | None] = _ts(nullable=True, default=False)


class AlertRule(Base):
    """A per-model alert rule: fire after K windows outside, resolve after K healthy."""

    __tablename__ = "alert_rules"
    __table_args__ = (UniqueConstraint("model_id", "kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    # early_collapse | collapse | no_samples | evaluations_stale
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))  # warning | critical
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    fire_after_windows: Mapped[int] = mapped_column(Integer, default=2)
    resolve_after_windows: Mapped[int] = mapped_column(Integer, default=2)
    # for no_samples / evaluations_stale: seconds without samples / evaluations
    threshold_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Alert(Base):
    """An alert instance: firing until resolved; acknowledgeable."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_model_id_state", "model_id", "state"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    rule_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("alert_rules.id", ondelete="SET NULL"), nullable=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="firing")  # firing | resolved
    dedup_key: Mapped[str] = mapped_column(String(128), index=True)
    summary: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = _ts()
    resolved_at: Mapped[datetime | None] = _ts(nullable=True, default=False)
    acknowledged_at: Mapped[datetime | None] = _ts(nullable=True, default=False)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    last_evaluation_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class AlertState(Base):
    """Per model and rule: consecutive outside/healthy windows (hysteresis counters)."""

    __tablename__ = "alert_states"
    __table_args__ = (UniqueConstraint("model_id", "kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    consecutive_bad: Mapped[int] = mapped_column(Integer, default=0)
    consecutive_good: Mapped[int] = mapped_column(Integer, default=0)
    last_evaluation_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Channel(Base):
    """A notification channel (webhook, slack, pagerduty); config holds url/secret/key."""

    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    min_severity: Mapped[str] = mapped_column(String(16), default="warning")
    # null = every model
    models: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = _ts()


class Notification(Base):
    """Outbox: one row per alert event and channel; delivered by a Celery task."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("alert_id", "channel_id", "event"),
        Index("ix_notifications_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(BigId, ForeignKey("alerts.id", ondelete="CASCADE"))
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(16))  # trigger | acknowledge | resolve
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # pending | sending | sent | dead
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = _ts()
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = _ts()
    sent_at: Mapped[datetime | None] = _ts(nullable=True, default=False)


class BandCache(Base):
    """A computed band matrix (metrics.Profile.band), shared by every worker process and
    kept across restarts. ``profile_key`` names the profile bytes, the code that computed
    the band and, for a baseline, its reference row (see service.domain.band_cache). A cache:
    rows can be deleted at any time and are computed again when needed; the reaper drops
    those unused for ``band_cache_keep_days``."""

    __tablename__ = "band_cache"
    __table_args__ = (UniqueConstraint("profile_key", "n_docs", "budget"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    profile_key: Mapped[str] = mapped_column(String(64))
    n_docs: Mapped[int] = mapped_column(Integer)
    budget: Mapped[int] = mapped_column(Integer)
    # float64 .npy bytes of the (replicates, metrics) matrix
    matrix: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _ts()
    # last read or write (refreshed at most daily); the reaper drops rows unused for long
    used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                              index=True)


class ModelStats(Base):
    """Per model: the newest finished evaluation and running totals, kept up to date when a
    window is stored or fails, so that ``/metrics`` reads one small row per model instead
    of grouping over every evaluation ever made. Totals survive retention (counters)."""

    __tablename__ = "model_stats"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"),
                                          primary_key=True, autoincrement=False)
    # the finished evaluation with the highest window index
    latest_evaluation_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    latest_window_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    evaluations_done: Mapped[int] = mapped_column(BigInteger, default=0)
    evaluations_failed: Mapped[int] = mapped_column(BigInteger, default=0)
    # cumulative histogram of scoring durations (service.exporter.prometheus buckets)
    duration_buckets: Mapped[list[Any]] = mapped_column(JSON, default=list)
    duration_count: Mapped[int] = mapped_column(BigInteger, default=0)
    duration_sum: Mapped[float] = mapped_column(Float, default=0.0)
    # the parts of the latest result that /metrics exports (service.domain.evaluation
    # SUMMARY_PARTS), ~1.5 KB instead of the whole ~13 KB Score JSON
    latest_summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
