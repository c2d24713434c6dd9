"""When does the demo's collapsing model first read ``early_collapse``? An offline replay.

    .venv/bin/python -m benchmarks.demo_replay [--generations 4] [--temperature 0.9 1.0]

Rebuilds exactly what ``collapsewatch serve --demo`` streams (the same seeded split,
reference, generation-0 baseline and ``demo-recursive`` samples), cuts it into the demo's
windows and scores them in order, as the worker does. For each temperature it prints every
window's single-window health and its health with the sequential detector, then the first
``early_collapse`` (or worse) of each and the feed time it corresponds to (windows of
``window_size`` documents at ``samples_per_second``; scoring time not included). Lexical
signals only: the page's semantic metrics do not enter health.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import metrics
from metrics.trend import trend, trend_health
from service.demo import seed as demo
from service.demo.sample_data import human_documents

SEVERE = ("early_collapse", "collapse")


def replay(config: demo.DemoConfig, generations: int, reference: metrics.Profile
           ) -> list[tuple[int, str, str]]:
    """(generation, single-window health, health with the detector) per window."""
    split = demo.split_documents(human_documents(), config)
    stream = demo.RecursiveStream(split.generator, config)
    baseline = metrics.build_baseline(stream.baseline_documents(), reference,
                                      f"{demo.RECURSIVE} generation 0")
    per_window = config.window_size
    total = (generations + 1) * config.samples_per_generation // per_window
    results, rows = [], []
    for w in range(total):
        docs = [stream.document(w * per_window + i) for i in range(per_window)]
        result = metrics.score(docs, reference, baseline, with_evidence=False)
        results.append(result)
        state = trend(results)
        rows.append((stream.generation_of(w * per_window), result["health"],
                     trend_health(result["health"], state)))
    return rows


def first_severe(healths: list[str]) -> int | None:
    return next((i for i, h in enumerate(healths) if h in SEVERE), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--temperature", type=float, nargs="+", default=[0.9, 1.0])
    args = parser.parse_args(argv)
    base = demo.DemoConfig()
    split = demo.split_documents(human_documents(), base)
    started = time.perf_counter()
    reference = metrics.build_reference(split.reference, demo.REFERENCE_NAME)
    print(f"reference {len(split.reference)} documents built in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    seconds = base.window_size / base.samples_per_second
    summary = []
    for temperature in args.temperature:
        config = replace(base, temperature=temperature)
        rows = replay(config, args.generations, reference)
        print(f"\ntemperature {temperature}: window, generation, single-window health, "
              "with the detector")
        for i, (g, single, detected) in enumerate(rows):
            print(f"  {i + 1:>3} {g:>3}  {single:<16} {detected}")
        firsts = [first_severe([r[k] for r in rows]) for k in (1, 2)]
        summary.append((temperature, *firsts))
    print("\nfirst early_collapse or worse (window, feed seconds at the demo's pace):")
    print(f"  {'temperature':>11}  {'single-window rules':>22}  {'with the detector':>20}")
    for temperature, single, detected in summary:
        def cell(i: int | None) -> str:
            return "never" if i is None else f"window {i + 1}, {(i + 1) * seconds:.0f} s"
        print(f"  {temperature:>11}  {cell(single):>22}  {cell(detected):>20}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
