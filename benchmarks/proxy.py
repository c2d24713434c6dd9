"""Overhead of the recording proxy: the same calls direct to an upstream and through the proxy.

Starts three real processes on loopback: an OpenAI-shaped stand-in upstream
(``tests/collectors/openai_upstream.py``), `collapsewatch api` on a throwaway SQLite database
(the proxy records into it), and `collapsewatch collect proxy`. Then, alternating direct and
proxied calls one at a time over keep-alive connections so drift hits both sides alike:

- non-streaming ``/v1/chat/completions``: latency p50/p99, and the added latency (proxied
  minus direct, per percentile). Targets: p50 <= 2 ms, p99 <= 10 ms added.
- streaming (``stream: true``): time to first chunk, p50/p99, direct and proxied. Target:
  unchanged within 2 ms.

    .venv/bin/python -m benchmarks.proxy                    # ~1-2 minutes
    .venv/bin/python -m benchmarks.proxy --calls 500 --streams 100
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.ingest import api_on
from tests.support import free_port, process, wait_http

BIN = Path(sys.executable).parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def one_call(http: httpx.Client, base: str, i: int) -> float:
    body = {"model": "bench-model", "messages": [{"role": "user", "content": f"call {i}"}]}
    t0 = time.perf_counter()
    r = http.post(f"{base}/chat/completions", json=body)
    elapsed = time.perf_counter() - t0
    r.raise_for_status()
    return elapsed


def first_chunk(http: httpx.Client, base: str, i: int) -> float:
    body = {"model": "bench-model", "stream": True,
            "messages": [{"role": "user", "content": f"stream {i}"}]}
    t0 = time.perf_counter()
    with http.stream("POST", f"{base}/chat/completions", json=body) as r:
        r.raise_for_status()
        chunks = r.iter_raw()
        next(chunks)
        elapsed = time.perf_counter() - t0
        for _ in chunks:  # drain, so the connection is reused and the proxy records
            pass
    return elapsed


def alternate(fn, direct: str, proxied: str, n: int, warmup: int) -> tuple[list, list]:
    d_times, p_times = [], []
    with httpx.Client(timeout=60) as d_http, httpx.Client(timeout=60) as p_http:
        for i in range(warmup + n):
            # alternate which side goes first, so neither always follows the other
            order = ((d_http, direct, d_times), (p_http, proxied, p_times))
            for http, base, out in (order if i % 2 == 0 else order[::-1]):
                elapsed = fn(http, base, i)
                if i >= warmup:
                    out.append(elapsed)
    return d_times, p_times


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (proc(5): /proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ms(x: float) -> str:
    return f"{x * 1000:8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="non-streaming calls per side")
    parser.add_argument("--streams", type=int, default=200, help="streams per side")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--chunk-delay", type=float, default=0.005,
                        help="seconds between the upstream's stream chunks")
    parser.add_argument("--sample-rate", type=float, default=1.0,
                        help="the proxy's --sample-rate (1: every completion is recorded)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cw-proxy-bench-") as tmp, \
            api_on("sqlite") as (api_url, admin_key, model):
        workdir = Path(tmp)
        up_port, px_port = free_port(), free_port()
        upstream = f"http://127.0.0.1:{up_port}/v1"
        proxied = f"http://127.0.0.1:{px_port}/v1"
        with process([str(BIN / "python"), "-m", "tests.collectors.openai_upstream", "--port",
                      str(up_port), "--chunk-delay", str(args.chunk_delay)],
                     workdir / "upstream.log") as up, \
                process([str(BIN / "collapsewatch"), "collect", "proxy", "--listen",
                         f"127.0.0.1:{px_port}", "--upstream", upstream, "--model", model,
                         "--collapsewatch-url", api_url, "--spool-dir", str(workdir / "spool"),
                         "--sample-rate", str(args.sample_rate)],
                        workdir / "proxy.log",
                        env={"COLLAPSEWATCH_INGEST_KEY": admin_key,
                             "COLLAPSEWATCH_DATA_DIR": str(workdir / "data"),
                             "COLLAPSEWATCH_LOG_LEVEL": "WARNING"}) as px:
            wait_http(f"{upstream}/models", timeout=30, proc=up.popen)
            wait_http(f"{proxied}/models", timeout=30, proc=px.popen)
            cpu_before = cpu_seconds(px.popen.pid)
            d_plain, p_plain = alternate(one_call, upstream, proxied, args.calls, args.warmup)
            cpu_per_call = (cpu_seconds(px.popen.pid) - cpu_before) / (args.calls + args.warmup)
            load = os.getloadavg()[0]
            d_ttfc, p_ttfc = alternate(first_chunk, upstream, proxied, args.streams,
                                       min(args.warmup, 10))
            calls = args.calls + args.streams + args.warmup + min(args.warmup, 10)
            expected = calls if args.sample_rate >= 1 else 0
            deadline = time.monotonic() + 60
            ingested = 0
            while time.monotonic() < deadline and expected:
                r = httpx.get(f"{api_url}/api/v1/models/{model}",
                              headers={"Authorization": f"Bearer {admin_key}"}, timeout=10)
                ingested = r.json().get("samples_ingested", 0)
                if ingested >= expected:
                    break
                time.sleep(0.5)

    print(f"recording proxy overhead, {os.cpu_count()} cores, loopback, load average "
          f"{load:.1f}; {args.calls} calls and {args.streams} streams per side, alternating")
    print(f"{'':34}{'direct':>8}{'proxied':>9}{'added':>9}   target")
    for name, d, p, q, goal in (
            ("chat completion latency p50 (ms)", d_plain, p_plain, 0.5, "<= 2 ms"),
            ("chat completion latency p99 (ms)", d_plain, p_plain, 0.99, "<= 10 ms"),
            ("stream first chunk p50 (ms)", d_ttfc, p_ttfc, 0.5, "<= 2 ms"),
            ("stream first chunk p99 (ms)", d_ttfc, p_ttfc, 0.99, "")):
        dq, pq = percentile(d, q), percentile(p, q)
        print(f"{name:34}{ms(dq)}{ms(pq):>9}{ms(pq - dq):>9}   {goal}")
    print(f"mean added latency (ms): {ms(statistics.mean(p_plain) - statistics.mean(d_plain))}")
    print(f"proxy process CPU per non-streaming call (ms): {ms(cpu_per_call)} "
          "(recording included; independent of other load on the machine)")
    if expected:
        print(f"completions recorded by collapsewatch: {ingested} of {calls} proxied calls")
    else:
        print(f"sample rate {args.sample_rate}: recording mostly off")


if __name__ == "__main__":
    main()
