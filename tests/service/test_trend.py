"""The sequential detector over stored windows (service.domain.trend): the same window
scored twice counts once, windows stored out of order are read in window order, a new
baseline starts the detector again, and health follows a sustained alarm."""

from __future__ import annotations

from datetime import UTC, datetime

from metrics.registry import SIGNALS
from tests.service.pipeline_fixtures import add_model, add_reference

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _result(tail_z: float, health: str = "healthy") -> dict:
    signals = {s: {"ratio": 1.0, "baseline_ratio": 1.0, "z": 0.0, "z_against": "baseline",
                   "mean_error": 0.0} for s in SIGNALS}
    signals["tail_coverage"].update(z=tail_z, ratio=0.92, baseline_ratio=0.92)
    return {"health": health, "signals": signals}


def _baseline(model_id: int, reference_id: int, name: str) -> int:
    from service.domain.db import session_scope
    from service.domain.tables import Baseline

    with session_scope() as session:
        row = Baseline(model_id=model_id, reference_id=reference_id, name=name,
                       sha256=name.ljust(64, "0"), source="upload", document_count=1,
                       token_count=1, profile=b"", human_ratios={})
        session.add(row)
        session.flush()
        return row.id


def _window(model_id: int, reference_id: int, index: int, baseline_id: int | None,
            result: dict | None, status: str = "done") -> int:
    from service.domain.db import session_scope
    from service.domain.tables import Evaluation

    with session_scope() as session:
        row = Evaluation(model_id=model_id, reference_id=reference_id, baseline_id=baseline_id,
                         window_index=index, first_sample_id=10 * index + 1,
                         last_sample_id=10 * index + 10, sample_count=10, status=status,
                         result=result, health=(result or {}).get("health"),
                         window_start=T0, window_end=T0)
        session.add(row)
        session.flush()
        return row.id


def _trend_of(evaluation_id: int, baseline_id: int | None, result: dict) -> dict:
    from service.domain.db import session_scope
    from service.domain.trend import with_trend

    with session_scope() as session:
        return with_trend(session, evaluation_id, baseline_id, result)


def _setup():
    ref = add_reference()
    model = add_model("bot", ref)
    return model, ref, _baseline(model, ref, "b1")


def test_a_sustained_shift_in_stored_windows_raises_the_health(service_env):
    model, ref, base = _setup()
    for i in range(3):
        _window(model, ref, i, base, _result(-3.0))
    current = _window(model, ref, 3, base, None, status="running")
    out = _trend_of(current, base, _result(-3.0))
    tail = out["trend"]["tail_coverage"]
    assert tail["alarm"] and tail["since_window"] == 0 and tail["windows"] == 4
    assert tail["shift_estimate"] == -0.08
    assert out["health"] == "early_collapse" and out["window_health"] == "healthy"


def test_a_rescored_window_counts_once_and_later_windows_do_not_count(service_env):
    model, ref, base = _setup()
    ids = [_window(model, ref, i, base, _result(-2.0)) for i in range(4)]
    _window(model, ref, 9, base, _result(-9.0))  # a later window already stored
    first = _trend_of(ids[2], base, _result(-2.0))
    # scoring window 2 again (a retry after its result was stored) gives the same state
    assert _trend_of(ids[2], base, _result(-2.0)) == first
    assert first["trend"]["tail_coverage"]["windows"] == 3


def test_windows_stored_out_of_order_are_read_in_window_order(service_env):
    model, ref, base = _setup()
    zs = {0: -3.0, 1: 5.0, 2: -3.0, 3: -3.0}
    for i in (3, 0, 2, 1):
        _window(model, ref, i, base, _result(zs[i]))
    current = _window(model, ref, 4, base, None, status="running")
    tail = _trend_of(current, base, _result(-3.0))["trend"]["tail_coverage"]
    # window 1 sent the statistic back to 0: the run starts at window 2
    assert tail["since_window"] == 2 and tail["windows"] == 3


def test_a_new_baseline_starts_the_detector_again(service_env):
    model, ref, old = _setup()
    for i in range(5):
        _window(model, ref, i, old, _result(-3.0))
    new = _baseline(model, ref, "b2")
    current = _window(model, ref, 5, new, None, status="running")
    out = _trend_of(current, new, _result(-1.0))
    assert out["trend"]["tail_coverage"]["windows"] == 1
    assert not out["trend"]["tail_coverage"]["alarm"] and out["health"] == "healthy"
    # windows before any baseline (judged against human) are their own sequence too
    for i in range(6, 9):
        _window(model, ref, i, None, _result(-3.0))
    current = _window(model, ref, 9, None, None, status="running")
    assert _trend_of(current, None, _result(-3.0))["trend"]["tail_coverage"]["windows"] == 4


def test_the_head_start_applies_only_when_the_windows_read_begin_at_the_pin(
        service_env, monkeypatch):
    from service.domain import trend as service_trend

    model, ref, base = _setup()
    for i in range(3):
        _window(model, ref, i, base, _result(-0.5))
    current = _window(model, ref, 3, base, None, status="running")
    # all four windows since the pin are read: the statistic starts at the head start
    # and in-control windows (y = 0.5 = k) keep it there
    tail = _trend_of(current, base, _result(-0.5))["trend"]["tail_coverage"]
    assert tail["statistic"] > 0 and tail["since_window"] == 0
    # a history longer than what is read: the first window read is not the pin's
    monkeypatch.setattr(service_trend, "LOOKBACK", 2)
    tail = _trend_of(current, base, _result(-0.5))["trend"]["tail_coverage"]
    assert tail["statistic"] == 0.0 and tail["since_window"] is None


def test_the_alert_summary_names_the_signal_the_run_and_the_shift():
    from metrics.trend import trend
    from service.domain.alerts import window_summary
    from service.domain.tables import Evaluation

    results = [_result(z) for z in (3.0, -3.0, -3.0, -3.0, -3.0, -3.0, -3.0)]
    last = {**results[-1], "health": "early_collapse",
            "trend": trend(results, list(range(7, 14)))}
    ev = Evaluation(result=last, health="early_collapse", window_index=13)
    text = window_summary("bot", "early_collapse", ev, 1)
    assert text.endswith("sustained: tail coverage ~8% below baseline for 6 windows "
                         "(since window 8)"), text
