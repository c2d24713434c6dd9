"""Fleet scale on PostgreSQL + Redis: many models, scoring throughput with 1 and 2 worker
processes, /metrics cost, database size, and 60 simulated days with retention on.

    .venv/bin/python -m benchmarks.fleet --models 100             # the issue's target: 1000
    .venv/bin/python -m benchmarks.fleet --models 1000 --windows 1 --score-seconds 240 --days 0
    .venv/bin/python -m benchmarks.fleet --models 1000 --fill-evaluations 1000000 \
        --skip-scoring --days 0

scoring    N models x W windows of S samples each are ingested concurrently (8 threads, the
           real ingest function behind POST /samples) and planned; then `collapsewatch
           worker --concurrency 1` processes score them. Windows scored per minute with 1
           worker process, then (a second set of N models) with 2; the ratio is the scaling.
           With ``--score-seconds T`` each phase is bounded instead of run to completion:
           the clock starts when the first window of the phase is stored (worker start-up
           excluded), windows stored in the next T seconds are counted, and the broker is
           emptied between phases so the second phase scores only its own windows.
fill       ``--fill-evaluations E``: N models (default window policy, a baseline each) and E
           finished evaluations spread evenly over them, written by INSERT ... SELECT
           generate_series on the server, with model_stats (latest window, counters,
           duration histogram) derived from the rows, ``--fill-pending-samples`` unwindowed
           samples per model (what the exporter's lag probe finds), and resolved alerts with
           sent notifications (``--fill-alerts`` per model). Score rows only with
           ``--fill-scores`` (the exporter never reads them; 30 per evaluation). Every
           evaluation carries the same real Score JSON (one window scored with a baseline).
metrics    /metrics built uncached (snapshot + exposition, what a scrape costs when the cache
           is cold), 20 times: p50/p95, size plain and gzipped, series per model; where that
           time goes (snapshot, its per-model lag probes, families, exposition, gzip); then
           through a real `collapsewatch api` process with gzip requested, as Prometheus
           scrapes: cache off (METRICS_CACHE_SECONDS=0), cache off with per-metric series
           for every model, and the default 5 s cache.
size       database and table sizes after the run: bytes per sample, per evaluation.
retention  D simulated days at a fixed rate per model (samples, evaluations and score rows
           written directly, the way the pipeline leaves them), one retention pass per day
           with the clock passed in; samples kept 30 days (the default) and evaluations
           kept ``--sim-evaluations-days`` (30 here, so that they level off within 60 days;
           the default 400 levels off after 400). Prints the size every 5 days.

All scored windows share one reference, so its band is computed once (the band cache
table) and every worker reads it: what a fleet on one reference costs in steady state.
PostgreSQL and Redis come from COLLAPSEWATCH_TEST_POSTGRES_URL / _REDIS_URL (scripts/
servers.sh prints them); a fresh database is created and dropped.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.ingest import fresh_postgres
from tests.support import process


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _setup(database_url: str, broker_url: str, workdir: Path) -> dict[str, str]:
    env = {"COLLAPSEWATCH_DATABASE_URL": database_url, "COLLAPSEWATCH_BROKER_URL": broker_url,
           "COLLAPSEWATCH_DATA_DIR": str(workdir / "data"), "COLLAPSEWATCH_LOG_LEVEL": "WARNING",
           "COLLAPSEWATCH_BAND_CACHE_DIR": "off"}
    os.environ.update(env)
    from service.broker import reconfigure
    from service.domain.db import reset_engines
    from service.domain.migrate import upgrade
    from service.settings import get_settings

    get_settings.cache_clear()
    reset_engines()
    reconfigure()
    upgrade(database_url)
    return env


def _reference(docs: list[str]) -> int:
    import metrics
    from service.domain.db import session_scope
    from service.domain.tables import Reference

    profile = metrics.build_reference(docs, "fortunes")
    with session_scope() as s:
        row = Reference(name="fortunes", version=1, sha256=profile.sha256,
                        document_count=profile.document_count,
                        token_count=profile.token_count,
                        documents_gz=gzip.compress(b"[]"), profile=profile.to_bytes())
        s.add(row)
        s.flush()
        return row.id


def _warm_band(reference_id: int, window: list[str]) -> dict:
    """Score one window in this process so that the reference's band for the window size is
    in the band cache table before the timed phases (a fleet on one reference computes it
    once; without this the first phase would pay for it alone)."""
    import metrics
    from service.domain.db import session_scope
    from service.domain.profiles import reference_profile

    with session_scope() as s:
        profile = reference_profile(s, reference_id)
    return metrics.score(window, profile)


def _models(prefix: str, n: int, reference_id: int, size: int) -> list[str]:
    from service.domain.db import session_scope
    from service.domain.tables import MonitoredModel

    names = [f"{prefix}-{i:04d}" for i in range(n)]
    with session_scope() as s:
        s.add_all(MonitoredModel(name=name, reference_id=reference_id, window_size=size,
                                 window_max_age_seconds=None, window_min_size=size,
                                 auto_baseline_windows=0, samples_ingested=0,
                                 windowed_through_sample_id=0, next_window_index=0)
                  for name in names)
    return names


def _ingest(names: list[str], docs: list[str], windows: int, size: int) -> float:
    """Every model gets ``windows`` batches of ``size`` samples, 8 threads at once."""
    from service.domain.db import session_factory
    from service.domain.ingest import ingest_samples
    from service.domain.schemas import SampleIn
    from service.settings import get_settings

    settings, maker = get_settings(), session_factory()

    def one(args: tuple[int, str]) -> int:
        i, name = args
        total = 0
        for w in range(windows):
            start = ((i * windows + w) * size) % (len(docs) - size)
            batch = [SampleIn(id=f"{w}-{j}", text=docs[start + j]) for j in range(size)]
            with maker() as session:
                total += ingest_samples(session, settings, name, batch).accepted
        return total

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        stored = sum(pool.map(one, enumerate(names)))
    elapsed = time.perf_counter() - started
    return stored / elapsed


def _statuses(names: list[str]) -> dict[str, int]:
    from sqlalchemy import func, select

    from service.domain.db import session_scope
    from service.domain.tables import Evaluation, MonitoredModel

    with session_scope() as s:
        return dict(s.execute(
            select(Evaluation.status, func.count())
            .join(MonitoredModel, MonitoredModel.id == Evaluation.model_id)
            .where(MonitoredModel.name.in_(names)).group_by(Evaluation.status)).all())


def _score_with(workers: int, names: list[str], expected: int, env: dict[str, str],
                logs: Path, timeout: float) -> float:
    """Plan (and enqueue) every window, start ``workers`` worker processes, time until all
    are scored; windows per minute."""
    from service.dispatch import plan_due_windows

    plan_due_windows()
    with ExitStack() as stack:
        started = time.perf_counter()
        for w in range(workers):
            stack.enter_context(process(
                ["collapsewatch", "worker", "--concurrency=1", f"--hostname=fleet{w}@%h"],
                logs / f"worker-{workers}-{w}.log", env=env))
        deadline = started + timeout
        while time.perf_counter() < deadline:
            counts = _statuses(names)
            if counts.get("done", 0) + counts.get("failed", 0) >= expected:
                break
            time.sleep(1)
        elapsed = time.perf_counter() - started
    counts = _statuses(names)
    done = counts.get("done", 0)
    if done < expected:
        print(f"  warning: {done}/{expected} windows scored within {timeout:.0f} s "
              f"({counts})")
    return 60.0 * done / elapsed


def _done() -> int:
    from sqlalchemy import func, select

    from service.domain.db import session_scope
    from service.domain.tables import Evaluation

    with session_scope() as s:
        return int(s.scalar(select(func.count()).select_from(Evaluation)
                            .where(Evaluation.status == "done")))


def _group_cpu(groups: list[int]) -> float:
    """CPU seconds (user + system) of the live processes in these process groups, from
    /proc (a celery worker is its main process and a prefork child)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        # after the command: state, ppid, pgrp, ..., utime (14th field) and stime (15th)
        if int(fields[2]) in groups:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def _score_for(workers: int, env: dict[str, str], logs: Path, seconds: float,
               startup_timeout: float = 300.0) -> tuple[float, int, float, float]:
    """Plan (and enqueue) every due window, start ``workers`` worker processes and count the
    windows stored in ``seconds`` from the first one stored (start-up excluded): windows
    per minute, windows counted, seconds measured, the workers' CPU seconds per window
    (which other load on the machine does not inflate much, unlike the rate)."""
    from service.dispatch import plan_due_windows

    plan_due_windows()
    before = _done()
    with ExitStack() as stack:
        groups = [stack.enter_context(process(
            ["collapsewatch", "worker", "--concurrency=1", f"--hostname=fleet{w}@%h"],
            logs / f"worker-{workers}-{w}.log", env=env)).popen.pid for w in range(workers)]
        deadline = time.perf_counter() + startup_timeout
        while (first := _done()) == before:
            if time.perf_counter() > deadline:
                raise SystemExit(f"no window stored within {startup_timeout:.0f} s of "
                                 f"starting {workers} worker(s); see {logs}")
            time.sleep(0.2)
        cpu = _group_cpu(groups)
        started = time.perf_counter()
        time.sleep(seconds)
        counted = _done() - first
        elapsed = time.perf_counter() - started
        cpu = _group_cpu(groups) - cpu
    return 60.0 * counted / elapsed, counted, elapsed, cpu / max(1, counted)


def _metrics_http(env: dict[str, str], logs: Path, runs: int = 20, per_metric: bool = False,
                  cache_seconds: float = 0.0) -> tuple[float, float, int, int]:
    """GET /metrics from a real `collapsewatch api`, gzip accepted (as Prometheus asks),
    the snapshot cache off unless ``cache_seconds``: p50, p95 seconds, plain and gzipped
    bytes."""
    import httpx

    from tests.support import free_port, wait_http

    port = free_port()
    env = {**env, "COLLAPSEWATCH_METRICS_CACHE_SECONDS": str(cache_seconds),
           "COLLAPSEWATCH_METRICS_PER_METRIC_SERIES": "1" if per_metric else "0"}
    base = f"http://127.0.0.1:{port}"
    with process(["collapsewatch", "api", "--host", "127.0.0.1", "--port", str(port)],
                 logs / f"api-{port}.log", env=env) as api:
        wait_http(f"{base}/readyz", timeout=120, proc=api.popen)
        times, plain, packed = [], 0, 0
        with httpx.Client(timeout=120, headers={"Accept-Encoding": "gzip"}) as client:
            client.get(f"{base}/metrics").raise_for_status()  # first request: lazy imports
            for _ in range(runs):
                started = time.perf_counter()
                r = client.get(f"{base}/metrics")
                r.raise_for_status()
                times.append(time.perf_counter() - started)
                plain, packed = len(r.content), r.num_bytes_downloaded
    return statistics.median(times), percentile(times, 0.95), plain, packed


def _metrics_breakdown(runs: int = 5) -> dict[str, float]:
    """Where an uncached scrape's time goes, medians in seconds: the snapshot (its queries
    and JSON decoding), of which the lag probes (the exporter's batched statement), the same
    probes in hand-written SQL (checked to give the same answers), the families, the text
    exposition and gzip."""
    from sqlalchemy import select, text

    from service.domain.clock import as_utc_or_none
    from service.domain.db import session_factory
    from service.domain.tables import MonitoredModel
    from service.exporter import prometheus as exporter

    parts: dict[str, list[float]] = {}

    def timed(name: str, started: float) -> float:
        now = time.perf_counter()
        parts.setdefault(name, []).append(now - started)
        return now

    for _ in range(runs):
        with session_factory()() as session:
            t = time.perf_counter()
            snap = exporter.take_snapshot(session)
            t = timed("snapshot", t)
            models = session.scalars(select(MonitoredModel)
                                     .where(MonitoredModel.deleted_at.is_(None))).all()
            t = time.perf_counter()
            first = exporter._first_unwindowed(session, list(models))
            probed = {m.id: exporter._owed_since(m, None, first.get(m.id)) for m in models}
            t = timed("  lag probes, the exporter's statement", t)
            batched = dict(session.execute(text("""
                SELECT m.id, (SELECT s.received_at FROM samples s
                              WHERE s.model_id = m.id AND s.id > m.windowed_through_sample_id
                              ORDER BY s.id LIMIT 1)
                             + make_interval(secs => m.window_max_age_seconds)
                FROM models m WHERE m.deleted_at IS NULL""")).all())
            timed("  (the same probes in raw SQL)", t)
            same = {k: as_utc_or_none(v) for k, v in batched.items()}
            if same != probed:
                raise SystemExit("the raw-SQL lag probe disagrees with the exporter's")
        t = time.perf_counter()
        fams = exporter.families(snap)
        t = timed("families", t)
        body = exporter.render(fams)
        t = timed("text exposition", t)
        gzip.compress(body, 5)
        timed("gzip level 5", t)
    return {name: statistics.median(times) for name, times in parts.items()}


def _load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def _metrics_cost(runs: int = 20) -> tuple[float, float, int, int, float]:
    from service.domain.db import session_factory
    from service.exporter.prometheus import families, render, take_snapshot

    times, body = [], b""
    for _ in range(runs):
        started = time.perf_counter()
        with session_factory()() as session:
            body = render(families(take_snapshot(session)))
        times.append(time.perf_counter() - started)
    series = sum(1 for line in body.decode().splitlines() if 'model="' in line)
    return (statistics.median(times), percentile(times, 0.95), len(body),
            len(gzip.compress(body, 5)), series)


def fill(database_url: str, n_models: int, evaluations: int, reference_id: int,
         result: dict, baseline_profile: bytes, baseline_sha256: str, size: int = 200,
         pending_samples: int = 50, alerts_per_model: int = 10, scores: bool = False,
         duration: float = 3.0, prefix: str = "fill",
         now: datetime | None = None) -> dict[str, float]:
    """Write a fleet's history directly on PostgreSQL, the way the pipeline leaves it after
    ``evaluations / n_models`` windows per model: models (the default window policy), one
    pinned baseline each, finished evaluations every ``400 days / windows`` per model (each
    with ``result``), model_stats derived from those rows, a few unwindowed samples per
    model, resolved alerts with sent notifications. Seconds per step."""
    from sqlalchemy import create_engine, insert, text

    from service.domain.evaluation import DURATION_BUCKETS, result_summary, score_rows
    from service.domain.tables import Baseline, Channel, MonitoredModel
    from service.settings import get_settings

    settings = get_settings()
    now = now or datetime.now(UTC)
    per_model = max(1, evaluations // n_models)
    step = timedelta(days=400) / per_model
    took: dict[str, float] = {}
    engine = create_engine(database_url)
    started = time.perf_counter()
    with engine.begin() as c:
        ids = c.execute(insert(MonitoredModel).returning(MonitoredModel.id), [{
            "name": f"{prefix}-{i:04d}", "reference_id": reference_id, "kind": "model",
            "window_size": size,
            "window_max_age_seconds": settings.default_window_max_age_seconds,
            "window_min_size": settings.default_window_min_size, "auto_baseline_windows": 0,
            "samples_ingested": per_model * size + pending_samples, "last_sample_at": now,
            "windowed_through_sample_id": 0, "next_window_index": per_model,
            "created_at": now - timedelta(days=400), "updated_at": now}
            for i in range(n_models)]).scalars().all()
        c.execute(insert(Baseline), [{
            "model_id": model_id, "reference_id": reference_id,
            "name": f"{prefix}-{model_id}-baseline", "sha256": baseline_sha256,
            "source": "range", "document_count": size, "token_count": 0,
            "profile": baseline_profile, "human_ratios": {},
            "created_at": now - timedelta(days=400)} for model_id in ids])
        c.execute(text("UPDATE models m SET baseline_id = b.id FROM baselines b "
                       "WHERE b.model_id = m.id AND m.id = ANY(:ids)"), {"ids": list(ids)})
    took["models"] = time.perf_counter() - started

    # model m's k-th window holds samples (k * n_models + m) * size + 1 .. + size: the
    # models' traffic interleaved, as concurrent ingest leaves the sample ids
    started = time.perf_counter()
    payload = json.dumps(result)
    chunk = max(1, 100_000 // per_model)
    for lo in range(0, len(ids), chunk):
        with engine.begin() as c:
            c.execute(text("""
                INSERT INTO evaluations (model_id, reference_id, baseline_id, window_index,
                    first_sample_id, last_sample_id, sample_count, window_start, window_end,
                    status, attempts, health, documents, tokens, result, duration_seconds,
                    created_at, enqueued_at, started_at, finished_at, timeouts)
                SELECT m.id, :ref, m.baseline_id, k,
                       (k::bigint * :n + m.pos) * :size + 1,
                       (k::bigint * :n + m.pos + 1) * :size, :size,
                       w_end - :step, w_end, 'done', 1, :health, :size, :tokens,
                       CAST(:result AS json), :duration, w_end, w_end, w_end,
                       w_end + :step_done, 0
                FROM (SELECT id, baseline_id, row_number() OVER (ORDER BY id) - 1 AS pos
                      FROM models WHERE id = ANY(:all_ids)) m
                CROSS JOIN generate_series(0, :per_model - 1) AS k
                CROSS JOIN LATERAL (SELECT CAST(:now AS timestamptz)
                                    - (:per_model - 1 - k) * :step AS w_end) t
                WHERE m.id = ANY(:ids)"""),
                {"ref": reference_id, "n": n_models, "size": size, "step": step,
                 "health": result.get("health"), "tokens": result.get("tokens"),
                 "result": payload, "duration": duration, "now": now,
                 "step_done": timedelta(seconds=duration), "per_model": per_model,
                 "all_ids": list(ids), "ids": list(ids[lo:lo + chunk])})
    took["evaluations"] = time.perf_counter() - started

    started = time.perf_counter()
    buckets = json.dumps([per_model if duration <= b else 0 for b in DURATION_BUCKETS])
    with engine.begin() as c:
        # what record_done leaves after every window: derived from the rows, not assumed
        c.execute(text("""
            INSERT INTO model_stats (model_id, latest_evaluation_id, latest_window_index,
                evaluations_done, evaluations_failed, duration_buckets, duration_count,
                duration_sum, latest_summary)
            SELECT e.model_id,
                   (array_agg(e.id ORDER BY e.window_index DESC))[1], max(e.window_index),
                   count(*), 0, CAST(:buckets AS json), count(*), sum(e.duration_seconds),
                   CAST(:summary AS json)
            FROM evaluations e WHERE e.model_id = ANY(:ids) GROUP BY e.model_id"""),
            {"buckets": buckets, "ids": list(ids),
             "summary": json.dumps(result_summary(result))})
        c.execute(text("""
            UPDATE models m SET windowed_through_sample_id = s.last
            FROM (SELECT model_id, max(last_sample_id) AS last FROM evaluations
                  WHERE model_id = ANY(:ids) GROUP BY model_id) s
            WHERE m.id = s.model_id"""), {"ids": list(ids)})
        # the unwindowed samples come after every window's ids
        c.execute(text("SELECT setval(pg_get_serial_sequence('samples', 'id'), "
                       "(SELECT max(last_sample_id) FROM evaluations) + 1)"))
        if pending_samples:
            c.execute(text("""
                INSERT INTO samples (model_id, client_id, text, received_at)
                SELECT m.id, 'pending-' || j, 'a sample not yet in a window ' || j,
                       CAST(:now AS timestamptz) - (:pending - j) * interval '1 second'
                FROM models m CROSS JOIN generate_series(1, :pending) AS j
                WHERE m.id = ANY(:ids)"""),
                {"now": now, "pending": pending_samples, "ids": list(ids)})
    took["stats+samples"] = time.perf_counter() - started

    started = time.perf_counter()
    if alerts_per_model:
        with engine.begin() as c:
            channel = c.execute(insert(Channel).returning(Channel.id), [{
                "name": f"{prefix}-pager", "kind": "webhook",
                "config": {"url": "http://127.0.0.1:9/"}, "min_severity": "warning",
                "enabled": True, "created_at": now}]).scalar_one()
            c.execute(text("""
                INSERT INTO alerts (model_id, kind, severity, state, dedup_key, summary,
                    details, started_at, resolved_at)
                SELECT m.id, 'health', 'warning', 'resolved',
                       'collapsewatch/' || m.name || '/health/' || j,
                       m.name || ': early_collapse for 2 windows', CAST('{}' AS json),
                       CAST(:now AS timestamptz) - j * interval '9 days',
                       CAST(:now AS timestamptz) - j * interval '9 days' + interval '1 hour'
                FROM models m CROSS JOIN generate_series(1, :k) AS j
                WHERE m.id = ANY(:ids)"""), {"now": now, "k": alerts_per_model, "ids": list(ids)})
            c.execute(text("""
                INSERT INTO notifications (alert_id, channel_id, event, payload, status,
                    attempts, next_attempt_at, created_at, sent_at)
                SELECT a.id, :channel, ev, CAST('{}' AS json), 'sent', 1, a.started_at,
                       a.started_at, a.started_at
                FROM alerts a CROSS JOIN unnest(ARRAY['trigger', 'resolve']) AS ev
                WHERE a.model_id = ANY(:ids)"""), {"channel": channel, "ids": list(ids)})
    took["alerts"] = time.perf_counter() - started

    if scores:
        started = time.perf_counter()
        template = score_rows(0, result)
        cols = [k for k in template[0] if k != "evaluation_id"]
        with engine.begin() as c:
            c.execute(text("CREATE TEMP TABLE score_template AS SELECT * FROM scores LIMIT 0"))
            c.execute(text(f"INSERT INTO score_template ({', '.join(cols)}) "
                           f"VALUES ({', '.join(':' + k for k in cols)})"),
                      [{k: row[k] for k in cols} for row in template])
            c.execute(text(f"""
                INSERT INTO scores (evaluation_id, {', '.join(cols)})
                SELECT e.id, {', '.join('t.' + k for k in cols)}
                FROM evaluations e CROSS JOIN score_template t
                WHERE e.model_id = ANY(:ids)"""), {"ids": list(ids)})
        took["scores"] = time.perf_counter() - started
    started = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        # what autovacuum would have done over the months the rows took to arrive
        c.execute(text("VACUUM ANALYZE"))
    took["vacuum analyze"] = time.perf_counter() - started
    engine.dispose()
    return took


def _sizes(database_url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as c:
        out = {"database": c.scalar(text("SELECT pg_database_size(current_database())"))}
        for table in ("samples", "evaluations", "scores"):
            out[table] = c.scalar(text(f"SELECT pg_total_relation_size('{table}')"))
            out[table + "_rows"] = c.scalar(text(f"SELECT count(*) FROM {table}"))
    engine.dispose()
    return out


def _simulate(names: list[str], days: int, per_day: int, size: int, docs: list[str],
              evaluations_days: int, database_url: str,
              result: dict) -> list[tuple[int, dict, float]]:
    """Days of traffic written directly, one retention pass per simulated day."""
    from sqlalchemy import insert, select, update

    from service.domain import retention
    from service.domain.db import session_factory, session_scope
    from service.domain.evaluation import score_rows
    from service.domain.tables import Evaluation, MonitoredModel, Sample, Score
    from service.settings import get_settings

    with session_scope() as s:
        ids = dict(s.execute(select(MonitoredModel.name, MonitoredModel.id)
                             .where(MonitoredModel.name.in_(names))).all())
        ref_id = s.scalar(select(MonitoredModel.reference_id).limit(1))
        s.execute(update(MonitoredModel).where(MonitoredModel.id.in_(ids.values()))
                  .values(evaluations_days=evaluations_days))
    t0 = datetime.now(UTC)
    out = []
    for day in range(days):
        when = t0 + timedelta(days=day)
        with session_scope() as s:
            for model_id in ids.values():
                model = s.get(MonitoredModel, model_id)
                rows = [{"model_id": model_id, "client_id": f"sim{day}-{j}",
                         "text": docs[(day * per_day + j) % len(docs)], "received_at": when}
                        for j in range(per_day)]
                new_ids = s.scalars(insert(Sample).returning(Sample.id), rows).all()
                for k in range(0, len(new_ids) - size + 1, size):
                    index = model.next_window_index
                    ev = Evaluation(model_id=model_id, reference_id=ref_id,
                                    window_index=index, first_sample_id=new_ids[k],
                                    last_sample_id=new_ids[k + size - 1], sample_count=size,
                                    window_start=when, window_end=when, status="done",
                                    attempts=1, health=result["health"], result=result,
                                    documents=size, created_at=when, finished_at=when)
                    s.add(ev)
                    s.flush()
                    s.execute(insert(Score), score_rows(ev.id, result))
                    model.next_window_index = index + 1
                model.windowed_through_sample_id = max(new_ids)
        started = time.perf_counter()
        while not retention.run(session_factory(), get_settings(),
                                now=when + timedelta(hours=23)).complete:
            pass
        took = time.perf_counter() - started
        if day % 5 == 4 or day == days - 1:
            out.append((day + 1, _sizes(database_url), took))
    return out


def _baseline(reference_id: int, docs: list[str]) -> tuple[bytes, str, object]:
    """One real baseline profile against the reference (bytes, sha256, profile)."""
    import metrics
    from service.domain.db import session_scope
    from service.domain.profiles import reference_profile

    with session_scope() as s:
        reference = reference_profile(s, reference_id)
    profile = metrics.build_baseline(docs, reference, "fleet-baseline")
    return profile.to_bytes(), profile.sha256, profile


def _scored_with_baseline(reference_id: int, window: list[str], baseline: object) -> dict:
    import metrics
    from service.domain.db import session_scope
    from service.domain.profiles import reference_profile

    with session_scope() as s:
        reference = reference_profile(s, reference_id)
    return metrics.score(window, reference, baseline)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--window-size", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds to wait for each scoring phase")
    parser.add_argument("--score-seconds", type=float, default=None,
                        help="bound each scoring phase to this many seconds from its first "
                             "stored window, instead of scoring every window")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--sim-models", type=int, default=None,
                        help="models in the retention simulation (default: --models)")
    parser.add_argument("--sim-samples-per-day", type=int, default=1000)
    parser.add_argument("--sim-evaluations-days", type=int, default=30)
    parser.add_argument("--skip-scoring", action="store_true")
    parser.add_argument("--fill-evaluations", type=int, default=0,
                        help="write --models models with this many finished evaluations")
    parser.add_argument("--fill-pending-samples", type=int, default=50)
    parser.add_argument("--fill-alerts", type=int, default=10,
                        help="resolved alerts per filled model (2 sent notifications each)")
    parser.add_argument("--fill-scores", action="store_true",
                        help="also the score rows of every filled evaluation")
    parser.add_argument("--metrics-runs", type=int, default=20)
    parser.add_argument("--per-metric-runs", type=int, default=5,
                        help="/metrics requests with per-metric series for every model (0: "
                             "skip)")
    args = parser.parse_args(argv)
    broker = os.environ.get("COLLAPSEWATCH_TEST_REDIS_URL")
    if not broker:
        raise SystemExit("set COLLAPSEWATCH_TEST_REDIS_URL (and _POSTGRES_URL): "
                         "bash scripts/servers.sh start DIR; source DIR/env")
    from service.demo.sample_data import human_documents

    docs = human_documents()
    with tempfile.TemporaryDirectory() as tmp, fresh_postgres(Path(tmp)) as database_url:
        workdir = Path(tmp)
        logs = workdir / "logs"
        env = _setup(database_url, broker, workdir)
        import redis

        redis.Redis.from_url(broker).flushdb()
        ref_id = _reference(docs[:1000])
        result = _warm_band(ref_id, docs[-args.window_size:])
        n, w, size = args.models, args.windows, args.window_size
        print(f"fleet: {n} models x {w} windows x {size} samples, PostgreSQL + Redis, "
              f"{os.cpu_count()} CPUs, {_load()}")
        rates = {}
        models = 0
        names: list[str] = []
        if not args.skip_scoring:
            for workers in (1, 2):
                names = _models(f"w{workers}", n, ref_id, size)
                models += n
                per_s = _ingest(names, docs[1000:], w, size)
                print(f"  ingest ({workers}): {per_s:,.0f} samples/s with 8 threads")
                if args.score_seconds:
                    load = _load()
                    rates[workers], counted, secs, cpu = _score_for(workers, env, logs,
                                                                    args.score_seconds)
                    print(f"  scoring with {workers} worker process(es): "
                          f"{rates[workers]:.1f} windows/min ({counted} windows in "
                          f"{secs:.0f} s of {n * w} planned; {cpu:.2f} worker CPU s per "
                          f"window; {load} before, {_load()} after)")
                    # the phase's unscored windows stay pending: the next phase's workers
                    # must take only their own set's messages
                    redis.Redis.from_url(broker).flushdb()
                else:
                    rates[workers] = _score_with(workers, names, n * w, env, logs,
                                                 args.timeout)
                    print(f"  scoring with {workers} worker process(es): "
                          f"{rates[workers]:.1f} windows/min")
            print(f"  2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")
        if args.fill_evaluations:
            profile_bytes, sha, baseline = _baseline(ref_id, docs[1000:1000 + size])
            filled = _scored_with_baseline(ref_id, docs[-size:], baseline)
            started = time.perf_counter()
            took = fill(database_url, n, args.fill_evaluations, ref_id, filled, profile_bytes,
                        sha, size, pending_samples=args.fill_pending_samples,
                        alerts_per_model=args.fill_alerts, scores=args.fill_scores)
            names = [f"fill-{i:04d}" for i in range(n)]
            models += n
            print(f"  fill: {n} models, {args.fill_evaluations:,} evaluations in "
                  f"{time.perf_counter() - started:.0f} s ("
                  + ", ".join(f"{k} {v:.0f} s" for k, v in took.items()) + ")")
        elif args.skip_scoring:
            names = _models("w1", n, ref_id, size)
            models += n
        p50, p95, plain, gz, series = _metrics_cost(args.metrics_runs)
        print(f"  /metrics uncached, {models} models: p50 {p50 * 1000:.0f} ms, "
              f"p95 {p95 * 1000:.0f} ms; {plain / 1024:.0f} KiB plain, {gz / 1024:.0f} KiB "
              f"gzip; {series} series with a model label ({series / max(1, models):.0f} "
              f"per model); in this process; {_load()}")
        print("  where an uncached scrape's time goes (median of 5): " + "; ".join(
            f"{k} {v * 1000:.0f} ms" for k, v in _metrics_breakdown().items()))
        variants = [(False, args.metrics_runs, 0.0)]
        if args.per_metric_runs:
            variants.append((True, args.per_metric_runs, 0.0))
        # the default 5 s cache: back-to-back scrapes mostly reuse the snapshot and pay
        # for the exposition and gzip only
        variants.append((False, args.metrics_runs, 5.0))
        for per_metric, runs, cache in variants:
            p50, p95, plain, gz = _metrics_http(env, logs, runs, per_metric, cache)
            print(f"  GET /metrics from `collapsewatch api`, "
                  f"{f'cache {cache:.0f} s' if cache else 'cache off'}, gzip"
                  f"{', per-metric series for every model' if per_metric else ''} "
                  f"({runs} requests): p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms; "
                  f"{plain / 1024:.0f} KiB plain, {gz / 1024:.0f} KiB sent; {_load()}")
        sizes = _sizes(database_url)
        print(f"  database {sizes['database'] / 2**20:.0f} MiB; samples "
              f"{sizes['samples'] / max(1, sizes['samples_rows']):.0f} B/row "
              f"({sizes['samples'] / max(1, sizes['samples_rows']) * 1e6 / 2**30:.2f} GiB "
              f"per million samples, indexes included); evaluations "
              f"{sizes['evaluations'] / 2**20:,.0f} MiB for {sizes['evaluations_rows']:,} "
              f"rows, scores {sizes['scores'] / 2**20:,.0f} MiB for "
              f"{sizes['scores_rows']:,} rows")
        if args.days:
            sim = names[:args.sim_models or n]
            print(f"retention: {len(sim)} models x {args.sim_samples_per_day} samples/day, "
                  f"windows of {size}, samples 30 days, evaluations "
                  f"{args.sim_evaluations_days} days")
            print(f"  {'day':>4} {'db MiB':>8} {'samples':>10} {'evaluations':>12} "
                  f"{'scores':>10} {'pass s':>7}")
            for day, s, took in _simulate(sim, args.days, args.sim_samples_per_day, size,
                                          docs, args.sim_evaluations_days, database_url,
                                          result):
                print(f"  {day:>4} {s['database'] / 2**20:>8.0f} {s['samples_rows']:>10,} "
                      f"{s['evaluations_rows']:>12,} {s['scores_rows']:>10,} {took:>7.2f}")

if __name__ == "__main__":
    main()
