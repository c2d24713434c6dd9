"""Overhead of the recording proxy: the same calls direct to an upstream and through the proxy.

Starts real processes on loopback: an OpenAI-shaped stand-in upstream
(``tests/collectors/openai_upstream.py``), `collapsewatch api` on a throwaway SQLite database
(the proxy records into it), `collapsewatch collect proxy`, and for reference a bare TCP
relay (asyncio, no HTTP): what any extra process hop costs on this machine. Then calls go
one at a time over keep-alive connections, direct, through the relay and through the proxy,
in rotating order so drift hits all sides alike:

- non-streaming ``/v1/chat/completions``: latency p50/p99, and the added latency (proxied
  minus direct, per percentile). Targets: p50 <= 2 ms, p99 <= 10 ms added.
- streaming (``stream: true``): time to first chunk, p50/p99, direct and proxied. Target:
  unchanged within 2 ms.

    .venv/bin/python -m benchmarks.proxy                    # ~1-2 minutes
    .venv/bin/python -m benchmarks.proxy --calls 500 --streams 100
"""

from __future__ import annotations

import argparse
import asyncio
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


def alternate(fn, bases: list[str], n: int, warmup: int) -> list[list[float]]:
    """``fn`` on every base in turn, ``warmup + n`` rounds; the order rotates every round so
    that no side always follows another. One keep-alive client per side."""
    times: list[list[float]] = [[] for _ in bases]
    clients = [httpx.Client(timeout=60) for _ in bases]
    try:
        for i in range(warmup + n):
            for k in range(len(bases)):
                j = (i + k) % len(bases)
                elapsed = fn(clients[j], bases[j], i)
                if i >= warmup:
                    times[j].append(elapsed)
    finally:
        for client in clients:
            client.close()
    return times


async def _pipe(upstream_port: int, port: int) -> None:
    """A bare TCP relay (no HTTP): the cost of one more process hop, whatever it does."""
    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    server = await asyncio.start_server(relay, "127.0.0.1", port)
    await server.serve_forever()


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
    parser.add_argument("--pipe", nargs=2, type=int, metavar=("UPSTREAM_PORT", "PORT"),
                        help=argparse.SUPPRESS)  # the TCP relay process
    args = parser.parse_args()
    if args.pipe:
        asyncio.run(_pipe(*args.pipe))
        return

    with tempfile.TemporaryDirectory(prefix="cw-proxy-bench-") as tmp, \
            api_on("sqlite") as (api_url, admin_key, model):
        workdir = Path(tmp)
        up_port, pipe_port, px_port = free_port(), free_port(), free_port()
        upstream = f"http://127.0.0.1:{up_port}/v1"
        piped = f"http://127.0.0.1:{pipe_port}/v1"
        proxied = f"http://127.0.0.1:{px_port}/v1"
        with process([str(BIN / "python"), "-m", "tests.collectors.openai_upstream", "--port",
                      str(up_port), "--chunk-delay", str(args.chunk_delay)],
                     workdir / "upstream.log") as up, \
                process([str(BIN / "python"), "-m", "benchmarks.proxy", "--pipe", str(up_port),
                         str(pipe_port)], workdir / "pipe.log") as pipe, \
                process([str(BIN / "collapsewatch"), "collect", "proxy", "--listen",
                         f"127.0.0.1:{px_port}", "--upstream", upstream, "--model", model,
                         "--collapsewatch-url", api_url, "--spool-dir", str(workdir / "spool"),
                         "--sample-rate", str(args.sample_rate)],
                        workdir / "proxy.log",
                        env={"COLLAPSEWATCH_INGEST_KEY": admin_key,
                             "COLLAPSEWATCH_DATA_DIR": str(workdir / "data"),
                             "COLLAPSEWATCH_LOG_LEVEL": "WARNING"}) as px:
            wait_http(f"{upstream}/models", timeout=30, proc=up.popen)
            wait_http(f"{piped}/models", timeout=30, proc=pipe.popen)
            wait_http(f"{proxied}/models", timeout=30, proc=px.popen)
            bases = [upstream, piped, proxied]
            cpu_before = cpu_seconds(px.popen.pid)
            plain = alternate(one_call, bases, args.calls, args.warmup)
            cpu_per_call = (cpu_seconds(px.popen.pid) - cpu_before) / (args.calls + args.warmup)
            load = os.getloadavg()[0]
            ttfc = alternate(first_chunk, bases, args.streams, min(args.warmup, 10))
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
          f"{load:.1f}; {args.calls} calls and {args.streams} streams per side, rotating")
    print("'added' is over direct; 'tcp relay' is a bare byte relay process (no HTTP), the "
          "cost of any extra hop on this machine")
    print(f"{'':34}{'direct':>8}{'tcp relay':>10}{'proxy':>8}"
          f"{'relay added':>13}{'proxy added':>13}   target")
    for name, sides, q, goal in (
            ("chat completion latency p50 (ms)", plain, 0.5, "<= 2 ms"),
            ("chat completion latency p99 (ms)", plain, 0.99, "<= 10 ms"),
            ("stream first chunk p50 (ms)", ttfc, 0.5, "<= 2 ms"),
            ("stream first chunk p99 (ms)", ttfc, 0.99, "")):
        d, r, p = (percentile(t, q) for t in sides)
        print(f"{name:34}{ms(d)}{ms(r):>10}{ms(p):>8}{ms(r - d):>13}{ms(p - d):>13}   {goal}")
    added = statistics.mean(plain[2]) - statistics.mean(plain[0])
    print(f"mean added latency of the proxy (ms): {ms(added)}")
    print(f"proxy process CPU per non-streaming call (ms): {ms(cpu_per_call)} "
          "(recording included; independent of other load on the machine)")
    if expected:
        print(f"completions recorded by collapsewatch: {ingested} of {calls} proxied calls")
    else:
        print(f"sample rate {args.sample_rate}: recording mostly off")


if __name__ == "__main__":
    main()
