"""Response shapes of the Score JSON (DESIGN.md), of stored evaluations and of a model's health.

They describe what the routes send so that ``/docs`` shows the real shapes. The routes send
the stored JSON as it is (the Score JSON is produced by ``metrics.score`` and stored whole),
so these models allow extra keys: a field added to the Score JSON appears on the wire before
it is described here. ``tests/service/test_score_schemas.py`` validates real responses
against them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Health = Literal["healthy", "early_collapse", "collapse", "insufficient_data"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ProfileRef(_Open):
    name: str
    sha256: str


class SignalScore(_Open):
    ratio: float | None = Field(description="window / human mean; 1.0 is human-like")
    outside_band: bool
    human_low: float | None = None
    human_high: float | None = None
    baseline_ratio: float | None = Field(None, description="window / baseline mean")
    outside_baseline_band: bool | None = None
    baseline_low: float | None = None
    baseline_high: float | None = None
    z: float | None = Field(None, description="standardised deviation from the band the window "
                                              "is judged by (baseline when pinned, else human)")


class MetricScore(_Open):
    value: float | None
    human_mean: float | None = None
    human_low: float | None = None
    human_high: float | None = None
    ratio: float | None = None
    percentile: float | None = None
    outside_band: bool | None = None
    signal: str | None = None
    direction: str | None = None
    baseline_mean: float | None = None
    baseline_ratio: float | None = None
    outside_baseline_band: bool | None = None
    z: float | None = None


class ShareInterval(_Open):
    estimate: float
    low: float = Field(description="lower bound of the 95% bootstrap interval")
    high: float = Field(description="upper bound of the 95% bootstrap interval")


class SharePart(ShareInterval):
    """One estimator of a joined synthetic share."""

    unexplained: float
    documents: int = Field(description="documents this estimator read")


class SyntheticShare(ShareInterval):
    """A stream's window: the share written by its known sources (docs/synthetic-share.md)."""

    by_source: dict[str, ShareInterval] = Field(
        description="per source baseline, by its name (name#id when two share a name)")
    unexplained: float = Field(description="share that fits neither the human reference nor "
                                           "any source")
    scores: str | None = Field(None, description='what the documents were scored by: "lexical" '
                               '(the LM likelihood ratio), "lexical+semantic" (plus an '
                               'embedding discriminant, MixtureConfig.semantic) or "joined" '
                               '(both: the midpoint of their estimates, the span of their '
                               'intervals; each in parts)')
    documents: int | None = Field(None, description="documents the estimate read: every "
                                  "document with the LM ratio alone; with the embedding "
                                  "score, the ones the semantic metrics embed (up to 512)")
    parts: dict[str, SharePart] | None = Field(
        None, description='"joined" only: each estimator\'s own estimate, by its scores')


class ScoreJSON(_Open):
    """One scored window, as ``collapsewatch score --format json`` prints it."""

    reference: ProfileRef | None
    baseline: ProfileRef | None
    documents: int | None
    tokens: int | None
    token_budget: int | None = None
    health: Health | None
    signals: dict[str, SignalScore]
    metrics: dict[str, MetricScore]
    synthetic_share: SyntheticShare | None = Field(
        None, description="streams only: the share of the window written by the stream's "
                          "sources, with its 95% interval")
    synthetic_share_unavailable: str | None = Field(
        None, description="streams only: why no synthetic_share could be estimated")


class EvaluationPublic(ScoreJSON):
    """A stored window: its Score JSON plus where it sits in the model's stream."""

    id: int
    window_index: int
    window_start: datetime | None
    window_end: datetime | None
    created_at: datetime | None
    finished_at: datetime | None
    status: Literal["pending", "running", "done", "failed"]
    sample_count: int
    first_sample_id: int | None
    last_sample_id: int | None
    duration_seconds: float | None
    error: str | None


class EvaluationList(BaseModel):
    evaluations: list[EvaluationPublic]
    next_cursor: str | None = Field(default=None,
                                    description="pass as `cursor` for the next page")


class BaselineCollection(BaseModel):
    auto_baseline_windows: int
    windows_closed: int


class HealthPublic(ScoreJSON):
    """The latest scored window of a model (``insufficient_data`` before the first)."""

    id: int | None
    window_start: datetime | None
    window_end: datetime | None
    created_at: datetime | None
    model: str
    baseline_status: str
    baseline_rejection: str | None = None  # why the automatic baseline was refused
    baseline_collection: BaselineCollection | None = None
    evaluations_pending: int
    samples_ingested: int

