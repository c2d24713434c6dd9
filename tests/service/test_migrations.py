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

def _fill_at_0002(url: str) -> None:
    """Rows as revision 0002 stored them: a model with finished and failed windows, alert
    rules, states, alerts and notifications."""
    from sqlalchemy import text

    engine = create_engine(url)
    now = "2026-11-30 12:00:00+00:00"
    with engine.begin() as c:
        c.execute(text(
            "INSERT INTO \"references\" (name, version, sha256, document_count, token_count, "
            "documents_gz, profile, created_at) VALUES ('ref', 1, :sha, 200, 1000, :b, :b, "
            ":now)"), {"sha": "a" * 64, "b": b"x", "now": now})
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
        c.execute(text(
            "INSERT INTO \"references\" (name, version, sha256, document_count, token_count, "
            "documents_gz, profile, created_at) VALUES ('ref', 1, :sha, 200, 1000, :b, :b, "
            ":now)"), {"sha": "a" * 64, "b": b"x", "now": now})
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
