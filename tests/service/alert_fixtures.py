"""Helpers for the alerting tests: rows written the way the pipeline writes them.

Alerting reads only what the pipeline stores (evaluations with Score JSON and a health
column), so these helpers insert those rows directly; the reference row carries placeholder
profile bytes because nothing on the alerting side loads a profile.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from service.domain.db import session_scope
from service.domain.evaluation import record_done, record_failed
from service.domain.tables import Channel, Evaluation, MonitoredModel, Reference, Sample

SIGNAL_RATIOS = {
    "healthy": (1.0, 0.97, 1.01),
    "early_collapse": (0.95, 0.55, 1.1),
    "collapse": (0.45, 0.2, 2.4),
    "insufficient_data": (None, None, None),
}


def score_json(health: str, *, ratios: tuple | None = None, baseline: bool = True,
               documents: int = 200) -> dict[str, Any]:
    """A Score JSON (DESIGN.md) for a window in ``health``."""
    div, tail, same = ratios or SIGNAL_RATIOS[health]

    def signal(r):
        out = {"ratio": r, "outside_band": None if r is None else abs(r - 1) > 0.1,
               "human_low": 0.9, "human_high": 1.1}
        if baseline:
            out.update(baseline_ratio=r, outside_baseline_band=out["outside_band"],
                       baseline_low=0.92, baseline_high=1.08)
        return out

    value = None if div is None else 0.6 * div
    return {
        "reference": {"name": "ref", "sha256": "a" * 64},
        "baseline": {"name": "base", "sha256": "b" * 64} if baseline else None,
        "documents": documents, "tokens": documents * 40, "health": health,
        "signals": {"diversity": signal(div), "tail_coverage": signal(tail),
                    "sameness": signal(same)},
        "metrics": {"distinct_2": {"value": value, "human_mean": 0.6, "human_low": 0.57,
                                   "human_high": 0.63, "ratio": div, "percentile": 0.4,
                                   "baseline_ratio": div if baseline else None}},
    }


def make_reference(name: str = "ref") -> int:
    with session_scope() as s:
        n = s.scalar(select(func.count()).select_from(Reference).where(Reference.name == name))
        ref = Reference(name=name, version=n + 1, sha256="a" * 64, document_count=200,
                        token_count=8000, documents_gz=gzip.compress(json.dumps([]).encode()),
                        profile=b"placeholder")
        s.add(ref)
        s.flush()
        return ref.id


def make_model(name: str = "bot", *, reference_id: int | None = None, window_size: int = 10,
               window_max_age_seconds: int | None = 3600, window_min_size: int = 5) -> int:
    reference_id = reference_id or make_reference()
    with session_scope() as s:
        m = MonitoredModel(name=name, reference_id=reference_id, window_size=window_size,
                           window_max_age_seconds=window_max_age_seconds,
                           window_min_size=window_min_size, auto_baseline_windows=0)
        s.add(m)
        s.flush()
        return m.id


def add_samples(model_id: int, n: int, *, received_at: datetime | None = None) -> list[int]:
    received_at = received_at or datetime.now(UTC)
    with session_scope() as s:
        model = s.get(MonitoredModel, model_id)
        start = s.scalar(select(func.count()).select_from(Sample)
                         .where(Sample.model_id == model_id))
        rows = [Sample(model_id=model_id, client_id=f"s{start + i}", text=f"text {start + i}",
                       received_at=received_at) for i in range(n)]
        s.add_all(rows)
        s.flush()
        model.samples_ingested = (model.samples_ingested or 0) + n
        model.last_sample_at = received_at
        return [r.id for r in rows]


def add_evaluation(model_id: int, health: str | None, *, status: str = "done",
                   result: dict | None = None, created_at: datetime | None = None,
                   duration: float = 0.2, sample_ids: list[int] | None = None) -> int:
    """An evaluation row as the pipeline leaves it (window index = next free one)."""
    now = datetime.now(UTC)
    with session_scope() as s:
        model = s.get(MonitoredModel, model_id)
        index = s.scalar(select(func.count()).select_from(Evaluation)
                         .where(Evaluation.model_id == model_id))
        if result is None and status == "done":
            result = score_json(health)
        first, last = (sample_ids[0], sample_ids[-1]) if sample_ids else (index * 10 + 1,
                                                                          index * 10 + 10)
        ev = Evaluation(model_id=model_id, reference_id=model.reference_id, window_index=index,
                        first_sample_id=first, last_sample_id=last, sample_count=last - first + 1,
                        window_start=now - timedelta(minutes=5), window_end=now, status=status,
                        attempts=1, health=health if status == "done" else None,
                        documents=(result or {}).get("documents"), result=result,
                        duration_seconds=duration if status == "done" else None,
                        created_at=created_at or now,
                        finished_at=now if status in ("done", "failed") else None)
        s.add(ev)
        if sample_ids:
            model.windowed_through_sample_id = max(model.windowed_through_sample_id, last)
        s.flush()
        # the per-model totals the pipeline keeps when it stores or fails a window
        if status == "done":
            record_done(s, model_id, ev.id, index, duration, result)
        elif status == "failed":
            record_failed(s, model_id)
        return ev.id


def set_status(evaluation_id: int, status: str, health: str | None = None) -> None:
    with session_scope() as s:
        ev = s.get(Evaluation, evaluation_id)
        ev.status = status
        if status == "done":
            ev.health = health
            ev.result = score_json(health)
            ev.finished_at = datetime.now(UTC)


# the tests' channel receivers are real servers on loopback, which channels refuse to call
# unless the host is allowed (COLLAPSEWATCH_CHANNEL_ALLOWED_HOSTS)
LOOPBACK_HOSTS = "127.0.0.1,localhost,::1"


def allow_loopback_channels(monkeypatch) -> None:
    """Let channels call the loopback stand-ins (in this process and its children)."""
    from service.settings import get_settings

    monkeypatch.setenv("COLLAPSEWATCH_CHANNEL_ALLOWED_HOSTS", LOOPBACK_HOSTS)
    get_settings.cache_clear()


def make_channel(name: str, kind: str, config: dict, *, min_severity: str = "warning",
                 models: list[str] | None = None, enabled: bool = True) -> int:
    from service.channels import channel_class

    with session_scope() as s:
        c = Channel(name=name, kind=kind, config=channel_class(kind).validate_config(config),
                    min_severity=min_severity, models=models, enabled=enabled)
        s.add(c)
        s.flush()
        return c.id
