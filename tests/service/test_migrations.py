"""Models and migrations never drift apart (``alembic check``), on SQLite and PostgreSQL."""

from sqlalchemy import create_engine, inspect

from service.domain.migrate import check
from service.domain.tables import Base


def test_migrations_match_models(database_url):
    check(database_url)


def test_migrations_create_every_table(database_url):
    engine = create_engine(database_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) <= tables


# --------------------------------------------------------------------------------------------
# 0002 -> 0003 on a database filled by the previous revision

def _insert_reference(conn, now: str) -> None:
    """Reference 1, as every revision so far stores it (the fills below build on it)."""
    from sqlalchemy import text

    conn.execute(text(
        "INSERT INTO \"references\" (name, version, sha256, document_count, token_count, "
        "documents_gz, profile, created_at) VALUES ('ref', 1, :sha, 200, 1000, :b, :b, "
        ":now)"), {"sha": "a" * 64, "b": b"x", "now": now})


def _fill_at_0002(url: str) -> None:
    """Rows as revision 0002 stored them: a model with finished and failed windows, alert
    rules, states, alerts and notifications."""
    from sqlalchemy import text

    engine = create_engine(url)
    now = "2026-11-30 12:00:00+00:00"
    with engine.begin() as c:
        _insert_reference(c, now)
        c.execute(text(
            "INSERT INTO models (name, reference_id, window_size, window_min_size, "
            "auto_baseline_windows, samples_ingested, windowed_through_sample_id, "
            "next_window_index, created_at, updated_at) "
            "VALUES ('m', 1, 10, 5, 0, 30, 30, 3, :now, :now)"), {"now": now})
        for i, (status, duration) in enumerate([("done", 0.2), ("done", 3.0),
                                                 ("failed", None)]):
            c.execute(text(
                "INSERT INTO evaluations (model_id, reference_id, window_index, "
                "first_sample_id, last_sample_id, sample_count, status, attempts, health, "
                "duration_seconds, created_at) VALUES (1, 1, :i, :a, :b, 10, :s, 1, :h, :d, "
                ":now)"), {"i": i, "a": 10 * i + 1, "b": 10 * i + 10, "s": status,
                           "h": "healthy" if status == "done" else None, "d": duration,
                           "now": now})
        c.execute(text(
            "INSERT INTO alert_rules (model_id, kind, severity, enabled, fire_after_windows, "
            "resolve_after_windows, params, created_at, updated_at) "
            "VALUES (1, 'collapse', 'critical', true, 2, 2, '{}', :now, :now)"), {"now": now})
        c.execute(text(
            "INSERT INTO alert_states (model_id, kind, consecutive_bad, consecutive_good, "
            "updated_at) VALUES (1, 'collapse', 2, 0, :now)"), {"now": now})
        c.execute(text(
            "INSERT INTO alerts (model_id, rule_id, kind, severity, state, dedup_key, summary, "
            "details, started_at) VALUES (1, 1, 'collapse', 'critical', 'firing', 'k', 's', "
            "'{}', :now)"), {"now": now})
        c.execute(text(
            "INSERT INTO channels (name, kind, config, min_severity, enabled, created_at) "
            "VALUES ('hook', 'webhook', '{}', 'warning', true, :now)"), {"now": now})
        c.execute(text(
            "INSERT INTO notifications (alert_id, channel_id, event, payload, status, "
            "attempts, next_attempt_at, created_at) VALUES (1, 1, 'trigger', '{}', 'sent', 1, "
            ":now, :now)"), {"now": now})
    engine.dispose()


def _check_upgraded(url: str) -> None:
    from sqlalchemy import text

    engine = create_engine(url)
    with engine.begin() as c:
        stats = c.execute(text("SELECT * FROM model_stats")).mappings().one()
        assert stats["evaluations_done"] == 2 and stats["evaluations_failed"] == 1
        assert stats["latest_window_index"] == 1
        assert stats["duration_count"] == 2 and abs(stats["duration_sum"] - 3.2) < 1e-9
        assert c.scalar(text("SELECT deleted_at FROM models")) is None
        assert c.scalar(text("SELECT COUNT(*) FROM notifications")) == 1
        assert c.scalar(text("SELECT rule_id FROM alerts")) == 1
        if engine.dialect.name == "postgresql":
            for table in ("alert_rules", "alert_states", "alerts"):
                assert c.scalar(text(
                    "SELECT data_type FROM information_schema.columns "
                    "WHERE table_name = :t AND column_name = 'id'"), {"t": table}) == "bigint"
            # the sequence was widened too: an id past 2^31 - 1 can be drawn
            c.execute(text("SELECT setval(pg_get_serial_sequence('alerts', 'id'), 3000000000)"))
        c.execute(text(
            "INSERT INTO alerts (model_id, rule_id, kind, severity, state, dedup_key, summary, "
            "details, started_at) VALUES (1, 1, 'collapse', 'critical', 'resolved', 'k', 's', "
            "'{}', '2026-11-30 12:00:00+00:00')"))
        if engine.dialect.name == "postgresql":
            assert c.scalar(text("SELECT MAX(id) FROM alerts")) == 3000000001
            c.execute(text(
                "INSERT INTO notifications (alert_id, channel_id, event, payload, status, "
                "attempts, next_attempt_at, created_at) VALUES (3000000001, 1, 'trigger', '{}', "
                "'sent', 1, now(), now())"))
    engine.dispose()
    check(url)


def test_upgrade_from_0002_keeps_rows_and_widens_ids_on_sqlite(tmp_path):
    from service.domain.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0002")
    _fill_at_0002(url)
    upgrade(url)
    _check_upgraded(url)


def test_upgrade_from_0002_keeps_rows_and_widens_ids_on_postgres():
    from service.domain.migrate import upgrade
    from tests.conftest import fresh_pg_database

    with fresh_pg_database(migrate=False) as url:
        upgrade(url, "0002")
        _fill_at_0002(url)
        upgrade(url)
        _check_upgraded(url)


# --------------------------------------------------------------------------------------------
# 0004 -> 0005 on a database filled by the previous revision

def _fill_at_0004(url: str) -> None:
    """A model with a pinned baseline, as revision 0004 stored it."""
    from sqlalchemy import text

    engine = create_engine(url)
    now = "2026-12-01 12:00:00+00:00"
    with engine.begin() as c:
        _insert_reference(c, now)
        c.execute(text(
            "INSERT INTO models (name, reference_id, baseline_id, window_size, window_min_size, "
            "auto_baseline_windows, samples_ingested, windowed_through_sample_id, "
            "next_window_index, created_at, updated_at) "
            "VALUES ('m', 1, 1, 10, 5, 3, 30, 30, 3, :now, :now)"), {"now": now})
        c.execute(text(
            "INSERT INTO baselines (model_id, reference_id, name, sha256, source, "
            "document_count, token_count, profile, human_ratios, created_at) "
            "VALUES (1, 1, 'auto', :sha, 'auto', 200, 1000, :b, '{}', :now)"),
            {"sha": "b" * 64, "b": b"x", "now": now})
        c.execute(text(
            "INSERT INTO baseline_pins (model_id, new_baseline_id, new_sha256, actor, reason, "
            "created_at) VALUES (1, 1, :sha, 'auto', 'first windows', :now)"),
            {"sha": "b" * 64, "now": now})
    engine.dispose()


def _check_upgraded_to_0005(url: str) -> None:
    from sqlalchemy import text

    engine = create_engine(url)
    with engine.begin() as c:
        row = c.execute(text("SELECT kind, sources, max_synthetic_share, baseline_rejection, "
                             "baseline_id FROM models")).mappings().one()
        assert row["kind"] == "model" and row["baseline_id"] == 1
        assert row["sources"] is None and row["max_synthetic_share"] is None
        assert row["baseline_rejection"] is None
        pin = c.execute(text("SELECT accept_collapsed, reason FROM baseline_pins")).one()
        assert not pin[0] and pin[1] == "first windows"
    engine.dispose()
    check(url)


def test_upgrade_from_0004_keeps_models_and_pins_on_sqlite(tmp_path):
    from service.domain.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0004")
    _fill_at_0004(url)
    upgrade(url)
    _check_upgraded_to_0005(url)


def test_upgrade_from_0004_keeps_models_and_pins_on_postgres():
    from service.domain.migrate import upgrade
    from tests.conftest import fresh_pg_database

    with fresh_pg_database(migrate=False) as url:
        upgrade(url, "0004")
        _fill_at_0004(url)
        upgrade(url)
        _check_upgraded_to_0005(url)


# --------------------------------------------------------------------------------------------
# 0005 -> 0006 on a database filled by the previous revision

def _result(ratio: float) -> dict:
    signal = {"ratio": ratio, "human_low": 0.9, "human_high": 1.1, "outside_band": False}
    return {"documents": 10, "health": "healthy",
            "signals": {"diversity": signal, "tail_coverage": signal, "sameness": signal},
            "metrics": {"distinct_2": {"value": 0.5, "ratio": ratio}},
            "evidence": {"phrases": []}, "calibration": {"pool": 10}}


def _fill_at_0005(url: str) -> None:
    """Two models as revision 0005 stored them: one with two scored windows (model_stats
    pointing at the second), one whose only window failed."""
    import json

    from sqlalchemy import text

    engine = create_engine(url)
    now = "2026-12-02 12:00:00+00:00"
    with engine.begin() as c:
        _insert_reference(c, now)
        for name in ("scored", "failed"):
            c.execute(text(
                "INSERT INTO models (name, reference_id, window_size, window_min_size, "
                "auto_baseline_windows, samples_ingested, windowed_through_sample_id, "
                "next_window_index, created_at, updated_at) "
                "VALUES (:name, 1, 10, 5, 0, 20, 20, 2, :now, :now)"),
                {"name": name, "now": now})
        for i, (model, status, result) in enumerate([(1, "done", _result(0.8)),
                                                     (1, "done", _result(0.6)),
                                                     (2, "failed", None)]):
            c.execute(text(
                "INSERT INTO evaluations (model_id, reference_id, window_index, "
                "first_sample_id, last_sample_id, sample_count, status, attempts, health, "
                "result, created_at) VALUES (:m, 1, :i, :a, :b, 10, :s, 1, :h, :r, :now)"),
                {"m": model, "i": i if model == 1 else 0, "a": 10 * i + 1, "b": 10 * i + 10,
                 "s": status, "h": "healthy" if result else None,
                 "r": json.dumps(result) if result else None, "now": now})
        c.execute(text(
            "INSERT INTO model_stats (model_id, latest_evaluation_id, latest_window_index, "
            "evaluations_done, evaluations_failed, duration_buckets, duration_count, "
            "duration_sum) VALUES (1, 2, 1, 2, 0, '[]', 2, 1.0), "
            "(2, NULL, NULL, 0, 1, '[]', 0, 0.0)"))
    engine.dispose()


def _check_upgraded_to_0006(url: str) -> None:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from service.domain.tables import ModelStats
    from service.exporter.prometheus import take_snapshot

    engine = create_engine(url)
    with Session(engine) as s:
        summaries = dict(s.execute(select(ModelStats.model_id, ModelStats.latest_summary)).all())
        # the latest window's exported parts, without per-metric rows, evidence, calibration
        expected = {k: v for k, v in _result(0.6).items()
                    if k in ("signals", "documents")}
        assert summaries == {1: expected, 2: None}
        snap = {m.name: m for m in take_snapshot(s).models}
        assert snap["scored"].result["signals"]["diversity"]["ratio"] == 0.6
        assert snap["failed"].result is None
    engine.dispose()


def test_upgrade_from_0005_summarises_the_latest_window_on_sqlite(tmp_path):
    from service.domain.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0005")
    _fill_at_0005(url)
    upgrade(url)
    _check_upgraded_to_0006(url)


def test_upgrade_from_0005_summarises_the_latest_window_on_postgres():
    from service.domain.migrate import upgrade
    from tests.conftest import fresh_pg_database

    with fresh_pg_database(migrate=False) as url:
        upgrade(url, "0005")
        _fill_at_0005(url)
        upgrade(url)
        _check_upgraded_to_0006(url)
