"""Early warning in the service: the sequential detector over a model's stored windows.

The detector (:func:`metrics.trend.trend`) is a pure function of the ordered window scores
since the last baseline pin. Here those are the model's *stored* evaluations with the same
reference and baseline, keyed by ``window_index``: a window scored twice (retry, re-score,
a worker that lost its lease) is one key, so it cannot count twice, and a restarted worker
reads the same history. A re-pin changes ``baseline_id`` and starts the detector again.

Only the last ``LOOKBACK`` windows are read, and only their ``signals`` (not the whole
Score JSON): the statistic returns to 0 within a few in-control windows, so a longer
history changes nothing in practice and would make each window cost O(history). The
detector's head start applies only when the windows read begin at the pin (fewer than
``LOOKBACK`` before this one).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.domain.tables import Evaluation

LOOKBACK = 500


def window_trend(session: Session, evaluation_id: int, baseline_id: int | None,
                 result: dict[str, Any]) -> dict[str, dict]:
    """The detector state after this window, from the stored windows before it (same
    model, reference and baseline) and this window's fresh ``result``."""
    from metrics.trend import trend

    model_id, reference_id, window_index = session.execute(
        select(Evaluation.model_id, Evaluation.reference_id, Evaluation.window_index)
        .where(Evaluation.id == evaluation_id)).one()
    same_baseline = (Evaluation.baseline_id.is_(None) if baseline_id is None
                     else Evaluation.baseline_id == baseline_id)
    rows = session.execute(
        select(Evaluation.window_index, Evaluation.result["signals"])
        .where(Evaluation.model_id == model_id, Evaluation.reference_id == reference_id,
               same_baseline, Evaluation.status == "done",
               Evaluation.window_index < window_index)
        .order_by(Evaluation.window_index.desc())
        .limit(LOOKBACK)
    ).all()
    keys = [int(index) for index, _ in rows] + [int(window_index)]
    scores = [{"signals": signals or {}} for _, signals in rows]
    scores.append({"signals": result.get("signals") or {}})
    return trend(scores, keys, from_pin=len(rows) < LOOKBACK)


def with_trend(session: Session, evaluation_id: int, baseline_id: int | None,
               result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with ``trend`` and the health the trend implies (a sustained alarm makes
    a window at least ``early_collapse``; the window's own verdict stays in
    ``window_health``)."""
    from metrics.trend import trend_health

    state = window_trend(session, evaluation_id, baseline_id, result)
    own = result.get("health")
    return {**result, "trend": state, "window_health": own,
            "health": trend_health(own, state) if own else own}
