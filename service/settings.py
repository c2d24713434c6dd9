"""One settings class, read once (pydantic-settings, prefix ``COLLAPSEWATCH_``).

Defaults give the embedded mode: a SQLite file under ``./.collapsewatch`` and an
embedded Celery broker (kombu ``sqla+sqlite``) next to it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COLLAPSEWATCH_", extra="ignore")

    # storage and broker
    data_dir: Path = Path(".collapsewatch")
    database_url: str | None = None  # default: sqlite:///<data_dir>/collapsewatch.db
    broker_url: str | None = None  # default: sqla+sqlite:///<data_dir>/broker.db

    # auth: reads need a key when the API listens off loopback (LISTEN_HOST, set by
    # `collapsewatch api/serve`; unknown counts as off loopback); REQUIRE_READ_KEY=1 makes
    # every read need one, /metrics included (e.g. behind a reverse proxy on the same host);
    # PUBLIC_READS=1 opens reads off loopback
    require_read_key: bool = False
    public_reads: bool = False
    # EVIDENCE_TEXT=off: evidence never quotes sample text (duplicate groups and typical
    # examples lose their texts; n-grams and vanished terms stay), in the CLI and the API
    evidence_text: bool = True
    # what a stream's synthetic share is estimated with (metrics.mixture.stream_mixture):
    # "joined" (the LM ratio alone and with the embedding score, intervals spanned; the LM
    # ratio alone when the profiles have no embeddings), "lexical", or "semantic"
    # (docs/synthetic-share.md, "Streams in the service")
    stream_share_scores: Literal["joined", "lexical", "semantic"] = "joined"
    # STREAM_SEMANTIC_SHARE=on: the earlier spelling of STREAM_SHARE_SCORES=semantic (wins)
    stream_semantic_share: bool = False
    listen_host: str | None = None
    # the port the API listens on (set by `collapsewatch api/serve` next to LISTEN_HOST)
    listen_port: int | None = None
    # when set, /metrics needs `Authorization: Bearer <token>` (or an API key)
    metrics_token: str | None = None
    # comma-separated origins allowed to call the API from a browser (none by default)
    cors_origins: str = ""
    # per API key, per API process: requests a second and the burst (0 = no limit)
    rate_limit_per_key: float = 50.0
    rate_limit_burst: float = 100.0
    # how often a key's last_used_at is written (it is read on every request)
    key_last_used_interval_seconds: float = 60.0

    # limits
    max_body_bytes: int = 10 * 1024 * 1024
    max_text_chars: int = 100_000
    # a sample's attributes as compact JSON (labels, not payloads)
    max_attributes_bytes: int = 16 * 1024
    # one document of a reference upload
    max_reference_document_chars: int = 100_000
    # a baseline built from a time range reads its samples this many rows at a time
    baseline_range_chunk_rows: int = 1_000
    max_batch_size: int = 1_000
    min_reference_documents: int = 200
    max_reference_documents: int = 200_000

    # windows (defaults for new models)
    default_window_size: int = 500
    default_window_max_age_seconds: int = 3600
    default_window_min_size: int = 50
    auto_baseline_windows: int = 3

    # OTLP trace receiver (POST /v1/traces): span model names -> monitored models, rules as
    # "gpt-4o*=chatbot, llama-3-8b=summarizer, @collapsewatch.model" (collectors.otlp)
    otlp_model_rules: str = ""
    # unknown model names in spans become new models on this reference (its newest version)
    auto_create_models: bool = False
    auto_create_reference: str | None = None

    # pipeline
    plan_interval_seconds: float = 2.0
    # the API plans a window as soon as an ingest request fills it (beat still plans
    # windows closed by age, and any window the API could not)
    plan_on_ingest: bool = True
    reaper_timeout_seconds: float = 300.0
    # computed bands not used for this long are dropped from the database (a cache)
    band_cache_keep_days: float = 30.0
    # window sizes (documents) whose human bands a worker computes right after a reference
    # is created, so a window of any size between two of them gets an interpolated band
    # instead of computing its own (sizes the reference's calibration pool cannot serve
    # are left out; "" computes none: every new size is then computed on first use)
    reference_band_sizes: str = Field("50,100,200,500,1000,2000",
                                      pattern=r"^\s*(\d+\s*(,\s*\d+\s*)*)?$")
    evaluation_max_attempts: int = 5
    # a worker holds the window it scores for this long and renews the lease every third
    # of it while scoring (heartbeat): a window held by a killed worker is taken over after
    # at most this long (plus one reaper period); a live, slow scorer never is
    scoring_lease_seconds: float = 30.0
    # Celery time limits of score_window: at the soft limit the task stops cleanly and the
    # window is given back to be retried once more (elsewhere); the hard limit kills it
    score_soft_time_limit_seconds: float = 900.0
    score_time_limit_seconds: float = 960.0
    # the largest window a model may ask for (POST/PATCH /models): a window of this many
    # samples scores well within the soft time limit on one core
    max_window_size: int = 20_000
    # test hook: a worker sleeps this long before scoring each window (0 in production)
    scoring_delay_seconds: float = 0.0
    # semantic metrics: an embedding model other than the pinned all-MiniLM-L6-v2 int8
    # (both paths: an ONNX encoder and its tokenizer.json); nothing is ever downloaded
    embedding_model: Path | None = None
    embedding_tokenizer: Path | None = None

    # retention (global defaults; a model's own samples_days / evaluations_days win)
    retention_samples_days: int = 30
    retention_evaluations_days: int = 400
    # resolved alerts and delivered (or given-up) notifications
    retention_alerts_days: int = 90
    # rows per DELETE statement of the reaper's retention pass; each batch is its own short
    # transaction, so ingest never waits behind a large delete
    retention_batch_rows: int = 5_000
    # batches per reaper pass (the rest waits for the next pass)
    retention_max_batches: int = 20
    # threads of the Celery worker that `collapsewatch serve` starts
    embedded_worker_concurrency: int = 2
    # how often a worker asks the embedded SQL broker for new messages (kombu polls it;
    # Redis pushes, so this does not apply there)
    embedded_broker_poll_seconds: float = 0.1

    # exporter
    metrics_cache_seconds: float = 5.0
    # per-metric series (collapsewatch_metric_*) for every model; off: only models whose
    # metric_series is true get them (signals, health and pipeline series always)
    metrics_per_metric_series: bool = False

    # alerting: rule defaults for new models and notification delivery (outbox)
    alert_fire_after_windows: int = 2
    alert_resolve_after_windows: int = 2
    alert_no_samples_seconds: int = 3600
    # how long a due window may wait for its evaluation
    alert_evaluations_stale_seconds: int = 900
    notify_timeout_seconds: float = 10.0
    # a notification is retried (backoff doubling from BASE up to MAX, each delay shortened
    # by a random share of up to JITTER so that many rows do not retry in lockstep) until
    # RETRY_HOURS after it was written; then it is dead-lettered, which Prometheus alerts on
    # (collapsewatch_channel_notifications_dead). MAX_ATTEMPTS > 0 also caps the attempts.
    notify_retry_hours: float = 6.0
    notify_max_attempts: int = 0
    notify_backoff_base_seconds: float = 5.0
    notify_backoff_max_seconds: float = 900.0
    notify_backoff_jitter: float = Field(default=0.2, ge=0.0, le=1.0)
    liveness_interval_seconds: float = 30.0
    outbox_sweep_interval_seconds: float = 10.0
    # a row claimed for sending and not finished within this time is retried
    notify_lease_seconds: float = 120.0
    # shown in notifications as a link back to the service; unset, links use the address
    # the API listens on (LISTEN_HOST and LISTEN_PORT, see link_base_url)
    public_url: str = "http://127.0.0.1:8000"
    # comma-separated hosts a channel may call even though they resolve to loopback, private
    # or link-local addresses (e.g. an internal webhook receiver); empty: public hosts only
    channel_allowed_hosts: str = ""
    # Fernet key (cryptography) that encrypts channel secrets at rest; the old key(s),
    # comma-separated, still decrypt during `collapsewatch secrets rotate`
    secret_key: SecretStr | None = None
    secret_key_old: SecretStr | None = None

    # logging
    log_level: str = "INFO"
    log_json: bool = True

    @property
    def reference_band_grid(self) -> tuple[int, ...]:
        return tuple(sorted({int(v) for v in self.reference_band_sizes.split(",")
                             if v.strip() and int(v) > 0}))

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'collapsewatch.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def link_base_url(self) -> str:
        """Where links in notifications point: PUBLIC_URL when it is set, else the address
        the API listens on (a wildcard address becomes this machine's name, the one part of
        it another machine can reach), else the PUBLIC_URL default."""
        if "public_url" in self.model_fields_set or not self.listen_host or not self.listen_port:
            return self.public_url.rstrip("/")
        host = self.listen_host.strip("[]")
        if host in ("0.0.0.0", "::", ""):
            import socket

            host = socket.getfqdn() or socket.gethostname()
        if ":" in host:
            host = f"[{host}]"  # an IPv6 literal in a URL
        return f"http://{host}:{self.listen_port}"

    @property
    def embedded_broker(self) -> bool:
        return self.resolved_broker_url.startswith("sqla+")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests call ``get_settings.cache_clear()``."""
    return Settings()


__all__ = ["Field", "Settings", "get_settings"]
