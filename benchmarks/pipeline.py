"""Scoring pipeline speed: window-to-REST latency (embedded) and worker throughput (production).

    .venv/bin/python -m benchmarks.pipeline                      # both parts
    .venv/bin/python -m benchmarks.pipeline --part latency --windows 10
    .venv/bin/python -m benchmarks.pipeline --part throughput --windows 12

latency    `collapsewatch serve` (SQLite, embedded broker, default settings). For each
           window: post all but one of its samples, then the sample that completes it, and
           time until its evaluation is readable over GET /evaluations. Goal: p95 <= 10 s.
throughput `collapsewatch worker --concurrency 2` (prefork) and `collapsewatch beat` on
           PostgreSQL + Redis, with windows already ingested: windows of 500 documents
           scored per minute, from the first claim to the last result.

Both use the shipped human sample (distinct documents per window) and a model with a
baseline pinned, as in steady-state production. PostgreSQL and Redis come from
COLLAPSEWATCH_TEST_POSTGRES_URL / COLLAPSEWATCH_TEST_REDIS_URL when set; otherwise a
throwaway PostgreSQL (scripts/servers.sh) and a redis-server on a free port are started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.ingest import _cli, fresh_postgres
from tests.support import free_port, process, wait_http

REFERENCE_DOCS = 1000
BASELINE_DOCS = 500


def _docs() -> list[str]:
    from service.demo.sample_data import human_documents

    return human_documents()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---------------------------------------------------------------- latency (embedded)


def run_latency(windows: int, window_size: int, workdir: Path) -> dict[str, float]:
    docs = _docs()
    env = {
        "COLLAPSEWATCH_DATA_DIR": str(workdir / "embedded"),
        "COLLAPSEWATCH_DATABASE_URL": "",
        "COLLAPSEWATCH_BROKER_URL": "",
        "COLLAPSEWATCH_LOG_LEVEL": "WARNING",
    }
    admin = _cli("keys", "create", "--scope", "admin", env=env)
    auth = {"Authorization": f"Bearer {admin}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    latencies: list[float] = []
    with (
        process(
            [sys.executable, "-m", "service", "serve", "--port", str(port)],
            workdir / "serve.log",
            env=env,
        ) as serve,
        httpx.Client(base_url=base, timeout=300, headers=auth) as http,
    ):
        wait_http(f"{base}/healthz", timeout=120, proc=serve.popen)
        ref = http.post(
            "/api/v1/references", json={"name": "bench", "documents": docs[:REFERENCE_DOCS]}
        )
        ref.raise_for_status()
        http.post(
            "/api/v1/models",
            json={
                "name": "bench",
                "reference_id": ref.json()["id"],
                "auto_baseline_windows": 0,
                "window": {"size": window_size, "max_age_seconds": None},
            },
        ).raise_for_status()
        http.post(
            "/api/v1/models/bench/baseline",
            json={"documents": docs[REFERENCE_DOCS : REFERENCE_DOCS + BASELINE_DOCS]},
        ).raise_for_status()
        pool = docs[REFERENCE_DOCS + BASELINE_DOCS :]
        seen: set[int] = set()
        for w in range(windows):
            texts = pool[w * window_size : (w + 1) * window_size]
            items = [{"id": f"w{w}-{i}", "text": t} for i, t in enumerate(texts)]
            for start in range(0, window_size - 1, 500):
                http.post(
                    "/api/v1/models/bench/samples",
                    json={"samples": items[start : min(start + 500, window_size - 1)]},
                ).raise_for_status()
            t0 = time.perf_counter()
            http.post(
                "/api/v1/models/bench/samples", json={"samples": items[-1:]}
            ).raise_for_status()
            while True:
                got = http.get("/api/v1/models/bench/evaluations", params={"limit": 1}).json()[
                    "evaluations"
                ]
                if got and got[0]["id"] not in seen:
                    seen.add(got[0]["id"])
                    break
                if time.perf_counter() - t0 > 600:
                    raise SystemExit(
                        f"window {w} was not scored within 600 s; see {workdir / 'serve.log'}"
                    )
                time.sleep(0.05)
            latencies.append(time.perf_counter() - t0)
            print(f"  window {w}: {latencies[-1]:.2f} s", flush=True)
    # bands are computed on first use per (window size, token budget) and then kept (in
    # memory and in the database); the second half shows the steady state once most are
    warm = latencies[len(latencies) // 2:]
    return {
        "windows": windows,
        "p50": statistics.median(latencies),
        "p95": percentile(latencies, 0.95),
        "max": max(latencies),
        "warm_p50": statistics.median(warm),
        "warm_p95": percentile(warm, 0.95),
    }


# ---------------------------------------------------------------- throughput (production)


@contextmanager
def redis_url(workdir: Path) -> Iterator[str]:
    url = os.environ.get("COLLAPSEWATCH_TEST_REDIS_URL")
    if url:
        import redis

        redis.Redis.from_url(url).flushdb()
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed; set COLLAPSEWATCH_TEST_REDIS_URL")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(20)


def _prepare(windows: int, window_size: int) -> int:
    """Reference, model with a pinned baseline, and ``windows`` windows of samples."""
    import metrics
    from service.domain import catalog
    from service.domain.baselines import pin_profile
    from service.domain.db import session_factory, session_scope
    from service.domain.ingest import ingest_samples
    from service.domain.references import create_reference
    from service.domain.schemas import ModelCreate, SampleIn, WindowPolicyIn
    from service.settings import get_settings

    docs = _docs()
    settings = get_settings()
    with session_factory()() as session:
        ref = create_reference(session, settings, "bench", docs[:REFERENCE_DOCS])
        model = catalog.create_model(
            session,
            settings,
            ModelCreate(
                name="bench",
                reference_id=ref.id,
                auto_baseline_windows=0,
                window=WindowPolicyIn(size=window_size),
            ),
        )
        reference = metrics.Profile.from_bytes(ref.profile)
    baseline = metrics.build_baseline(
        docs[REFERENCE_DOCS : REFERENCE_DOCS + BASELINE_DOCS], reference, "bench-baseline"
    )
    with session_scope() as session:
        pin_profile(session, model.id, baseline, source="upload", actor="benchmark")
    pool = docs[REFERENCE_DOCS + BASELINE_DOCS :]
    total = windows * window_size
    if total > len(pool):
        raise SystemExit(
            f"{windows} windows of {window_size} need {total} documents; the "
            f"shipped sample has {len(pool)} left after reference and baseline"
        )
    for start in range(0, total, 1000):
        batch = [SampleIn(id=str(i), text=pool[i]) for i in range(start, min(total, start + 1000))]
        with session_factory()() as session:
            ingest_samples(session, settings, "bench", batch)
    return model.id


def run_throughput(
    windows: int, window_size: int, concurrency: int, workdir: Path
) -> dict[str, float]:
    from sqlalchemy import func, select

    from service.domain.db import reset_engines, session_scope
    from service.domain.tables import Evaluation
    from service.settings import get_settings

    with fresh_postgres(workdir) as database_url, redis_url(workdir) as broker_url:
        env = {
            "COLLAPSEWATCH_DATABASE_URL": database_url,
            "COLLAPSEWATCH_BROKER_URL": broker_url,
            "COLLAPSEWATCH_DATA_DIR": str(workdir / "production"),
            "COLLAPSEWATCH_LOG_LEVEL": "WARNING",
        }
        os.environ.update(env)
        get_settings.cache_clear()
        reset_engines()
        _cli("migrate", env=env)
        _prepare(windows, window_size)
        with (
            process(
                [sys.executable, "-m", "service", "worker", f"--concurrency={concurrency}"],
                workdir / "worker.log",
                env=env,
            ),
            process([sys.executable, "-m", "service", "beat"], workdir / "beat.log", env=env),
        ):
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                with session_scope() as session:
                    done = session.scalar(
                        select(func.count())
                        .select_from(Evaluation)
                        .where(Evaluation.status == "done")
                    )
                if done >= windows:
                    break
                time.sleep(1.0)
            else:
                raise SystemExit(f"not all windows were scored; see {workdir / 'worker.log'}")
        with session_scope() as session:
            first, last = session.execute(
                select(func.min(Evaluation.started_at), func.max(Evaluation.finished_at))
            ).one()
            durations = list(session.scalars(select(Evaluation.duration_seconds)))
        reset_engines()
    span = (
        last.replace(tzinfo=last.tzinfo or UTC) - first.replace(tzinfo=first.tzinfo or UTC)
    ).total_seconds()
    return {
        "windows": windows,
        "seconds": span,
        "per_minute": windows / span * 60,
        "median_window_seconds": statistics.median(durations),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["latency", "throughput", "both"], default="both")
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--window-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args(argv)
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="cw-bench-pipeline-") as tmp:
        workdir = Path(tmp)
        if args.part in ("latency", "both"):
            print(f"latency: {args.windows} windows of {args.window_size} (embedded)", flush=True)
            lat = run_latency(args.windows, args.window_size, workdir)
            rows.append(("window -> REST latency, embedded, p95, all windows",
                         f"{lat['p95']:.1f} s (p50 {lat['p50']:.1f}, max {lat['max']:.1f})",
                         "<= 10 s"))
            rows.append(("window -> REST latency, embedded, p95, second half",
                         f"{lat['warm_p95']:.1f} s (p50 {lat['warm_p50']:.1f})", "<= 10 s"))
        if args.part in ("throughput", "both"):
            print(
                f"throughput: {args.windows} windows of {args.window_size}, one worker "
                f"with {args.concurrency} processes (PostgreSQL + Redis)",
                flush=True,
            )
            thr = run_throughput(args.windows, args.window_size, args.concurrency, workdir)
            label = f"windows of {args.window_size} per minute, 1 worker x {args.concurrency}"
            value = (f"{thr['per_minute']:.1f} ({thr['windows']} in {thr['seconds']:.0f} s; "
                     f"per window median {thr['median_window_seconds']:.1f} s)")
            rows.append((label, value, "-"))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'collapsewatch':<56}  goal")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:<56}  {goal}")
    print(
        f"\n(machine: {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
