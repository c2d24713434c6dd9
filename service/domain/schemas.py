"""Pydantic schemas for the REST API, one per use (create, update, public).

Routes never return ORM rows: every answer goes through a ``*Public`` schema. Limits that
come from settings (text length, batch size, minimum reference size) are checked in the
service functions, because they can change per deployment.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from service.domain.clock import as_utc_or_none

# JSON escapes can carry lone UTF-16 surrogates ("\ud800") and NUL, which are valid JSON but
# cannot be stored as text (PostgreSQL rejects both; SQLite would store broken UTF-8).
UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


def storable_text(value: str) -> str:
    """``value`` unchanged, or ValueError when it cannot be stored as text."""
    match = UNSTORABLE_TEXT.search(value)
    if match is not None:
        what = "a NUL character" if match.group() == "\x00" else "an unpaired UTF-16 surrogate"
        raise ValueError(
            f"contains {what} at position {match.start()}; send valid Unicode text"
        )
    return value


# what a JSON body or line may nest: arrays and objects inside each other. Deeper input is
# refused before it is parsed, because parsing, validating and re-serialising it recurse
# (Python's json module and pydantic raise RecursionError a few hundred levels down).
MAX_JSON_DEPTH = 64
_JSON_STRUCTURE_BYTES = re.compile(rb'["\\\[\]{}]')
_JSON_STRUCTURE_TEXT = re.compile(r'["\\\[\]{}]')


def json_depth_exceeds(data: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON ``data`` nests arrays/objects more than ``limit`` deep, without parsing
    it (brackets inside strings do not count). O(n) in C for most input: only the
    structural characters reach Python."""
    opening = (data.count(b"[") + data.count(b"{") if isinstance(data, bytes)
               else data.count("[") + data.count("{"))
    if opening <= limit:
        return False
    pattern = _JSON_STRUCTURE_BYTES if isinstance(data, bytes) else _JSON_STRUCTURE_TEXT
    depth, in_string, skip = 0, False, -1
    for match in pattern.finditer(data):
        pos = match.start()
        if pos == skip:  # the character after a backslash inside a string
            continue
        ch = match.group()[:1]
        if ch in (b'"', '"'):
            in_string = not in_string
        elif in_string:
            if ch in (b"\\", "\\"):
                skip = pos + 1
        elif ch in (b"[", b"{", "[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif ch in (b"]", b"}", "]", "}"):
            depth -= 1
    return False


Text = Annotated[str, AfterValidator(storable_text)]
UtcDatetime = Annotated[datetime | None, AfterValidator(as_utc_or_none)]
# SQLite returns stored timestamps without their zone; they were written in UTC
Utc = Annotated[datetime, AfterValidator(as_utc_or_none)]
# model names appear in URL paths and Prometheus labels: keep them plain
ModelName = Annotated[
    str,
    Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
          examples=["support-bot"]),
]
ReferenceName = Annotated[
    str,
    Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$",
          examples=["support-tickets-2024"]),
]
Description = Annotated[str, Field(max_length=2000), AfterValidator(storable_text)]
# reference ids are 32-bit integers in the database
ReferenceId = Annotated[int, Field(ge=1, le=2**31 - 1)]


class _In(BaseModel):
    """Request bodies: unknown fields are an error, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- references


class ReferenceCreate(_In):
    name: ReferenceName
    documents: list[Text] = Field(
        description="human-written documents, one string each",
        examples=[["The first human document.", "The second one."]],
    )
    description: Description | None = None


class ReferencePublic(BaseModel):
    id: int
    name: str
    version: int
    sha256: str = Field(description="sha256 of the normalised documents (the profile's id)")
    document_count: int
    token_count: int
    description: str | None = None
    created_at: Utc


class ReferenceList(BaseModel):
    references: list[ReferencePublic]
    next_cursor: str | None = Field(default=None,
                                    description="pass as `cursor` for the next page")


class ReferenceSummary(BaseModel):
    id: int
    name: str
    version: int
    sha256: str


# ---------------------------------------------------------------- models


class WindowPolicyIn(_In):
    """A window closes when it holds ``size`` samples, or when its oldest sample is
    ``max_age_seconds`` old and it holds at least ``min_size`` (null: no age limit)."""

    size: int | None = Field(default=None, ge=2, le=100_000)
    max_age_seconds: int | None = Field(default=None, ge=1, le=365 * 86400)
    min_size: int | None = Field(default=None, ge=1, le=100_000)


class WindowPolicy(BaseModel):
    size: int
    max_age_seconds: int | None
    min_size: int


# per-model settings that ModelCreate and ModelUpdate share; null means the global default
SamplesDays = Annotated[int | None, Field(
    ge=0, le=36_500,
    description="keep sample texts this many days (null: COLLAPSEWATCH_RETENTION_SAMPLES_DAYS)")]
EvaluationsDays = Annotated[int | None, Field(
    ge=1, le=36_500,
    description="keep evaluations and scores this many days "
                "(null: COLLAPSEWATCH_RETENTION_EVALUATIONS_DAYS)")]
MetricSeries = Annotated[bool | None, Field(
    description="export the per-metric Prometheus series for this model "
                "(null: COLLAPSEWATCH_METRICS_PER_METRIC_SERIES)")]
# a stream (a data source, not a deployed model) is judged for its synthetic share against
# the baselines of known generators (docs/synthetic-share.md)
ModelKind = Annotated[Literal["model", "stream"], Field(
    description="model: a deployed generator; stream: a data source whose windows also get "
                "a synthetic_share estimated against its sources")]
# each source adds a dimension to the mixture's score space: a few keep a window's estimate
# within its cost budget (benchmarks/stream.py)
MAX_SOURCES = 3
Sources = Annotated[list[Annotated[int, Field(ge=1, le=2**31 - 1)]] | None, Field(
    max_length=MAX_SOURCES,
    description="a stream's generator sources: baseline ids (of any model) built against the "
                "stream's reference")]
MaxSyntheticShare = Annotated[float | None, Field(
    ge=0.0, le=1.0,
    description="a stream's mixing-ratio guard: the synthetic_share alert fires when the "
                "share's lower bound exceeds it (null: no guard)")]


class ModelCreate(_In):
    name: ModelName
    reference_id: ReferenceId
    window: WindowPolicyIn | None = None
    auto_baseline_windows: int | None = Field(
        default=None, ge=0, le=100,
        description="the first K windows become the baseline; 0 disables",
    )
    description: Description | None = None
    samples_days: SamplesDays = None
    evaluations_days: EvaluationsDays = None
    metric_series: MetricSeries = None
    kind: ModelKind = "model"
    sources: Sources = None
    max_synthetic_share: MaxSyntheticShare = None


class ModelUpdate(_In):
    """Only the fields present change. A new ``reference_id`` clears the baseline, which
    was built against the old reference and cannot be compared with the new one."""

    description: Description | None = None
    reference_id: ReferenceId | None = None
    window: WindowPolicyIn | None = None
    auto_baseline_windows: int | None = Field(default=None, ge=0, le=100)
    samples_days: SamplesDays = None
    evaluations_days: EvaluationsDays = None
    metric_series: MetricSeries = None
    kind: ModelKind | None = None
    sources: Sources = None
    max_synthetic_share: MaxSyntheticShare = None


class BaselineSummary(BaseModel):
    id: int
    name: str
    sha256: str
    source: str
    document_count: int
    human_ratios: dict[str, Any]
    created_at: Utc


class ModelPublic(BaseModel):
    id: int
    name: str
    description: str | None
    reference: ReferenceSummary
    window: WindowPolicy
    auto_baseline_windows: int
    baseline: BaselineSummary | None
    baseline_status: Literal["set", "collecting", "rejected", "none"] = Field(
        description="set: a baseline is pinned; collecting: the first windows will become "
                    "the baseline; rejected: the automatic baseline was refused (its windows "
                    "read collapse against human), later windows are still tried; none: no "
                    "baseline and none is being collected",
    )
    baseline_rejection: str | None = Field(
        default=None, description="why the automatic baseline was refused (rejected only)")
    samples_ingested: int
    last_sample_at: UtcDatetime
    samples_days: int | None = Field(default=None, description="null: the global default")
    evaluations_days: int | None = Field(default=None, description="null: the global default")
    metric_series: bool | None = Field(default=None, description="null: the global default")
    kind: Literal["model", "stream"] = "model"
    sources: list[int] = Field(default_factory=list,
                               description="a stream's source baseline ids (empty for a model)")
    max_synthetic_share: float | None = None
    created_at: Utc
    updated_at: Utc


class ModelList(BaseModel):
    models: list[ModelPublic]
    next_cursor: str | None = Field(default=None,
                                    description="pass as `cursor` for the next page")


# ---------------------------------------------------------------- samples


class SampleIn(_In):
    """One model output. Only pydantic's native checks run here, because this is validated
    500 times per batch: ``service.domain.ingest.check_batch`` rejects NUL and unpaired surrogates
    (naming the field) and ``service.domain.ingest`` stores timestamps in UTC."""

    # clients often number their samples: 17 is taken as "17"
    id: str = Field(min_length=1, max_length=200, coerce_numbers_to_str=True,
                    examples=["req-7f3a91"],
                    description="client id; a retried id is stored once per model")
    text: str = Field(description="the model output")
    prompt: str | None = None
    timestamp: datetime | None = Field(default=None, description="when the model produced "
                                       "it (ISO 8601 or Unix seconds; UTC when no zone is given)")
    attributes: dict[str, Any] | None = None


class SampleBatch(_In):
    samples: list[SampleIn] = Field(min_length=1)


class IngestResult(BaseModel):
    accepted: int = Field(description="samples stored by this request")
    duplicates: int = Field(description="samples whose id was already stored (or repeated "
                            "in this batch); stored once")


# ---------------------------------------------------------------- health


class Liveness(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    database: str
    schema_revision: str
