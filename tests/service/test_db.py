"""Insert-if-missing on hot paths: repeated liveness ticks and windows draw no new ids."""

from __future__ import annotations

from sqlalchemy import func, select, text

from service.domain import alerts as engine
from service.domain.db import insert_missing, is_postgres, session_scope
from service.domain.tables import AlertRule, AlertState, MonitoredModel
from tests.service.alert_fixtures import add_evaluation, make_model


def _sequence_values(session) -> dict[str, int]:
    """The next id each alert table's sequence would hand out (PostgreSQL)."""
    out = {}
    for table in ("alert_rules", "alert_states", "notifications", "scores"):
        seq = session.scalar(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table})
        out[table] = session.scalar(text(f"SELECT last_value FROM {seq}"))
    return out


def test_repeated_liveness_ticks_and_windows_draw_no_new_ids(database_url, service_env):
    model_id = make_model("bot")
    with session_scope() as s:
        engine.check_model_liveness(s, s.get(MonitoredModel, model_id))
    add_evaluation(model_id, "healthy")
    with session_scope() as s:
        engine.evaluate_model(s, model_id)
        before = _sequence_values(s) if is_postgres(s) else None
        rule_ids = sorted(s.scalars(select(AlertRule.id)).all())
    for _ in range(20):
        with session_scope() as s:
            engine.check_model_liveness(s, s.get(MonitoredModel, model_id))
            engine.evaluate_model(s, model_id)
    with session_scope() as s:
        assert sorted(s.scalars(select(AlertRule.id)).all()) == rule_ids
        assert s.scalar(select(func.count()).select_from(AlertState)) == len(engine.RULE_KINDS)
        if before is not None:
            assert _sequence_values(s) == before


def test_insert_missing_inserts_only_new_keys(database_url, service_env):
    model_id = make_model("bot")
    row = {"model_id": model_id, "kind": "collapse", "consecutive_bad": 3,
           "consecutive_good": 0}
    with session_scope() as s:
        assert insert_missing(s, AlertState.__table__, [row], keys=("model_id", "kind")) == 1
    with session_scope() as s:
        assert insert_missing(s, AlertState.__table__, [
            {**row, "consecutive_bad": 9}, {**row, "kind": "early_collapse"},
        ], keys=("model_id", "kind")) == 1
        states = {st.kind: st.consecutive_bad for st in s.scalars(select(AlertState))}
    # the stored row is left as it was
    assert states == {"collapse": 3, "early_collapse": 3}
