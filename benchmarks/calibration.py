"""Band calibration: how often fresh windows from a band's own source fall beyond its 1% bound.

    .venv/bin/python -m benchmarks.calibration [--pools 12] [--case "200 auto-baseline" ...]

A 1% band must put about 1% of *fresh* windows from its own source beyond its collapse-side
bound (issue 14: at most 2%), whatever the pool's size relative to the window. For each case
and pool p (seeded by p, so pools 0-11 are the test's): shuffle the shipped fortunes, build a
lexical reference from the first ones (200 replicates), for a baseline case a baseline from
the next ``windows x size`` documents, then score ``--fresh`` random windows of the fortunes
left over against it. Each window gives one check per signal: beyond the band on that
signal's collapse side (``high`` for sameness, ``low`` otherwise), calibrated as scored, and
uncalibrated (the normal approximation on the raw replicates' spread: |z| x widening above
2.326) beside it.

Every window compared with one pool shares that pool's error, so counts cluster by pool: the
interval printed is over pools (mean of the per-pool shares +- 1.96 standard errors), not the
binomial one over windows. Pools take ~5 s each per case on one core of this machine (the
500-document case ~15 s).

``--moments`` adds, per signal, the variance and skew of the windows' ``z`` (turned so that
positive is the collapse side) and the correlation over pools of a pool's mean ``z`` with its
windows' spread: what is left of the excess once the spread is right (docs/early-warning.md).
``--skew`` prints what the band's skew allowance (:func:`metrics.bands.skew_allowance`) did:
the windows beyond the symmetric edge it moved, and per signal the document skews the bands
estimated and how far their collapse-side edges moved.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from dataclasses import dataclass, field

import metrics
from service.demo.sample_data import human_documents

CASES = {  # name: (window documents, fortunes per document, pool source documents,
    #              baseline windows: 0 = judged against the reference)
    "100 short": (100, 1, 1500, 0),
    "200 short": (200, 1, 2000, 0),
    "500 short": (500, 1, 3000, 0),
    "200 long": (200, 6, 1000, 0),
    "200 auto-baseline": (200, 1, 2000, 3),
}
FRESH_WINDOWS = 40
RAW_Z = 2.326  # the normal 1% quantile


@dataclass
class PoolCount:
    pool: int
    checks: int
    beyond: dict[str, int]  # per signal, calibrated band
    raw_beyond: int  # all signals, uncalibrated
    # per signal, each window's z turned so that positive is the collapse side
    z: dict[str, list[float]] = field(default_factory=dict)
    # per signal: beyond the symmetric collapse-side edge (without the band's skew
    # allowance), and the allowance (document skew, edge moved in sd) of the pool's band
    symmetric_beyond: dict[str, int] = field(default_factory=dict)
    allowance: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.beyond.values())


def beyond(entry: dict, signal: str) -> bool:
    """Beyond the band on the signal's collapse side."""
    if signal == "sameness":
        return entry["ratio"] > entry["high"]
    return entry["ratio"] < entry["low"]


def case_documents(human: list[str], case: str) -> list[str]:
    joined = CASES[case][1]
    return [" ".join(human[i:i + joined]) for i in range(0, len(human) - joined + 1, joined)]


def run_pool(docs: list[str], case: str, p: int, fresh: int = FRESH_WINDOWS) -> PoolCount:
    n, _, ref_docs, base_windows = CASES[case]
    rng = random.Random(1000 * p + n)
    order = list(range(len(docs)))
    rng.shuffle(order)
    cfg = metrics.ReferenceConfig(replicates=200, seed=p)
    # lexical signals only: no embeddings (what is calibrated here is the same for all)
    ref = metrics.build_reference([docs[i] for i in order[:ref_docs]], "cal", config=cfg,
                                  embedder=None)
    used = ref_docs + base_windows * n
    base = None
    if base_windows:
        base = metrics.build_baseline([docs[i] for i in order[ref_docs:used]], ref, "auto",
                                      config=cfg, embedder=None)
    rest = order[used:]
    mean_len = sum(len(docs[i].split()) for i in rest[:1000]) / 1000
    # a budget below every window's tokens: all windows share one band
    score_cfg = metrics.ScoreConfig(token_budget=int(0.7 * n * mean_len))
    side, ratio_key = ("baseline", "baseline_ratio") if base else ("human", "ratio")
    count = PoolCount(p, 0, {signal: 0 for signal in metrics.SIGNALS}, 0,
                      symmetric_beyond={signal: 0 for signal in metrics.SIGNALS})
    for _ in range(fresh):
        result = metrics.score([docs[i] for i in rng.sample(rest, n)], ref, base,
                               config=score_cfg)
        judged = result["calibration"][side]
        if judged["status"] != "calibrated":
            raise RuntimeError(f"{case}, pool {p}: band not calibrated: {judged}")
        allowance = judged["skew_allowance"] or {}
        for signal in metrics.SIGNALS:
            entry = result["signals"][signal]
            count.checks += 1
            if entry["z"] is not None:
                count.z.setdefault(signal, []).append(
                    entry["z"] if signal == "sameness" else -entry["z"])
            edges = {"ratio": entry[ratio_key], "low": entry[f"{side}_low"],
                     "high": entry[f"{side}_high"]}
            count.beyond[signal] += beyond(edges, signal)
            moved = allowance.get(signal, {"document_skew": 0.0, "edge_moved_sd": 0.0,
                                           "edge_factor": 1.0})
            count.allowance[signal] = (moved["document_skew"], moved["edge_moved_sd"])
            count.symmetric_beyond[signal] += beyond(
                {**edges, "low": edges["low"] * moved["edge_factor"],
                 "high": edges["high"] / moved["edge_factor"]}, signal)
            # without calibration: the deviation in units of the raw replicates' spread is
            # z times the widening
            count.raw_beyond += abs(entry["z"]) * judged["widening"] > RAW_Z and (
                (entry["z"] > 0) == (signal == "sameness"))
    return count


def run_case(human: list[str], case: str, pools: range,
             fresh: int = FRESH_WINDOWS) -> list[PoolCount]:
    docs = case_documents(human, case)
    return [run_pool(docs, case, p, fresh) for p in pools]


def clustered_interval(counts: list[PoolCount]) -> tuple[float, float, float]:
    """(share beyond, low, high): the mean of per-pool shares +- 1.96 standard errors."""
    shares = [c.total / c.checks for c in counts]
    mean = statistics.fmean(shares)
    se = statistics.stdev(shares) / len(shares) ** 0.5 if len(shares) > 1 else float("nan")
    return mean, mean - 1.96 * se, mean + 1.96 * se


@dataclass
class ZMoments:
    variance: float  # of all windows' z: 1 when the band's spread is right
    skew: float  # positive: a longer tail toward collapse than the band's replicates assume
    # correlation over pools of a pool's mean z with the spread of its windows' z: positive
    # when a pool that sits toward collapse also spreads wider than its band (studentisation)
    offset_spread: float


def z_moments(counts: list[PoolCount], signal: str) -> ZMoments:
    every = [z for c in counts for z in c.z.get(signal, [])]
    mean, var = statistics.fmean(every), statistics.pvariance(every)
    skew = statistics.fmean([(z - mean) ** 3 for z in every]) / var ** 1.5 if var else math.nan
    pools = [c.z[signal] for c in counts if len(c.z.get(signal, [])) > 1]
    try:
        corr = statistics.correlation([statistics.fmean(z) for z in pools],
                                      [statistics.pstdev(z) for z in pools])
    except statistics.StatisticsError:  # fewer than two pools, or no variation
        corr = math.nan
    return ZMoments(var, skew, corr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pools", type=int, default=12)
    p.add_argument("--first-pool", type=int, default=0)
    p.add_argument("--fresh", type=int, default=FRESH_WINDOWS, help="windows per pool")
    p.add_argument("--case", action="append", choices=sorted(CASES),
                   help="repeatable; default all")
    p.add_argument("--moments", action="store_true",
                   help="also the variance and skew of the windows' z per signal")
    p.add_argument("--skew", action="store_true",
                   help="also what the bands' skew allowance did: the count beyond the "
                        "symmetric edge, the document skews and how far edges moved")
    args = p.parse_args(argv)
    if args.pools < 2 or args.fresh < 1:
        p.error("--pools must be at least 2 (the interval is over pools), --fresh at least 1")
    human = human_documents()
    pools = range(args.first_pool, args.first_pool + args.pools)
    print(f"pools {pools.start}-{pools.stop - 1}, {args.fresh} fresh windows each, "
          f"beyond the 1% bound on the collapse side (target <= 2%)")
    print(f"{'case':<19} {'uncalibrated':>16} {'calibrated':>16} {'pools 95%':>13} "
          f"{'worst pool':>10}  by signal")
    for case in args.case or CASES:
        counts = run_case(human, case, pools, args.fresh)
        checks = sum(c.checks for c in counts)
        total, raw = sum(c.total for c in counts), sum(c.raw_beyond for c in counts)
        _, low, high = clustered_interval(counts)
        worst = max(counts, key=lambda c: c.total)
        signals = ", ".join(f"{s} {sum(c.beyond[s] for c in counts)}" for s in metrics.SIGNALS)
        print(f"{case:<19} {f'{raw}/{checks}':>9} {100 * raw / checks:5.2f}% "
              f"{f'{total}/{checks}':>9} {100 * total / checks:5.2f}% "
              f"{100 * low:5.2f}-{100 * high:5.2f}% {f'{worst.total}/{worst.checks}':>10}  "
              f"{signals}", flush=True)
        if args.skew:
            sym = sum(sum(c.symmetric_beyond.values()) for c in counts)
            by = ", ".join(f"{s} {sum(c.symmetric_beyond[s] for c in counts)}"
                           for s in metrics.SIGNALS)
            print(f"  without the skew allowance {sym}/{checks} {100 * sym / checks:5.2f}%  {by}",
                  flush=True)
            for s in metrics.SIGNALS:
                gammas = [c.allowance[s][0] for c in counts]
                moved = [c.allowance[s][1] for c in counts]
                print(f"  {s:<16} document skew {min(gammas):+.1f} to {max(gammas):+.1f} "
                      f"(median {statistics.median(gammas):+.1f}), edge moved median "
                      f"{statistics.median(moved):.2f} sd, max {max(moved):.2f} sd", flush=True)
        if args.moments:
            for s in metrics.SIGNALS:
                m = z_moments(counts, s)
                print(f"  {s:<16} z variance {m.variance:.2f}  skew toward collapse "
                      f"{m.skew:+.2f}  pool offset vs spread {m.offset_spread:+.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
