"""Ingest throughput of one `collapsewatch api` process, on SQLite and on PostgreSQL.

Posts 50,000 samples in batches of 500 (texts from the shipped human sample, unique ids)
from a few concurrent HTTP clients and prints samples/s and the p50/p99 latency of a batch.
Goal: >= 10,000 samples/s on PostgreSQL and >= 5,000 on SQLite.

    .venv/bin/python benchmarks/ingest.py                       # both databases
    .venv/bin/python benchmarks/ingest.py --databases sqlite --concurrency 1,4,8
    .venv/bin/python benchmarks/ingest.py --url http://127.0.0.1:8000 --key cw_... --model m

Without ``--url`` it starts its own servers: a SQLite file in a temporary directory, and a
fresh database on ``COLLAPSEWATCH_TEST_POSTGRES_URL`` when set, or else a throwaway
PostgreSQL from ``scripts/servers.sh`` (stopped at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import free_port, process, wait_http

BIN = Path(sys.executable).parent


@dataclass
class Result:
    database: str
    samples: int
    seconds: float
    latencies: list[float]
    text_chars: float
    concurrency: int
    load: tuple[float, float]  # 1-minute load average before and after the run

    @property
    def rate(self) -> float:
        return self.samples / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(BIN / "collapsewatch"), *args],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=REPO,
        timeout=300,
    )
    if done.returncode != 0:
        raise SystemExit(f"collapsewatch {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@contextmanager
def postgres_base_url(workdir: Path) -> Iterator[str]:
    """A PostgreSQL server URL: the test server if configured, else a throwaway one."""
    url = os.environ.get("COLLAPSEWATCH_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    servers = workdir / "servers"
    workdir.chmod(0o755)  # PostgreSQL runs as its own user and must reach its data dir
    subprocess.run(
        ["bash", str(REPO / "scripts/servers.sh"), "start", str(servers)], check=True, cwd=REPO
    )
    try:
        env = (servers / "env").read_text()
        yield next(
            line.split("=", 1)[1]
            for line in env.splitlines()
            if "COLLAPSEWATCH_TEST_POSTGRES_URL" in line
        )
    finally:
        subprocess.run(
            ["bash", str(REPO / "scripts/servers.sh"), "stop", str(servers)], check=False, cwd=REPO
        )


@contextmanager
def fresh_postgres(workdir: Path) -> Iterator[str]:
    """A new, empty database on a PostgreSQL server; dropped afterwards."""
    from sqlalchemy import create_engine, text

    with postgres_base_url(workdir) as base:
        name = "cw_bench_" + uuid.uuid4().hex[:8]
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield base.rsplit("/", 1)[0] + "/" + name
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


@contextmanager
def running_api(database_url: str, workdir: Path) -> Iterator[tuple[str, str, str]]:
    """Migrate, create a key, start one `collapsewatch api`, create a reference and a model."""
    from service.demo.sample_data import human_documents

    env = {
        "COLLAPSEWATCH_DATABASE_URL": database_url,
        "COLLAPSEWATCH_DATA_DIR": str(workdir / "data"),
        "COLLAPSEWATCH_LOG_LEVEL": "WARNING",
    }
    _cli("migrate", env=env)
    key = _cli("keys", "create", "--scope", "admin", env=env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with process(
        [str(BIN / "collapsewatch"), "api", "--host", "127.0.0.1", "--port", str(port)],
        workdir / f"api-{port}.log",
        env=env,
    ) as api:
        wait_http(f"{base}/readyz", timeout=60, proc=api.popen)
        headers = {"Authorization": f"Bearer {key}"}
        ref = httpx.post(
            f"{base}/api/v1/references",
            headers=headers,
            timeout=300,
            json={"name": "bench", "documents": human_documents()[:300]},
        )
        ref.raise_for_status()
        model = httpx.post(
            f"{base}/api/v1/models",
            headers=headers,
            timeout=60,
            json={"name": "bench", "reference_id": ref.json()["id"]},
        )
        model.raise_for_status()
        yield base, key, "bench"


@contextmanager
def api_on(database: str) -> Iterator[tuple[str, str, str]]:
    """A running `collapsewatch api` on a throwaway ``sqlite`` or ``postgresql`` database:
    yields (base url, ingest key, model)."""
    if database not in ("sqlite", "postgresql"):
        raise ValueError(f"unknown database {database!r}; use sqlite or postgresql")
    with tempfile.TemporaryDirectory(prefix="cw-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        if database == "sqlite":
            url = f"sqlite:///{workdir / 'bench.db'}"
        else:
            url = stack.enter_context(fresh_postgres(workdir))
        yield stack.enter_context(running_api(url, workdir))


def make_batches(total: int, batch_size: int) -> tuple[list[bytes], float]:
    """Request bodies, encoded before the clock starts; and the mean text length."""
    from service.demo.sample_data import human_documents

    docs = human_documents()
    run = uuid.uuid4().hex[:8]
    bodies, chars = [], 0
    for start in range(0, total, batch_size):
        items = []
        for i in range(start, min(total, start + batch_size)):
            text = docs[i % len(docs)]
            chars += len(text)
            items.append(
                {
                    "id": f"{run}-{i}",
                    "text": text,
                    "prompt": "Tell me something.",
                    "attributes": {"temperature": 0.7},
                }
            )
        bodies.append(json.dumps({"samples": items}).encode())
    return bodies, chars / total


def post_all(
    base: str, key: str, model: str, bodies: list[bytes], concurrency: int
) -> tuple[float, list[float]]:
    """Post every body from ``concurrency`` keep-alive clients; wall time and latencies."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    queue = list(reversed(bodies))
    url = f"{base}/api/v1/models/{model}/samples"
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}

    def worker() -> None:
        with httpx.Client(timeout=120, headers=headers) as http:
            while True:
                with lock:
                    if not queue or failures:
                        return
                    body = queue.pop()
                t0 = time.perf_counter()
                r = http.post(url, content=body)
                elapsed = time.perf_counter() - t0
                with lock:
                    if r.status_code != 202:
                        failures.append(f"{r.status_code} {r.text[:300]}")
                    latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if failures:
        raise SystemExit(f"ingest failed: {failures[0]}")
    return wall, latencies


def run_one(database: str, base: str, key: str, model: str, args,
            concurrency: int) -> Result:
    bodies, chars = make_batches(args.samples, args.batch)
    # warm up connections and code paths with one small batch of its own
    warm, _ = make_batches(args.batch, args.batch)
    post_all(base, key, model, warm, 1)
    before = httpx.get(
        f"{base}/api/v1/models/{model}", headers={"Authorization": f"Bearer {key}"}
    ).json()["samples_ingested"]
    load_before = os.getloadavg()[0]
    wall, latencies = post_all(base, key, model, bodies, concurrency)
    load_after = os.getloadavg()[0]
    after = httpx.get(
        f"{base}/api/v1/models/{model}", headers={"Authorization": f"Bearer {key}"}
    ).json()["samples_ingested"]
    if after - before != args.samples:
        raise SystemExit(f"{database}: stored {after - before} samples, expected {args.samples}")
    return Result(database, args.samples, wall, latencies, chars, concurrency,
                  (load_before, load_after))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", default="4",
                        help="concurrent HTTP clients; a comma list runs each in turn")
    parser.add_argument("--url", help="target a running server instead of starting one")
    parser.add_argument("--key", help="ingest or admin key for --url")
    parser.add_argument("--model", help="existing model for --url")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]

    results: list[Result] = []
    if args.url:
        if not (args.key and args.model):
            parser.error("--url needs --key and --model")
        for level in levels:
            results.append(run_one(args.url, args.url.rstrip("/"), args.key, args.model, args,
                                   level))
    else:
        for database in args.databases.split(","):
            if database not in ("sqlite", "postgresql"):
                parser.error(f"unknown database {database!r}; use sqlite or postgresql")
            with api_on(database) as (base, key, model):
                for level in levels:
                    results.append(run_one(database, base, key, model, args, level))

    print(
        f"\ningest: {args.samples} samples, batches of {args.batch}, "
        "one `collapsewatch api` process"
    )
    print(
        f"{'database':<12}{'clients':>8}{'samples/s':>12}{'p50 batch ms':>15}{'p99 batch ms':>15}"
        f"{'mean text chars':>18}{'load before/after':>20}"
    )
    for r in results:
        load = f"{r.load[0]:.1f}/{r.load[1]:.1f}"
        print(
            f"{r.database:<12}{r.concurrency:>8}{r.rate:>12,.0f}{r.percentile(0.5) * 1000:>15.1f}"
            f"{r.percentile(0.99) * 1000:>15.1f}{r.text_chars:>18.0f}{load:>20}"
        )
    print(f"(machine: {os.cpu_count()} CPUs; the load average counts everything running on it)")
    goals = {"sqlite": 5_000, "postgresql": 10_000}
    for r in results:
        if r.database in goals:
            verdict = "meets" if r.rate >= goals[r.database] else "BELOW"
            print(f"{r.database} with {r.concurrency} clients: {verdict} the goal of "
                  f"{goals[r.database]:,} samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
