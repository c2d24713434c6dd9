"""Scoring in one and two processes, with numpy's BLAS threads at their default and at one.

    .venv/bin/python -m benchmarks.processes [--windows 8] [--rounds 2]

A reference (4,000 shuffled fortunes, the default configuration: embeddings when installed)
is built once into a temporary file; then, per round, 1 and 2 processes each score
``--windows`` fresh 200-document windows against it (after one untimed window that loads
the model and the band), as ``collapsewatch worker`` processes do. "default" leaves BLAS
at a thread per CPU in every process; "worker" applies what the worker does at start
(:func:`service.broker.limit_blas_threads`: one thread per process). Prints windows per
minute (all processes together, timed by the slowest), per round, and the 2-process /
1-process ratio of each mode.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WINDOW = 200


def _build(path: Path) -> None:
    import metrics
    from service.demo.sample_data import human_documents

    docs = human_documents()
    random.Random(5).shuffle(docs)
    path.write_bytes(metrics.build_reference(docs[:4000], "processes").to_bytes())


def _work(path: Path, windows: int, seed: int, mode: str) -> float:
    if mode == "worker":
        from service.broker import limit_blas_threads

        limit_blas_threads()
    import metrics
    from service.demo.sample_data import human_documents

    ref = metrics.load_profile(path)
    docs = human_documents()[4000:]
    rng = random.Random(seed)
    metrics.score(rng.sample(docs, WINDOW), ref)  # the model and the band, untimed
    started = time.perf_counter()
    for _ in range(windows):
        metrics.score(rng.sample(docs, WINDOW), ref)
    return time.perf_counter() - started


def _run(path: Path, processes: int, windows: int, mode: str, round_: int) -> float:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.processes", "--child",
                               str(path), str(windows), str(100 * round_ + i), mode],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
             for i in range(processes)]
    took = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("a scoring process failed")
    return 60.0 * windows * processes / max(took)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    warnings.simplefilter("ignore", RuntimeWarning)
    if argv and argv[0] == "--child":
        path, windows, seed, mode = argv[1:5]
        print(f"{_work(Path(path), int(windows), int(seed), mode):.3f}", flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    rates: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.cwp"
        _build(path)
        print(f"processes: {os.cpu_count()} CPUs, {args.windows} windows of {WINDOW} "
              f"documents per process, {args.rounds} rounds", flush=True)
        for r in range(args.rounds):
            for mode in ("default", "worker"):
                for n in (1, 2):
                    rate = _run(path, n, args.windows, mode, r)
                    rates.setdefault((mode, n), []).append(rate)
                    print(f"  round {r}: {mode:>7} BLAS, {n} process(es): {rate:.1f} "
                          f"windows/min (load {os.getloadavg()[0]:.1f})", flush=True)
    print(f"\n{'BLAS threads':>12} | 1 process, windows/min | 2 processes | ratio")
    for mode, label in (("default", "default"), ("worker", "1 (worker)")):
        one, two = (statistics.median(rates[(mode, n)]) for n in (1, 2))
        print(f"{label:>12} | {one:.1f} | {two:.1f} | {two / one:.2f}x")
    d2, w2 = (statistics.median(rates[(m, 2)]) for m in ("default", "worker"))
    print(f"2 processes, worker vs default BLAS: {w2 / d2:.2f}x")


if __name__ == "__main__":
    main()
