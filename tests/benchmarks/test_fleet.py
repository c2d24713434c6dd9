"""benchmarks.fleet's fill writes a fleet's history the way the pipeline leaves it: the
exporter reads from it exactly what scoring those windows would have left (PostgreSQL)."""

from __future__ import annotations

import gzip
import itertools
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

from benchmarks.fleet import fill
from service.domain.tables import (
    Alert,
    Baseline,
    Evaluation,
    ModelStats,
    MonitoredModel,
    Notification,
    Reference,
    Sample,
    Score,
)

RESULT = {
    "health": "early_collapse", "documents": 20, "tokens": 400,
    "signals": {"diversity": {"ratio": 0.8, "human_low": 0.9, "human_high": 1.1,
                              "outside_band": True}},
    "metrics": {"distinct_2": {"value": 0.41, "human_mean": 0.52, "ratio": 0.79,
                               "signal": "diversity"},
                "self_bleu": {"value": 0.3, "human_mean": 0.25, "ratio": 1.2,
                              "signal": "diversity"}},
}
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def _reference(url: str) -> int:
    engine = create_engine(url)
    with Session(engine) as s, s.begin():
        ref = Reference(name="fortunes", version=1, sha256="a" * 64, document_count=1,
                        token_count=1, documents_gz=gzip.compress(b"[]"), profile=b"-")
        s.add(ref)
        s.flush()
        ref_id = ref.id
    engine.dispose()
    return ref_id


def test_fill_leaves_model_stats_and_windows_as_scoring_them_would(postgres_url):
    ref_id = _reference(postgres_url)
    took = fill(postgres_url, 3, 30, ref_id, RESULT, b"profile", "b" * 64, size=20,
                pending_samples=4, alerts_per_model=2, scores=True, duration=3.0, now=NOW)
    assert {"models", "evaluations", "stats+samples", "alerts", "scores"} <= set(took)

    engine = create_engine(postgres_url)
    with Session(engine) as s:
        models = s.scalars(select(MonitoredModel).order_by(MonitoredModel.id)).all()
        assert len(models) == 3
        ranges = []
        for m in models:
            evs = s.scalars(select(Evaluation).where(Evaluation.model_id == m.id)
                            .order_by(Evaluation.window_index)).all()
            assert [e.window_index for e in evs] == list(range(10))
            assert {e.status for e in evs} == {"done"} and evs[0].result == RESULT
            assert all(e.last_sample_id - e.first_sample_id + 1 == 20 for e in evs)
            # windows of one model follow each other in time, the newest ending now
            ends = [e.window_end for e in evs]
            assert ends == sorted(ends) and ends[-1] == NOW
            ranges += [(e.first_sample_id, e.last_sample_id) for e in evs]
            stats = s.get(ModelStats, m.id)
            assert stats.latest_evaluation_id == evs[-1].id
            assert stats.latest_window_index == 9
            assert (stats.evaluations_done, stats.evaluations_failed) == (10, 0)
            assert stats.duration_count == 10 and stats.duration_sum == 30.0
            # cumulative buckets: none at or below 2.5 s, all from 5 s on
            assert stats.duration_buckets[:6] == [0] * 6 and stats.duration_buckets[6:] == [10] * 6
            baseline = s.get(Baseline, m.baseline_id)
            assert baseline.model_id == m.id
            assert m.next_window_index == 10
            assert m.windowed_through_sample_id == evs[-1].last_sample_id
            pending = s.scalars(select(Sample.id).where(Sample.model_id == m.id)).all()
            assert len(pending) == 4 and min(pending) > m.windowed_through_sample_id
            assert m.samples_ingested == 10 * 20 + 4
        # the models' windows never share a sample id
        ranges.sort()
        assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))
        assert s.scalar(select(func.count()).select_from(Alert)
                        .where(Alert.state == "resolved")) == 6
        assert s.scalar(select(func.count()).select_from(Notification)
                        .where(Notification.status == "sent")) == 12
        per_eval = len(RESULT["signals"]) + len(RESULT["metrics"])
        assert s.scalar(select(func.count()).select_from(Score)) == 30 * per_eval
        # no window claimed a sample beyond the sequence: new samples get fresh ids
        next_id = s.execute(text("SELECT nextval(pg_get_serial_sequence('samples', 'id'))"))
        assert next_id.scalar() > max(r[1] for r in ranges)
    engine.dispose()


def test_the_exporter_reads_the_filled_fleet_in_full(postgres_url):
    from prometheus_client.parser import text_string_to_metric_families

    from service.domain.evaluation import result_summary
    from service.exporter.prometheus import families, render, take_snapshot

    ref_id = _reference(postgres_url)
    fill(postgres_url, 2, 8, ref_id, RESULT, b"profile", "b" * 64, size=20,
         pending_samples=3, alerts_per_model=1, now=NOW)
    engine = create_engine(postgres_url)
    with Session(engine) as s:
        snap = take_snapshot(s, now=NOW + timedelta(minutes=1))
    engine.dispose()
    assert [m.name for m in snap.models] == ["fill-0000", "fill-0001"]
    for m in snap.models:
        # the exported parts, from model_stats' summary (per-metric rows are opt-in)
        assert m.health == "early_collapse" and m.result == result_summary(RESULT)
        assert m.evaluations == {"done": 4, "failed": 0, "pending": 0}
        assert m.baseline_sha256 == "b" * 64 and m.firing == {}
        # 3 unwindowed samples a second apart, the newest at NOW: the window of the first
        # is due an hour after it (the default window age)
        assert m.owed_since == NOW - timedelta(seconds=2) + timedelta(hours=1)
    assert snap.notifications == {"sent": 4}
    lines = {f.name: f for f in text_string_to_metric_families(render(families(snap)).decode())}
    done = [s for s in lines["collapsewatch_evaluations"].samples
            if s.labels.get("status") == "done"]
    assert [s.value for s in done] == [4.0, 4.0]


def test_the_scrape_breakdown_times_each_step_and_checks_the_batched_lag_probe(
        postgres_url, monkeypatch, tmp_path):
    from benchmarks.fleet import _metrics_breakdown
    from service.domain.db import reset_engines
    from service.settings import get_settings

    ref_id = _reference(postgres_url)
    # pending samples an hour and more old: some models owe a window, the others not
    fill(postgres_url, 3, 6, ref_id, RESULT, b"profile", "b" * 64, size=20,
         pending_samples=2, alerts_per_model=0, now=NOW)
    engine = create_engine(postgres_url)
    with engine.begin() as c:
        c.execute(text("UPDATE models SET window_max_age_seconds = NULL WHERE name = 'fill-0002'"))
        c.execute(text("DELETE FROM samples WHERE model_id = "
                       "(SELECT id FROM models WHERE name = 'fill-0001')"))
    engine.dispose()
    monkeypatch.setenv("COLLAPSEWATCH_DATABASE_URL", postgres_url)
    monkeypatch.setenv("COLLAPSEWATCH_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    reset_engines()
    try:
        parts = _metrics_breakdown(runs=2)
    finally:
        get_settings.cache_clear()
        reset_engines()
    assert list(parts) == ["snapshot", "  lag probes, the exporter's statement",
                           "  (the same probes in raw SQL)", "families",
                           "text exposition", "gzip level 5"]
    assert all(v > 0 for v in parts.values())


def test_worker_cpu_is_read_per_process_group_and_leaves_out_other_groups():
    import subprocess
    import sys
    import time as clock

    from benchmarks.fleet import _group_cpu

    # about 0.4 CPU s of work, then idle until stopped
    spin = ("import time\nt = time.process_time()\n"
            "while time.process_time() - t < 0.4: pass\ntime.sleep(60)")
    busy = subprocess.Popen([sys.executable, "-c", spin], start_new_session=True)
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)
    try:
        deadline = clock.monotonic() + 30
        while _group_cpu([busy.pid]) < 0.4 and clock.monotonic() < deadline:
            clock.sleep(0.1)
        assert 0.4 <= _group_cpu([busy.pid]) < 2.0
        assert _group_cpu([idle.pid]) < 0.3
        assert _group_cpu([busy.pid, idle.pid]) >= _group_cpu([busy.pid])
    finally:
        for p in (busy, idle):
            p.kill()
            p.wait()
