"""Fleet scale on PostgreSQL + Redis: many models, scoring throughput with 1 and 2 worker
processes, /metrics cost, database size, and 60 simulated days with retention on.

    .venv/bin/python -m benchmarks.fleet --models 100             # the issue's target: 1000

scoring    N models x W windows of S samples each are ingested concurrently (8 threads, the
           real ingest function behind POST /samples) and planned; then `collapsewatch
           worker --concurrency 1` processes score them. Windows scored per minute with 1
           worker process, then (a second set of N models) with 2; the ratio is the scaling.
metrics    /metrics built uncached (snapshot + exposition, what a scrape costs when the cache
           is cold), 20 times: p50/p95, size plain and gzipped, series per model.
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


def _metrics_cost(runs: int = 20) -> tuple[float, float, int, int, float]:
    from prometheus_client import CollectorRegistry, generate_latest

    from service.domain.db import session_factory
    from service.exporter.prometheus import families, take_snapshot

    times, body = [], b""
    for _ in range(runs):
        started = time.perf_counter()
        with session_factory()() as session:
            fams = list(families(take_snapshot(session)))

        class Static:
            def collect(self, fams=fams):
                return fams

        registry = CollectorRegistry(auto_describe=False)
        registry.register(Static())
        body = generate_latest(registry)
        times.append(time.perf_counter() - started)
    series = sum(1 for line in body.decode().splitlines() if 'model="' in line)
    return (statistics.median(times), percentile(times, 0.95), len(body),
            len(gzip.compress(body, 5)), series)


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--window-size", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds to wait for each scoring phase")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--sim-models", type=int, default=None,
                        help="models in the retention simulation (default: --models)")
    parser.add_argument("--sim-samples-per-day", type=int, default=1000)
    parser.add_argument("--sim-evaluations-days", type=int, default=30)
    parser.add_argument("--skip-scoring", action="store_true")
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
              f"{os.cpu_count()} CPUs")
        rates = {}
        if not args.skip_scoring:
            for workers in (1, 2):
                names = _models(f"w{workers}", n, ref_id, size)
                per_s = _ingest(names, docs[1000:], w, size)
                print(f"  ingest ({workers}): {per_s:,.0f} samples/s with 8 threads")
                rates[workers] = _score_with(workers, names, n * w, env, logs, args.timeout)
                print(f"  scoring with {workers} worker process(es): "
                      f"{rates[workers]:.1f} windows/min")
            print(f"  2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")
        else:
            names = _models("w1", n, ref_id, size)
        p50, p95, plain, gz, series = _metrics_cost()
        models = n * (1 if args.skip_scoring else 2)
        print(f"  /metrics uncached, {models} models: p50 {p50 * 1000:.0f} ms, "
              f"p95 {p95 * 1000:.0f} ms; {plain / 1024:.0f} KiB plain, {gz / 1024:.0f} KiB "
              f"gzip; {series} series with a model label ({series / max(1, models):.0f} "
              "per model)")
        sizes = _sizes(database_url)
        print(f"  database {sizes['database'] / 2**20:.0f} MiB; samples "
              f"{sizes['samples'] / max(1, sizes['samples_rows']):.0f} B/row "
              f"({sizes['samples'] / max(1, sizes['samples_rows']) * 1e6 / 2**30:.2f} GiB "
              f"per million samples, indexes included); evaluations+scores "
              f"{(sizes['evaluations'] + sizes['scores']) / max(1, sizes['evaluations_rows']):,.0f}"
              f" B per scored window")
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
