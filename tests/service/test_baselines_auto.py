"""The automatic baseline: a model's first K windows (more if they are too small)."""

from __future__ import annotations

import threading

from sqlalchemy import select

from service.domain.tables import Baseline, BaselinePin, Evaluation, MonitoredModel
from tests.service.api_fixtures import store_reference
from tests.service.pipeline_fixtures import (
    WINDOW,
    add_model,
    count_rows,
    evaluation,
    ingest,
    plan_now,
    score_now,
)


def _ensure(model_id: int):
    from service.domain.baselines import ensure_auto_baseline
    from service.domain.db import session_factory
    from service.settings import get_settings

    return ensure_auto_baseline(model_id, get_settings(), session_factory())


def _model(model_id: int) -> MonitoredModel:
    from service.domain.db import session_scope

    with session_scope() as session:
        row = session.get(MonitoredModel, model_id)
        session.expunge(row)
        return row


def test_first_windows_become_the_baseline(pipeline_env, client, reference_profile,
                                           reference_documents, window_documents):
    import metrics
    from service.domain.db import session_scope

    ref = store_reference(reference_profile, reference_documents)
    model_id = add_model("bot", ref, size=WINDOW, auto_baseline_windows=3)
    ingest("bot", window_documents[:2 * WINDOW])
    plan_now()
    assert _ensure(model_id) is None  # two windows closed: still collecting
    health = client.get("/api/v1/models/bot/health").json()
    assert health["baseline_status"] == "collecting"
    assert health["baseline_collection"] == {"auto_baseline_windows": 3, "windows_closed": 2}

    ingest("bot", window_documents[2 * WINDOW:5 * WINDOW], start=2 * WINDOW)
    ids = plan_now()
    assert len(ids) == 3
    last = ids[-1]  # window index 4
    assert score_now(last).status == "done"

    # three windows of 60 hold fewer than the 200 documents a profile needs: four are taken
    model = _model(model_id)
    with session_scope() as session:
        baseline = session.get(Baseline, model.baseline_id)
        window3 = session.scalar(select(Evaluation).where(Evaluation.window_index == 3))
        (pin,) = session.scalars(select(BaselinePin)).all()
    assert baseline.source == "auto" and baseline.document_count == 4 * WINDOW
    assert baseline.last_sample_id == window3.last_sample_id
    assert baseline.reference_id == ref and set(baseline.human_ratios) == set(metrics.SIGNALS)
    assert (pin.actor, pin.old_sha256, pin.new_sha256) == ("auto", None, baseline.sha256)

    scored = evaluation(last)
    assert scored.baseline_id == baseline.id
    assert scored.result["baseline"] == {"name": baseline.name, "sha256": baseline.sha256}
    for signal in scored.result["signals"].values():
        assert "baseline_ratio" in signal and "outside_baseline_band" in signal

    # a window that is part of the baseline is not judged against it
    with session_scope() as session:
        window0 = session.scalar(select(Evaluation.id).where(Evaluation.window_index == 0))
    assert score_now(window0).status == "done"
    assert evaluation(window0).baseline_id is None
    assert client.get("/api/v1/models/bot/health").json()["baseline_status"] == "set"


def test_auto_baseline_off_means_none(pipeline_env, reference_profile, reference_documents,
                                      window_documents):
    ref = store_reference(reference_profile, reference_documents)
    model_id = add_model("bot", ref, size=WINDOW, auto_baseline_windows=0)
    ingest("bot", window_documents[:5 * WINDOW])
    plan_now()
    assert _ensure(model_id) is None
    assert count_rows(Baseline) == 0


def test_racing_workers_pin_one_automatic_baseline(pipeline_env, reference_profile,
                                                   reference_documents, window_documents):
    ref = store_reference(reference_profile, reference_documents)
    model_id = add_model("bot", ref, size=WINDOW, auto_baseline_windows=4)
    ingest("bot", window_documents[:4 * WINDOW])
    plan_now()
    results: list[object] = []
    errors: list[Exception] = []

    def run() -> None:
        try:
            results.append(_ensure(model_id))
        except Exception as exc:  # noqa: BLE001 -- reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    assert sum(r is not None for r in results) == 1
    assert count_rows(Baseline) == 1 and count_rows(BaselinePin) == 1
    assert _model(model_id).baseline_id is not None
