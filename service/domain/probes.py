"""Rare-topic probe answers of a window and of its baseline (``collectors/prober.py`` marks
them ``attributes.rare_topic`` with ``attributes.topic``), for the evidence's
``probe_topics`` (``metrics.semantic.probe_topics``): per probe topic, whether the answers
still land in the reference topics the baseline's answers landed in."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.domain.tables import Baseline, Evaluation, Sample

# the baseline's newest probe answers read per window: enough for a stable landing per probe
# topic, few enough that a model whose probes are sparse is not scanned back to its start
BASELINE_PROBE_ANSWERS = 1000
UNNAMED = "rare topics"  # a rare-topic probe without a topic name


def _answers(stmt) -> list[tuple[str, str]]:
    return [(str((attrs or {}).get("topic") or UNNAMED), text) for text, attrs in stmt]


def _probe_rows(model_id: int):
    return (select(Sample.text, Sample.attributes)
            .where(Sample.model_id == model_id,
                   Sample.attributes["rare_topic"].as_boolean().is_(True)))


def window_probe_answers(session: Session, evaluation: Evaluation) -> list[tuple[str, str]]:
    """(probe topic, text) of the window's rare-topic probe answers."""
    stmt = (_probe_rows(evaluation.model_id)
            .where(Sample.id >= evaluation.first_sample_id,
                   Sample.id <= evaluation.last_sample_id)
            .order_by(Sample.id))
    return _answers(session.execute(stmt))


def baseline_probe_answers(session: Session, baseline_id: int | None) -> list[tuple[str, str]]:
    """(probe topic, text) of the probe answers a baseline was built from, while they are
    stored: a baseline of a time range or of the first windows (an uploaded baseline has
    no samples, and retention may have deleted old ones: then there is nothing to compare)."""
    baseline = session.get(Baseline, baseline_id) if baseline_id is not None else None
    if baseline is None or baseline.last_sample_id is None:
        return []
    stmt = _probe_rows(baseline.model_id).where(Sample.id <= baseline.last_sample_id)
    if baseline.range_from is not None:
        stmt = stmt.where(Sample.received_at >= baseline.range_from)
    if baseline.range_to is not None:
        stmt = stmt.where(Sample.received_at <= baseline.range_to)
    rows = session.execute(stmt.order_by(Sample.id.desc()).limit(BASELINE_PROBE_ANSWERS))
    return _answers(rows)


def probe_inputs(session: Session, evaluation: Evaluation,
                 baseline_id: int | None) -> dict[str, Any]:
    """What :func:`attach_probe_topics` needs, read inside the scoring read session."""
    window = window_probe_answers(session, evaluation)
    return {"window": window,
            "baseline": baseline_probe_answers(session, baseline_id) if window else []}


def attach_probe_topics(result: dict[str, Any], reference: Any, inputs: dict[str, Any]) -> None:
    """Put ``probe_topics`` in the Score JSON's evidence when the window has probe answers
    (left out otherwise, so windows without probes keep their evidence as it was)."""
    import metrics.semantic

    entries = metrics.semantic.probe_topics(reference, inputs["window"], inputs["baseline"])
    evidence = result.get("evidence")
    if entries is not None and isinstance(evidence, dict):
        evidence["probe_topics"] = entries
