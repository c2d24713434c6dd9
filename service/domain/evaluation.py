"""Score one planned window: claim it, load its samples, call ``metrics.score``, store.

Crash safety and idempotency come from the database, not from the broker:

* **claim**: one conditional UPDATE moves an evaluation from ``pending`` (or from a
  ``running`` whose lease has run out, i.e. a worker died) to ``running`` and bumps
  ``attempts``. Two deliveries of the same message cannot both claim it.
* **lease**: a claim holds the window for ``scoring_lease_seconds`` (short, 30 s); a
  heartbeat thread renews it every third of that while the scorer runs. A slow window is
  never taken over from a live worker, and a killed worker's window is free within one
  lease (the reaper re-sends it).
* **store**: the result is written only if the row is still ``running`` with *our*
  attempt number, in the same transaction as the flattened ``scores`` rows, which are
  inserted with ON CONFLICT DO NOTHING on ``(evaluation_id, kind, name)``. A worker whose
  lease was taken over by another one writes nothing.

Profiles are cached per process by sha256: references and baselines are immutable, so a
cached profile can never be stale.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Self

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from service.domain.baselines import ensure_auto_baseline
from service.domain.clock import utcnow
from service.domain.db import insert_missing, is_postgres
from service.domain.probes import attach_probe_topics, probe_inputs
from service.domain.profiles import baseline_profile, reference_profile, stream_mixture
from service.domain.tables import (
    Baseline,
    Evaluation,
    ModelStats,
    MonitoredModel,
    Sample,
    Score,
)
from service.domain.trend import with_trend
from service.logging import get_logger
from service.settings import Settings

log = get_logger("collapsewatch.scoring")

# scoring-duration histogram bounds (collapsewatch_evaluation_duration_seconds): a window of
# a few hundred documents scores in well under a second, large windows take minutes
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def claim(session: Session, evaluation_id: int, settings: Settings,
          now: datetime | None = None) -> int | None:
    """Take the evaluation for scoring; return the attempt number, or None when it is done,
    failed, out of attempts, or running under another worker's live lease."""
    now = now or utcnow()
    result = session.execute(
        update(Evaluation)
        .where(
            Evaluation.id == evaluation_id,
            Evaluation.attempts < settings.evaluation_max_attempts,
            or_(Evaluation.status == "pending",
                (Evaluation.status == "running") & lease_expired(settings, now)),
        )
        .values(status="running", attempts=Evaluation.attempts + 1, started_at=now,
                lease_expires_at=now + timedelta(seconds=settings.scoring_lease_seconds),
                error=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    return session.scalar(select(Evaluation.attempts).where(Evaluation.id == evaluation_id))


def lease_expired(settings: Settings, now: datetime):
    """SQL condition: a running evaluation's lease has run out (rows claimed before leases
    existed fall back to ``started_at`` plus one lease)."""
    lease = timedelta(seconds=settings.scoring_lease_seconds)
    return or_(Evaluation.lease_expires_at < now,
               Evaluation.lease_expires_at.is_(None) & (Evaluation.started_at < now - lease))


def renew_lease(session: Session, evaluation_id: int, attempt: int, settings: Settings,
                now: datetime | None = None) -> bool:
    """Extend our lease; False when the evaluation is no longer ours (taken over, done)."""
    now = now or utcnow()
    done = session.execute(
        update(Evaluation)
        .where(Evaluation.id == evaluation_id, Evaluation.status == "running",
               Evaluation.attempts == attempt)
        .values(lease_expires_at=now + timedelta(seconds=settings.scoring_lease_seconds))
        .execution_options(synchronize_session=False))
    return done.rowcount == 1


class Heartbeat:
    """Renews a claim's lease every third of the lease from a background thread, until
    stopped. A failed renewal (database briefly away) is retried on the next beat; the
    lease is three beats long, so one miss costs nothing."""

    def __init__(self, evaluation_id: int, attempt: int, settings: Settings,
                 session_maker) -> None:
        self._args = (evaluation_id, attempt, settings)
        self._session_maker = session_maker
        self._stop = threading.Event()
        self._interval = max(0.05, settings.scoring_lease_seconds / 3)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"lease-{evaluation_id}")
        self.lost = False

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with self._session_maker() as session, session.begin():
                    if not renew_lease(session, *self._args):
                        self.lost = True
                        return
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried, never fatal
                log.warning("lease renewal failed; retrying",
                            extra={"evaluation_id": self._args[0], "error": str(exc)})


def note_timeout(session: Session, evaluation_id: int) -> int:
    """Count an attempt stopped by the soft time limit; return the count so far."""
    session.execute(update(Evaluation).where(Evaluation.id == evaluation_id)
                    .values(timeouts=Evaluation.timeouts + 1)
                    .execution_options(synchronize_session=False))
    return int(session.scalar(select(Evaluation.timeouts)
                              .where(Evaluation.id == evaluation_id)) or 0)


def choose_baseline(session: Session, evaluation: Evaluation) -> int | None:
    """The baseline this window is scored against: the model's current one, if it was built
    against the window's reference and the window is not part of the baseline's own data.
    An evaluation that already has one (an earlier attempt) keeps it."""
    if evaluation.baseline_id is not None:
        return evaluation.baseline_id
    current = session.scalar(
        select(MonitoredModel.baseline_id).where(MonitoredModel.id == evaluation.model_id)
    )
    if current is None:
        return None
    baseline = session.get(Baseline, current)
    if baseline is None or baseline.reference_id != evaluation.reference_id:
        return None
    if baseline.last_sample_id is not None and evaluation.last_sample_id <= baseline.last_sample_id:
        return None
    return baseline.id


def synthetic_share(session: Session, evaluation: Evaluation) -> Any:
    """For a stream's window: the mixture model its ``synthetic_share`` is estimated with
    (``metrics.score(..., mixture=)``), or a string saying why there is none; None for a
    model. The mixture is fetched here, inside the read session (built at most once per
    reference and sources, see ``service.domain.profiles.stream_mixture``); the estimate
    runs with the scoring, outside it.

    A share that cannot be estimated (a source deleted, or built against another reference
    than this window's) does not fail the window: its collapse scores stand, and
    ``synthetic_share_unavailable`` says why."""
    import metrics

    kind, sources = session.execute(
        select(MonitoredModel.kind, MonitoredModel.sources)
        .where(MonitoredModel.id == evaluation.model_id)).one()
    if kind != "stream":
        return None
    try:
        if not sources:
            raise LookupError("the stream has no sources")
        return stream_mixture(session, evaluation.reference_id, list(sources))
    except (LookupError, metrics.MetricsError) as exc:
        return f"{exc}"


def window_texts(session: Session, evaluation: Evaluation) -> list[str]:
    return list(session.scalars(
        select(Sample.text)
        .where(Sample.model_id == evaluation.model_id,
               Sample.id >= evaluation.first_sample_id,
               Sample.id <= evaluation.last_sample_id)
        .order_by(Sample.id)
    ))


_SCORE_FIELDS = ("value", "human_mean", "human_low", "human_high", "ratio", "percentile",
                 "outside_band", "baseline_ratio", "outside_baseline_band")


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


def score_rows(evaluation_id: int, result: dict[str, Any],
               metric_signals: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The Score JSON flattened into ``scores`` rows (kind ``signal`` and ``metric``). Pure."""
    metric_signals = metric_signals or {}
    rows: list[dict[str, Any]] = []
    for name, sig in sorted((result.get("signals") or {}).items()):
        sig = sig or {}
        value = sig.get("value", sig.get("ratio"))
        rows.append({
            "evaluation_id": evaluation_id, "kind": "signal", "name": name, "signal": name,
            "value": _number(value), "human_mean": None, "human_low": None, "human_high": None,
            "ratio": _number(sig.get("ratio")), "percentile": _number(sig.get("percentile")),
            "outside_band": _flag(sig.get("outside_band")),
            "baseline_ratio": _number(sig.get("baseline_ratio")),
            "outside_baseline_band": _flag(sig.get("outside_baseline_band")),
        })
    for name, met in sorted((result.get("metrics") or {}).items()):
        met = met or {}
        row = {"evaluation_id": evaluation_id, "kind": "metric", "name": name,
               "signal": met.get("signal") or metric_signals.get(name)}
        for field in _SCORE_FIELDS:
            raw = met.get(field)
            row[field] = _flag(raw) if field.startswith("outside") else _number(raw)
        rows.append(row)
    return rows


def _metric_signals() -> dict[str, str]:
    import metrics

    return {spec.name: spec.signal for spec in getattr(metrics, "REGISTRY", [])}


def _stats_row(session: Session, model_id: int) -> ModelStats:
    """The model's stats row, created if missing and locked until commit."""
    insert_missing(session, ModelStats.__table__, [{
        "model_id": model_id, "latest_evaluation_id": None, "latest_window_index": None,
        "evaluations_done": 0, "evaluations_failed": 0,
        "duration_buckets": [0] * len(DURATION_BUCKETS), "duration_count": 0,
        "duration_sum": 0.0}], keys=("model_id",))
    stmt = (select(ModelStats).where(ModelStats.model_id == model_id)
            .execution_options(populate_existing=True))
    if is_postgres(session):
        stmt = stmt.with_for_update()
    return session.scalar(stmt)


# the parts of a Score JSON that /metrics exports for every model, kept in model_stats with
# the latest window: the rest (per-metric rows, calibration, evidence) is most of the result's
# ~13 KB, and reading and decoding whole results was ~0.2 s of a scrape at 1,000 models
SUMMARY_PARTS = ("signals", "trend", "documents", "synthetic_share")


def result_summary(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The exported parts of a result (None without a result)."""
    if result is None:
        return None
    return {part: result[part] for part in SUMMARY_PARTS if result.get(part) is not None}


def record_done(session: Session, model_id: int, evaluation_id: int, window_index: int,
                duration: float, result: dict[str, Any] | None = None) -> None:
    """Count a stored window in ``model_stats`` (the exporter's O(models) source); the
    latest window's ``result`` is summarised there for the exporter."""
    stats = _stats_row(session, model_id)
    if stats.latest_window_index is None or window_index >= stats.latest_window_index:
        stats.latest_window_index = window_index
        stats.latest_evaluation_id = evaluation_id
        stats.latest_summary = result_summary(result)
    stats.evaluations_done = (stats.evaluations_done or 0) + 1
    buckets = list(stats.duration_buckets or [0] * len(DURATION_BUCKETS))
    buckets += [0] * (len(DURATION_BUCKETS) - len(buckets))
    stats.duration_buckets = [n + (1 if duration <= bound else 0)
                              for n, bound in zip(buckets, DURATION_BUCKETS, strict=False)]
    stats.duration_count = (stats.duration_count or 0) + 1
    stats.duration_sum = float(stats.duration_sum or 0.0) + float(duration)
    session.flush()


def record_failed(session: Session, model_id: int) -> None:
    stats = _stats_row(session, model_id)
    stats.evaluations_failed = (stats.evaluations_failed or 0) + 1
    session.flush()


def store(session: Session, evaluation_id: int, attempt: int, baseline_id: int | None,
          result: dict[str, Any], duration: float, now: datetime | None = None) -> bool:
    """Write the result if this attempt still owns the evaluation; True when written."""
    now = now or utcnow()
    written = session.execute(
        update(Evaluation)
        .where(Evaluation.id == evaluation_id, Evaluation.status == "running",
               Evaluation.attempts == attempt)
        .values(status="done", result=result, health=result.get("health"),
                documents=result.get("documents"), tokens=result.get("tokens"),
                baseline_id=baseline_id, duration_seconds=duration, finished_at=now,
                error=None)
        .execution_options(synchronize_session=False)
    )
    if written.rowcount != 1:
        return False
    insert_missing(session, Score.__table__, score_rows(evaluation_id, result, _metric_signals()),
                   keys=("evaluation_id", "kind", "name"))
    model_id, window_index = session.execute(
        select(Evaluation.model_id, Evaluation.window_index)
        .where(Evaluation.id == evaluation_id)).one()
    record_done(session, model_id, evaluation_id, window_index, duration, result)
    return True


def fail(session: Session, evaluation_id: int, error: str, attempt: int | None = None) -> bool:
    """Mark failed (for good): a deterministic error, or out of attempts."""
    stmt = update(Evaluation).where(Evaluation.id == evaluation_id,
                                    Evaluation.status.in_(("pending", "running")))
    if attempt is not None:
        stmt = stmt.where(Evaluation.attempts == attempt)
    done = session.execute(stmt.values(status="failed", error=error[:2000], finished_at=utcnow())
                           .execution_options(synchronize_session=False))
    if done.rowcount != 1:
        return False
    model_id = session.scalar(select(Evaluation.model_id).where(Evaluation.id == evaluation_id))
    record_failed(session, model_id)
    return True


def release(session: Session, evaluation_id: int, attempt: int, error: str) -> bool:
    """Give a claimed evaluation back (a transient error): pending again, error noted."""
    done = session.execute(
        update(Evaluation)
        .where(Evaluation.id == evaluation_id, Evaluation.status == "running",
               Evaluation.attempts == attempt)
        .values(status="pending", error=error[:2000])
        .execution_options(synchronize_session=False)
    )
    return done.rowcount == 1


@dataclass(frozen=True)
class Outcome:
    """What ``score_window`` did: ``done``, ``skipped`` (not ours to score), ``failed``,
    or ``lost`` (scored, but another worker took the lease meanwhile)."""

    status: str
    evaluation_id: int
    model_id: int | None = None
    health: str | None = None
    attempt: int | None = None


class TransientError(Exception):
    """Scoring failed for a reason that may pass (database, lost connection): retry."""

    def __init__(self, evaluation_id: int, attempt: int, cause: BaseException) -> None:
        super().__init__(f"evaluation {evaluation_id} attempt {attempt}: {cause!r}")
        self.evaluation_id = evaluation_id
        self.attempt = attempt


def score_window(evaluation_id: int, settings: Settings, session_maker) -> Outcome:
    """Claim, score and store one evaluation. Safe to call any number of times."""
    with session_maker() as session, session.begin():
        attempt = claim(session, evaluation_id, settings)
    if attempt is None:
        return Outcome("skipped", evaluation_id)

    with Heartbeat(evaluation_id, attempt, settings, session_maker):
        try:
            return _score_claimed(evaluation_id, attempt, settings, session_maker)
        except TransientError:
            raise
        except Exception as exc:
            # anything else that stops us holding the claim (e.g. the worker's soft time
            # limit raised outside the scoring itself): give the window back at once rather
            # than leave it to the lease
            with session_maker() as session, session.begin():
                release(session, evaluation_id, attempt, f"{type(exc).__name__}: {exc}")
            raise TransientError(evaluation_id, attempt, exc) from exc


def _score_claimed(evaluation_id: int, attempt: int, settings: Settings,
                   session_maker) -> Outcome:
    import metrics

    try:
        with session_maker() as session:
            evaluation = session.get(Evaluation, evaluation_id)
            model_id = evaluation.model_id
        # the first windows of a model may be due to become its baseline before this one
        # is scored against it
        ensure_auto_baseline(model_id, settings, session_maker)
        started = time.perf_counter()
        with session_maker() as session:
            evaluation = session.get(Evaluation, evaluation_id)
            baseline_id = choose_baseline(session, evaluation)
            reference = reference_profile(session, evaluation.reference_id)
            baseline = baseline_profile(session, baseline_id) if baseline_id else None
            texts = window_texts(session, evaluation)
            share = synthetic_share(session, evaluation)
            probes = probe_inputs(session, evaluation, baseline_id)
            session.rollback()  # release the read snapshot before the long computation
        if settings.scoring_delay_seconds > 0:
            # test hook (0 in production): a slow scorer for the lease and time-limit tests
            time.sleep(settings.scoring_delay_seconds)
        # EVIDENCE_TEXT=off: quoted outputs are never computed, so never stored
        # a stream's window also gets what part of it known generators wrote
        result = metrics.score(texts, reference, baseline, evidence_text=settings.evidence_text,
                               mixture=None if isinstance(share, str) else share)
        if isinstance(share, str):
            result["synthetic_share_unavailable"] = share
        attach_probe_topics(result, reference, probes)  # rare-topic probes, per probe topic
        duration = time.perf_counter() - started
    except (metrics.MetricsError, LookupError) as exc:
        # the same input would fail the same way again: fail for good, say why
        with session_maker() as session, session.begin():
            fail(session, evaluation_id, f"{type(exc).__name__}: {exc}", attempt)
        log.error("evaluation failed", extra={"evaluation_id": evaluation_id,
                                              "error": str(exc), "attempt": attempt})
        return Outcome("failed", evaluation_id, attempt=attempt)
    except Exception as exc:
        with session_maker() as session, session.begin():
            release(session, evaluation_id, attempt, f"{type(exc).__name__}: {exc}")
        raise TransientError(evaluation_id, attempt, exc) from exc

    with session_maker() as session, session.begin():
        # the sequential detector reads the stored windows before this one: a retry or a
        # re-score of the same window replaces it instead of counting twice
        result = with_trend(session, evaluation_id, baseline_id, result)
        written = store(session, evaluation_id, attempt, baseline_id, result, duration)
    if not written:
        log.warning("result discarded: the evaluation was taken over",
                    extra={"evaluation_id": evaluation_id, "attempt": attempt})
        return Outcome("lost", evaluation_id, model_id, attempt=attempt)
    log.info("window scored", extra={
        "evaluation_id": evaluation_id, "model_id": model_id, "health": result.get("health"),
        "documents": result.get("documents"), "duration_seconds": round(duration, 3),
        "attempt": attempt, "baseline_id": baseline_id,
    })
    return Outcome("done", evaluation_id, model_id, result.get("health"), attempt)
