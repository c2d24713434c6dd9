"""Prometheus exporter: the latest evaluation of every model, read from the database.

The numbers come from the database, never from process memory, so every API replica
exports the same values, a restart loses nothing and no multiprocess mode is needed. One
snapshot is cached for ``metrics_cache_seconds`` so that several Prometheus servers scraping
at once cost one round of queries. A snapshot costs O(models), not O(history): the newest
finished evaluation's exported parts and the running totals of each model come from
``model_stats`` (kept up to date when a window is stored), the rest from indexed lookups of
unfinished work and firing alerts. The exposition (text format or OpenMetrics) is written
here, straight from the snapshot (see :class:`Family`).

Cardinality: signals, health and pipeline series for every model (about 60 series per
model, counted on a real ``/metrics`` in dashboards/README.md); the per-metric families
(``collapsewatch_metric_*``, six series per registry metric) only for models whose
``metric_series`` is true, or for every model with
``COLLAPSEWATCH_METRICS_PER_METRIC_SERIES=1`` (dashboards/README.md has the counts). A
stream adds 3·(sources + 1) + 2 synthetic-share series (at most three sources).

Every series a model will ever have exists from the moment the model exists: values not
known yet are NaN (Prometheus comparisons with NaN are false, so no alert fires on them),
counters start at 0 and ``collapsewatch_health_state`` says ``insufficient_data``. Labels
are bounded: model, signal, metric (from the metric registry), state, severity, bound.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from metrics import REGISTRY
from service.domain.alerts import SEVERITIES, SIGNALS, firing_counts
from service.domain.clock import as_utc_or_none
from service.domain.evaluation import DURATION_BUCKETS, SUMMARY_PARTS
from service.domain.profiles import source_names
from service.domain.tables import (
    Baseline,
    Evaluation,
    ModelStats,
    MonitoredModel,
    Notification,
    Reference,
    Sample,
)
from service.logging import get_logger

log = get_logger("collapsewatch.exporter")

HEALTH_STATES = ("healthy", "early_collapse", "collapse", "insufficient_data")
NOTIFICATION_STATES = ("pending", "sending", "sent", "dead")
BANDS = ("human", "baseline")
BOUNDS = ("low", "mean", "high")
NAN = float("nan")


def registry_metric_names() -> list[str]:
    """Metric names of the scoring library's registry."""
    return [spec.name for spec in REGISTRY]


@dataclass
class ModelSnapshot:
    name: str
    reference_name: str
    reference_sha256: str
    baseline_name: str | None = None
    baseline_sha256: str | None = None
    samples_ingested: int = 0
    last_sample_at: datetime | None = None
    result: dict[str, Any] | None = None
    health: str | None = None
    last_evaluation_at: datetime | None = None
    evaluations: dict[str, int] = field(default_factory=dict)
    # cumulative bucket counts, count, sum
    durations: tuple[list[int], int, float] = field(
        default_factory=lambda: ([0] * len(DURATION_BUCKETS), 0, 0.0))
    firing: dict[str, int] = field(default_factory=dict)
    owed_since: datetime | None = None
    # emit the per-metric families for this model (opt-in: models.metric_series, setting)
    per_metric: bool = True
    # streams: the source labels (their baselines' names) and the mixing-ratio guard
    stream_sources: list[str] | None = None
    max_synthetic_share: float | None = None


@dataclass
class Snapshot:
    taken_at: datetime
    models: list[ModelSnapshot]
    metric_names: list[str]
    notifications: dict[str, int]
    # (channel, kind, severity) -> dead-lettered notifications still kept
    dead_letters: dict[tuple[str, str, str], int] = field(default_factory=dict)


def _seconds(ts: datetime | None) -> float:
    return as_utc_or_none(ts).timestamp() if ts is not None else NAN


def _chunks(ids: list[int], size: int = 500) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


# the columns a snapshot reads (rows, not ORM objects: ~15 ms less at 1,000 models)
_MODEL_COLUMNS = (MonitoredModel.id, MonitoredModel.name, MonitoredModel.kind,
                  MonitoredModel.sources, MonitoredModel.metric_series,
                  MonitoredModel.window_max_age_seconds, MonitoredModel.max_synthetic_share,
                  MonitoredModel.samples_ingested, MonitoredModel.last_sample_at,
                  Reference.name.label("reference_name"),
                  Reference.sha256.label("reference_sha256"),
                  Baseline.name.label("baseline_name"), Baseline.sha256.label("baseline_sha256"),
                  ModelStats.latest_evaluation_id, ModelStats.latest_summary,
                  ModelStats.evaluations_done, ModelStats.evaluations_failed,
                  ModelStats.duration_buckets, ModelStats.duration_count,
                  ModelStats.duration_sum)


def take_snapshot(session: Session, now: datetime | None = None,
                  per_metric_default: bool = False) -> Snapshot:
    """Read everything the exporter needs: one row per model, its newest finished window,
    and indexed lookups of unfinished work and firing alerts (no scan of history)."""
    now = now or datetime.now(UTC)
    rows = session.execute(
        select(*_MODEL_COLUMNS)
        .join(Reference, Reference.id == MonitoredModel.reference_id)
        .outerjoin(Baseline, Baseline.id == MonitoredModel.baseline_id)
        .outerjoin(ModelStats, ModelStats.model_id == MonitoredModel.id)
        .where(MonitoredModel.deleted_at.is_(None))
        .order_by(MonitoredModel.name)).all()

    def per_metric(row: Any) -> bool:
        return row.metric_series if row.metric_series is not None else per_metric_default

    latest = _latest(session, [(r, per_metric(r)) for r in rows])
    # unfinished work: the status index keeps this proportional to the backlog
    unfinished: dict[int, tuple[int, datetime | None]] = {}
    for model_id, n, oldest in session.execute(
            select(Evaluation.model_id, func.count(), func.min(Evaluation.created_at))
            .where(Evaluation.status.in_(("pending", "running")))
            .group_by(Evaluation.model_id)).all():
        unfinished[model_id] = (int(n), as_utc_or_none(oldest))
    firing: dict[int, dict[str, int]] = {}
    for (model_id, severity), n in firing_counts(session).items():
        firing.setdefault(model_id, {})[severity] = n
    notifications = dict(session.execute(
        select(Notification.status, func.count()).group_by(Notification.status)).all())
    # streams' source names: one lookup of at most three baselines per stream
    source_ids = {bid for r in rows if r.kind == "stream" for bid in (r.sources or [])}
    baseline_names: dict[int, str] = {}
    for chunk in _chunks(sorted(source_ids)):
        baseline_names.update(session.execute(
            select(Baseline.id, Baseline.name).where(Baseline.id.in_(chunk))).all())
    dead_letters = _dead_letters(session)
    first_unwindowed = _first_unwindowed(session, rows)

    empty = ([0] * len(DURATION_BUCKETS), 0, 0.0)
    models = []
    for r in rows:
        result, ev = latest.get(r.id, (None, None))
        pending, oldest = unfinished.get(r.id, (0, None))
        stats = r.evaluations_done is not None  # a model_stats row exists
        durations = (([int(x) for x in r.duration_buckets or []]
                      + [0] * len(DURATION_BUCKETS))[:len(DURATION_BUCKETS)],
                     int(r.duration_count or 0), float(r.duration_sum or 0.0)
                     ) if stats else empty
        models.append(ModelSnapshot(
            name=r.name, reference_name=r.reference_name, reference_sha256=r.reference_sha256,
            baseline_name=r.baseline_name, baseline_sha256=r.baseline_sha256,
            samples_ingested=int(r.samples_ingested or 0),
            last_sample_at=as_utc_or_none(r.last_sample_at),
            result=result,
            health=ev.health if ev is not None else None,
            last_evaluation_at=as_utc_or_none((ev.finished_at or ev.created_at)
                                              if ev is not None else None),
            evaluations={"done": int(r.evaluations_done or 0),
                         "failed": int(r.evaluations_failed or 0),
                         "pending": pending},
            durations=durations,
            firing=firing.get(r.id, {}),
            owed_since=_owed_since(r, oldest, first_unwindowed.get(r.id)),
            per_metric=per_metric(r),
            stream_sources=_stream_sources(r, baseline_names),
            max_synthetic_share=r.max_synthetic_share,
        ))
    names = list(registry_metric_names())
    for m in models:
        for name in ((m.result or {}).get("metrics") or {}):
            if name not in names:
                names.append(name)
    return Snapshot(taken_at=now, models=models, metric_names=names, notifications=notifications,
                    dead_letters=dead_letters)


def _latest(session: Session, models: list[tuple[Any, bool]]
            ) -> dict[int, tuple[dict[str, Any], Any]]:
    """model id -> (the exported parts of its latest result, the evaluation's row), for
    (model row with its stats, per-metric series wanted) pairs. The parts come from the
    stats' summary; the per-metric rows (opt-in) and a summary not written yet (a window
    stored before the summary existed) are read from the result, one part at a time."""
    wanted = {s.latest_evaluation_id: (s, per) for s, per in models
              if s.latest_evaluation_id is not None}
    rows: dict[int, Any] = {}
    for chunk in _chunks(sorted(wanted)):
        rows.update((e.id, e) for e in session.execute(
            select(Evaluation.id, Evaluation.model_id, Evaluation.health,
                   Evaluation.finished_at, Evaluation.created_at)
            .where(Evaluation.id.in_(chunk))).all())
    groups: dict[tuple[str, ...], list[int]] = {}
    for eid, (s, per) in wanted.items():
        parts = (*(SUMMARY_PARTS if s.latest_summary is None else ()),
                 *(("metrics",) if per else ()))
        if parts:
            groups.setdefault(parts, []).append(eid)
    from_result: dict[int, dict[str, Any]] = {}
    for parts, ids in groups.items():
        for chunk in _chunks(sorted(ids)):
            for eid, *values in session.execute(
                    select(Evaluation.id, *(Evaluation.result[p] for p in parts))
                    .where(Evaluation.id.in_(chunk))).all():
                from_result[eid] = {p: v for p, v in zip(parts, values, strict=True)
                                    if v is not None}
    out = {}
    for eid, (s, _) in wanted.items():
        if eid in rows:
            out[s.id] = ({**(s.latest_summary or {}), **from_result.get(eid, {})},
                               rows[eid])
    return out


def _dead_letters(session: Session) -> dict[tuple[str, str, str], int]:
    """Dead-lettered notifications per channel and alert severity: a page that could not be
    delivered is announced by Prometheus, not by the channel that failed."""
    from service.domain.tables import Alert, Channel

    rows = session.execute(
        select(Channel.name, Channel.kind, Alert.severity, func.count())
        .select_from(Notification)
        .join(Channel, Channel.id == Notification.channel_id)
        .join(Alert, Alert.id == Notification.alert_id)
        .where(Notification.status == "dead")
        .group_by(Channel.name, Channel.kind, Alert.severity)).all()
    # every channel has its series from the start (0), so that the first dead letter is an
    # increase Prometheus can see, not a new series
    out = {(name, kind, severity): 0 for name, kind in
           session.execute(select(Channel.name, Channel.kind)).all() for severity in SEVERITIES}
    out.update({(name, kind, severity): int(n) for name, kind, severity, n in rows})
    return out


def _stream_sources(model: Any, names: dict[int, str]) -> list[str] | None:
    """A stream's source labels, named as its windows' ``by_source`` names them (a deleted
    baseline keeps its id as its label); None for a model."""
    if model.kind != "stream":
        return None
    ids = list(model.sources or [])
    return list(source_names([(bid, names.get(bid, str(bid))) for bid in ids]).values())


def _first_unwindowed(session: Session, models: Sequence[Any]
                      ) -> dict[int, datetime | None]:
    """When the oldest sample not yet in a window arrived, per model whose windows close by
    age: one statement per 500 models (a correlated subquery, each an index probe on
    (model_id, id)), not one round trip per model, which at 1,000 models cost ~50x more."""
    ids = [m.id for m in models if m.window_max_age_seconds is not None]
    out: dict[int, datetime | None] = {}
    for chunk in _chunks(ids):
        first = (select(Sample.received_at)
                 .where(Sample.model_id == MonitoredModel.id,
                        Sample.id > MonitoredModel.windowed_through_sample_id)
                 .order_by(Sample.id).limit(1)
                 .correlate(MonitoredModel).scalar_subquery())
        out.update(session.execute(
            select(MonitoredModel.id, first).where(MonitoredModel.id.in_(chunk))).all())
    return out


def _owed_since(model: Any, oldest_unfinished: datetime | None,
                first_unwindowed: datetime | None) -> datetime | None:
    """Since when a due window has waited: the oldest planned-but-unscored window, or the
    moment the unplanned samples became due by age. Full windows are planned within seconds
    of filling (by ingest or beat), so they are not looked for here; the
    ``evaluations_stale`` alert rule checks them."""
    candidates = [oldest_unfinished] if oldest_unfinished is not None else []
    if model.window_max_age_seconds is not None and first_unwindowed is not None:
        candidates.append(as_utc_or_none(first_unwindowed)
                          + timedelta(seconds=model.window_max_age_seconds))
    return min(candidates) if candidates else None


def _num(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return NAN if value is None else float(value)
    try:
        out = float(value)
    except (TypeError, ValueError):
        return NAN
    return out if math.isfinite(out) else NAN


def _flag(value: Any) -> float:
    return NAN if value is None else (1.0 if value else 0.0)


class Family:
    """One metric family, its samples already rendered as exposition lines.

    The exposition is written here rather than through prometheus_client's families and
    encoders: at 1,000 models (61,000 series) building its sample objects and encoding them
    took ~0.6 s, most of an uncached scrape. Both formats share the sample lines; they differ
    in the header of a counter (the text format names the family ``<name>_total``,
    OpenMetrics ``<name>``), in the escaping of HELP and in the closing ``# EOF``
    (Prometheus text format 0.0.4 and OpenMetrics 1.0 specifications)."""

    __slots__ = ("help", "kind", "lines", "name", "sample_name")

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help = name, kind, help_text
        self.sample_name = name + "_total" if kind == "counter" else name
        self.lines: list[str] = []

    def add(self, labels: str, value: float, suffix: str = "") -> None:
        """One sample: ``labels`` rendered by :func:`labels`, ``suffix`` for a histogram's
        ``_bucket``/``_count``/``_sum``."""
        self.lines.append(f"{self.sample_name}{suffix}{{{labels}}} {_value(value)}\n")

    def header(self, openmetrics: bool) -> str:
        if openmetrics:
            name = self.name
            text = self.help.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
        else:
            name = self.sample_name
            text = self.help.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {name} {text}\n# TYPE {name} {self.kind}\n"


def _escape(value: str) -> str:
    # label values: backslash, double quote and line feed are escaped in both formats
    return value.replace("\\", r"\\").replace('"', r'\"').replace("\n", r"\n")


def labels(**pairs: str) -> str:
    """``name="value",...`` with the values escaped."""
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if v in (math.inf, -math.inf):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def render(fams: Iterable[Family], openmetrics: bool = False) -> bytes:
    """The exposition of ``fams`` in the text format 0.0.4 or in OpenMetrics 1.0."""
    out: list[str] = []
    for f in fams:
        out.append(f.header(openmetrics))
        out.extend(f.lines)
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode()


def families(snap: Snapshot) -> list[Family]:
    """The metric families for one snapshot (pure)."""

    def gauge(name: str, text: str) -> Family:
        return Family(name, "gauge", text)

    ratio = {s: gauge(f"collapsewatch_{s}_ratio",
                      f"{s} signal of the latest window relative to human text of the same "
                      "size (1.0 = human-like)") for s in SIGNALS}
    base_ratio = {s: gauge(f"collapsewatch_{s}_baseline_ratio",
                           f"{s} signal of the latest window relative to the model's baseline "
                           "(NaN without a baseline)") for s in SIGNALS}
    sig_band = {b: gauge(f"collapsewatch_signal_{b}_band",
                         f"{b} band of the signal ratio for a window of this size (what 1.0 "
                         "+- noise looks like)") for b in BANDS}
    outside = gauge("collapsewatch_signal_outside_band",
                    "1 when the latest window's signal is outside the band")
    trend = gauge("collapsewatch_signal_trend",
                  "sequential (CUSUM) statistic of the signal since the last baseline pin, in "
                  "window sd (NaN before a scored window)")
    trend_threshold = gauge("collapsewatch_signal_trend_threshold",
                            "the statistic above which a sustained shift alarms")
    value = gauge("collapsewatch_metric_value", "metric value of the latest window")
    mratio = gauge("collapsewatch_metric_ratio",
                   "metric value / human mean for the latest window")
    mbase = gauge("collapsewatch_metric_baseline_ratio",
                  "metric value relative to the model's baseline")
    band = gauge("collapsewatch_metric_human_band",
                 "bootstrap band of the metric on human samples of the same size")
    health = gauge("collapsewatch_health_state",
                   "1 for the model's current health state, 0 for the others")
    ref_info = gauge("collapsewatch_reference_info",
                     "the frozen human reference a model is compared with")
    base_info = gauge("collapsewatch_baseline_info", "the model's current baseline")
    ingested = Family("collapsewatch_samples_ingested", "counter",
                      "samples accepted for the model")
    last_sample = gauge("collapsewatch_last_sample_timestamp_seconds",
                        "when the model's newest sample arrived (NaN: never)")
    firing = gauge("collapsewatch_alerts_firing", "collapsewatch's own alerts currently firing")
    last_eval = gauge("collapsewatch_last_evaluation_timestamp_seconds",
                      "when the latest finished window was scored (NaN: never)")
    docs = gauge("collapsewatch_evaluation_documents", "documents in the latest scored window")
    evals = Family("collapsewatch_evaluations", "counter", "finished evaluations by outcome")
    pending = gauge("collapsewatch_evaluations_pending", "windows planned but not scored yet")
    lag = gauge("collapsewatch_evaluation_lag_seconds",
                "how long a due window has waited for its evaluation (0: none)")
    duration = Family("collapsewatch_evaluation_duration_seconds", "histogram",
                      "time to score one window")
    outbox = gauge("collapsewatch_notifications", "notification outbox rows by status")
    share = {part: gauge(f"collapsewatch_synthetic_share{suffix}",
                         f"streams: {what} of the share of the latest window written by a "
                         "source (source=\"all\": by any of them; NaN before a window or "
                         "without an estimate)")
             for part, suffix, what in (("estimate", "", "estimate"),
                                        ("low", "_low", "95% lower bound"),
                                        ("high", "_high", "95% upper bound"))}
    share_max = gauge("collapsewatch_synthetic_share_max",
                      "streams: the share above which (lower bound) the synthetic_share alert "
                      "fires (NaN: no guard)")
    unexplained = gauge("collapsewatch_synthetic_share_unexplained",
                        "streams: share of the latest window that fits neither the reference "
                        "nor any source")

    # label strings that do not depend on the model, rendered once per snapshot
    signal_labels = {s: labels(signal=s) for s in SIGNALS}
    band_labels = {s: {bound: labels(signal=s, bound=bound) for bound in ("low", "high")}
                   for s in SIGNALS}
    outside_labels = {s: (labels(signal=s, band="human"), labels(signal=s, band="baseline"))
                      for s in SIGNALS}
    metric_labels = {n: (labels(metric=n), {b: labels(metric=n, bound=b) for b in BOUNDS})
                     for n in snap.metric_names}
    state_labels = {st: labels(state=st) for st in HEALTH_STATES}
    severity_labels = {sev: labels(severity=sev) for sev in SEVERITIES}
    le_labels = [labels(le=_le(b)) for b in DURATION_BUCKETS] + [labels(le="+Inf")]

    now = snap.taken_at
    for m in snap.models:
        ml = labels(model=m.name)
        result = m.result or {}
        signals = result.get("signals") or {}
        trends = result.get("trend") or {}
        for s in SIGNALS:
            sig = signals.get(s) or {}
            ratio[s].add(ml, _num(sig.get("ratio")))
            base_ratio[s].add(ml, _num(sig.get("baseline_ratio")))
            for b in BANDS:
                for bound in ("low", "high"):
                    sig_band[b].add(f"{ml},{band_labels[s][bound]}",
                                    _num(sig.get(f"{b}_{bound}")))
            human_out, base_out = outside_labels[s]
            outside.add(f"{ml},{human_out}", _flag(sig.get("outside_band")))
            outside.add(f"{ml},{base_out}", _flag(sig.get("outside_baseline_band")))
            state = trends.get(s) or {}
            trend.add(f"{ml},{signal_labels[s]}", _num(state.get("statistic")))
            trend_threshold.add(f"{ml},{signal_labels[s]}", _num(state.get("threshold")))
        metric_rows = result.get("metrics") or {}
        for name in (snap.metric_names if m.per_metric else ()):
            row = metric_rows.get(name) or {}
            one, bounds = metric_labels[name]
            value.add(f"{ml},{one}", _num(row.get("value")))
            mratio.add(f"{ml},{one}", _num(row.get("ratio")))
            mbase.add(f"{ml},{one}", _num(row.get("baseline_ratio")))
            for bound in BOUNDS:
                band.add(f"{ml},{bounds[bound]}", _num(row.get(f"human_{bound}")))
        state = m.health if m.health in HEALTH_STATES else "insufficient_data"
        for st in HEALTH_STATES:
            health.add(f"{ml},{state_labels[st]}", 1.0 if st == state else 0.0)
        ref_info.add(f"{ml},{labels(reference=m.reference_name, sha256=m.reference_sha256)}",
                     1.0)
        if m.baseline_sha256:
            base_info.add(f"{ml},{labels(baseline=m.baseline_name or '', sha256=m.baseline_sha256)}",
                          1.0)
        ingested.add(ml, float(m.samples_ingested))
        last_sample.add(ml, _seconds(m.last_sample_at))
        for sev in SEVERITIES:
            firing.add(f"{ml},{severity_labels[sev]}", float(m.firing.get(sev, 0)))
        last_eval.add(ml, _seconds(m.last_evaluation_at))
        docs.add(ml, _num(result.get("documents")))
        for status in ("done", "failed"):
            evals.add(f'{ml},status="{status}"', float(m.evaluations.get(status, 0)))
        pending.add(ml, float(m.evaluations.get("pending", 0)))
        lag.add(ml, max(0.0, (now - m.owed_since).total_seconds()) if m.owed_since else 0.0)
        cumulative, count, total = m.durations
        for le, n in zip(le_labels, (*cumulative, count), strict=True):
            duration.add(f"{ml},{le}", float(n), "_bucket")
        duration.add(ml, float(count), "_count")
        duration.add(ml, float(total), "_sum")
        if m.stream_sources is not None:
            estimated = result.get("synthetic_share") or {}
            by_source = estimated.get("by_source") or {}
            for source, row in (("all", estimated),
                                *((s, by_source.get(s) or {}) for s in m.stream_sources)):
                for part, family in share.items():
                    family.add(f"{ml},{labels(source=source)}", _num(row.get(part)))
            share_max.add(ml, _num(m.max_synthetic_share))
            unexplained.add(ml, _num(estimated.get("unexplained")))
    for status in NOTIFICATION_STATES:
        outbox.add(labels(status=status), float(snap.notifications.get(status, 0)))
    dead = gauge("collapsewatch_channel_notifications_dead",
                 "notifications given up on (dead-lettered) and still kept, per channel and "
                 "alert severity")
    for (channel, kind, severity), n in sorted(snap.dead_letters.items()):
        dead.add(labels(channel=channel, kind=kind, severity=severity), float(n))

    return [*ratio.values(), *base_ratio.values(), *sig_band.values(), outside, trend,
            trend_threshold, value, mratio, mbase, band, health, ref_info, base_info, ingested,
            last_sample, firing, last_eval, docs, evals, pending, lag, duration, outbox, dead,
            *share.values(), share_max, unexplained]


def _le(bound: float) -> str:
    return repr(float(bound))


class SnapshotCache:
    """The latest families per database, reused for ``ttl`` seconds (thread-safe), with
    their encoded bodies: a scrape within the ttl costs neither the queries nor the
    exposition."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # key -> (built at, families, encoded bodies by form)
        self._entries: dict[str, tuple[float, list[Family], dict[str, bytes]]] = {}

    def encoded(self, key: str, ttl: float, build: Callable[[], list[Family]], form: str,
                encode: Callable[[list[Family]], bytes]) -> bytes:
        """The families of ``key`` (built by ``build`` when older than ``ttl``) encoded by
        ``encode``, kept with them as ``form``."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or time.monotonic() - hit[0] >= ttl:
                # built under the lock: concurrent scrapes wait for one snapshot, not N
                started = time.monotonic()
                hit = (time.monotonic(), list(build()), {})
                self._entries[key] = hit
                log.debug("metrics snapshot built",
                          extra={"seconds": time.monotonic() - started})
            _, families_, bodies = hit
            if form not in bodies:
                bodies[form] = encode(families_)
            return bodies[form]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


CACHE = SnapshotCache()


def exposition(session_factory, cache_key: str, ttl: float, per_metric_default: bool,
               openmetrics: bool, form: str,
               compress: Callable[[bytes], bytes] | None = None) -> bytes:
    """The body of a scrape: the cached families in the text format or OpenMetrics and,
    with ``compress``, compressed; each ``form`` (content type and encoding) is encoded
    once per snapshot."""

    def build() -> list[Family]:
        with session_factory() as session:
            return families(take_snapshot(session, per_metric_default=per_metric_default))

    def encode(fams: list[Family]) -> bytes:
        body = render(fams, openmetrics)
        return compress(body) if compress is not None else body

    return CACHE.encoded(cache_key, ttl, build, form, encode)
