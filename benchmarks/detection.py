"""Detection report: does the suite flag collapsing text and leave human text alone?

    .venv/bin/python -m benchmarks.detection [--window 500] [--quick]

On the shipped fortunes, split (seeded) into a reference part, the generator's human
training data and held-out human documents, it prints one table per scenario with the
three signal ratios and the health state:

* held-out human windows (share judged healthy);
* a word trigram model (``metrics.synthetic``) retrained on its own samples for five
  generations, "replace" and "accumulate" regimes, at a realistic budget (each generation
  samples as many documents as the human training set), plus "replace" at a tiny budget;
* the same with generation 0 as the model's baseline, and fresh generation-0 windows
  against that baseline;
* a decoding regression: baseline at temperature 1.0, windows at 1.0 and at narrower
  settings.

The checks of the scoring-core and baseline issues are the ``check`` lines; the test
``tests/metrics/test_detection.py`` runs the same scenarios at a smaller size.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

import metrics
from metrics.synthetic import NGramModel, recursive_generations
from metrics.trend import (
    TrendConfig,
    cusum_arl,
    describe,
    simulate_run_lengths,
    trend,
    trend_health,
)
from service.demo.sample_data import human_documents

SEVERE = ("early_collapse", "collapse")


@dataclass(frozen=True)
class Setup:
    window: int = 500
    windows: int = 40  # held-out human windows / fresh baseline-source windows
    generations: int = 5
    reference_docs: int = 8000
    train_docs: int = 4000
    tiny_budget: int = 400  # documents per generation in the tiny-budget run
    baseline_docs: int = 1500
    replicates: int = 200
    token_budget: int | None = None  # None: ScoreConfig default
    seed: int = 0
    semantic: bool = False  # also the semantic tables (benchmarks.semantic)
    lexical_only: bool = False  # profiles without embeddings (the lexical signals only)


@dataclass
class Row:
    label: str
    result: dict
    baseline: bool = False

    def cells(self) -> list[str]:
        sig = self.result["signals"]
        out = [self.label]
        for name in metrics.SIGNALS:
            r = sig[name]["ratio"]
            mark = "*" if sig[name]["outside_band"] else " "
            out.append("-" if r is None else f"{r:.3f}{mark}")
        if self.baseline:
            for name in metrics.SIGNALS:
                r = sig[name].get("baseline_ratio")
                mark = "*" if sig[name].get("outside_baseline_band") else " "
                out.append("-" if r is None else f"{r:.3f}{mark}")
        out.append(self.result["health"])
        return out


@dataclass
class Scenario:
    title: str
    rows: list[Row] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)

    def render(self) -> str:
        with_base = any(r.baseline for r in self.rows)
        head = ["window", "diversity", "tail_cov", "sameness"]
        if with_base:
            head += ["div/base", "tail/base", "same/base"]
        head.append("health")
        table = [head] + [r.cells() for r in self.rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        lines = [f"## {self.title}", ""]
        for k, row in enumerate(table):
            lines.append(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths))
                )
            )
            if k == 0:
                lines.append("  ".join("-" * w for w in widths))
        for text, ok in self.checks:
            lines.append(f"check: {text}: {'PASS' if ok else 'FAIL'}")
        return "\n".join(lines)


def split_fortunes(setup: Setup) -> tuple[list[str], list[str], list[str]]:
    """(reference, generator training, held-out human) documents, disjoint, seeded."""
    docs = human_documents()
    order = list(range(len(docs)))
    random.Random(setup.seed).shuffle(order)
    a, b = setup.reference_docs, setup.reference_docs + setup.train_docs
    return (
        [docs[i] for i in order[:a]],
        [docs[i] for i in order[a:b]],
        [docs[i] for i in order[b:]],
    )


class Harness:
    def __init__(self, setup: Setup, log: Callable[[str], None] = lambda s: None):
        self.setup = setup
        self.log = log
        ref_docs, self.train, self.held = split_fortunes(setup)
        cfg = metrics.ReferenceConfig(replicates=setup.replicates, seed=setup.seed)
        self.embedder = None if setup.lexical_only else "default"
        self.reference = metrics.build_reference(ref_docs, "fortunes", config=cfg,
                                                 embedder=self.embedder)
        self.score_config = (
            metrics.ScoreConfig(token_budget=setup.token_budget)
            if setup.token_budget
            else metrics.ScoreConfig()
        )

    def score(self, docs: Sequence[str], baseline=None) -> dict:
        return metrics.score(docs, self.reference, baseline, config=self.score_config)

    def baseline(self, docs: Sequence[str], name: str):
        cfg = metrics.ReferenceConfig(replicates=self.setup.replicates, seed=self.setup.seed)
        return metrics.build_baseline(docs, self.reference, name, config=cfg,
                                      embedder=self.embedder)

    # ------------------------------------------------------------------ scenarios

    def human_windows(self) -> Scenario:
        rng = random.Random(self.setup.seed + 1)
        sc = Scenario(
            f"held-out human windows ({self.setup.windows} x {self.setup.window} documents)"
        )
        for i in range(self.setup.windows):
            sc.rows.append(
                Row(f"human {i:02d}", self.score(rng.sample(self.held, self.setup.window)))
            )
        healthy = sum(r.result["health"] == "healthy" for r in sc.rows) / len(sc.rows)
        sc.checks.append((f"healthy in {healthy:.0%} of windows (>= 95%)", healthy >= 0.95))
        return sc

    def generations(self, regime: str, budget: int | None = None) -> tuple[Scenario, list]:
        s = self.setup
        gens = recursive_generations(
            self.train, s.generations, regime, seed=s.seed, docs_per_generation=budget
        )
        size = budget or len(self.train)
        sc = Scenario(f"{regime}, {size} documents per generation (human reference only)")
        for g in gens:
            window = g.model.sample(s.window, seed=10_000 + g.index)
            sc.rows.append(Row(f"gen {g.index}", self.score(window)))
            self.log(f"{regime} gen {g.index}: {sc.rows[-1].result['health']}")
        return sc, gens

    def with_baseline(self, title: str, gens: list, baseline) -> Scenario:
        sc = Scenario(title)
        for g in gens:
            window = g.model.sample(self.setup.window, seed=20_000 + g.index)
            sc.rows.append(Row(f"gen {g.index}", self.score(window, baseline), baseline=True))
        return sc

    def fresh_baseline_windows(self, model: NGramModel, baseline, **decoding) -> Scenario:
        s = self.setup
        sc = Scenario(
            f"fresh generation-0 windows against the generation-0 baseline "
            f"({s.windows} x {s.window})"
        )
        for i in range(s.windows):
            window = model.sample(s.window, seed=30_000 + i, **decoding)
            sc.rows.append(Row(f"fresh {i:02d}", self.score(window, baseline), baseline=True))
        healthy = sum(r.result["health"] == "healthy" for r in sc.rows) / len(sc.rows)
        sc.checks.append((f"healthy in {healthy:.0%} of windows (>= 95%)", healthy >= 0.95))
        return sc

    def decoding_regression(self, model: NGramModel) -> Scenario:
        s = self.setup
        base_docs = model.sample(s.baseline_docs, seed=40_000)
        baseline = self.baseline(base_docs, "decoding-t1.0")
        sc = Scenario("decoding regression: baseline at temperature 1.0")
        settings = [
            ("T=1.0", {}),
            ("T=1.0", {}),
            ("T=1.0", {}),
            ("T=0.8", {"temperature": 0.8}),
            ("T=0.7", {"temperature": 0.7}),
            ("top-k 20", {"top_k": 20}),
            ("T=0.5", {"temperature": 0.5}),
        ]
        for k, (label, decoding) in enumerate(settings):
            window = model.sample(s.window, seed=41_000 + k, **decoding)
            sc.rows.append(Row(label, self.score(window, baseline), baseline=True))
        same = [r for r in sc.rows if r.label == "T=1.0"]
        narrow = [r for r in sc.rows if r.label in ("T=0.7", "top-k 20", "T=0.5")]
        sc.checks.append(
            ("same setting healthy", all(r.result["health"] == "healthy" for r in same))
        )
        sc.checks.append(
            ("T=0.7, top-k 20 and T=0.5 flagged", all(r.result["health"] in SEVERE for r in narrow))
        )
        return sc


def run(setup: Setup, log: Callable[[str], None] = lambda s: None) -> list[Scenario]:
    h = Harness(setup, log)
    out = [h.human_windows()]
    log("human windows done")
    replace, rgens = h.generations("replace")
    health = [r.result["health"] for r in replace.rows]
    replace.checks.append(
        ("replace flagged by generation 2", any(x in SEVERE for x in health[1:3]))
    )
    replace.checks.append(
        ("replace flagged from generation 2 on", all(x in SEVERE for x in health[2:]))
    )
    replace.checks.append(
        ("replace 'collapse' by generation 3", any(x == "collapse" for x in health[1:4]))
    )
    out.append(replace)
    accumulate, agens = h.generations("accumulate")
    accumulate.checks.append(
        (
            "accumulate never 'collapse'",
            all(r.result["health"] != "collapse" for r in accumulate.rows),
        )
    )
    out.append(accumulate)
    tiny, tgens = h.generations("replace", budget=setup.tiny_budget)
    out.append(tiny)

    base = h.baseline(rgens[0].model.sample(setup.baseline_docs, seed=50_000), "gen0")
    ratios = ", ".join(f"{k} {v:.3f}" for k, v in base.human_ratios.items())
    rep = h.with_baseline(
        f"replace against the generation-0 baseline ({ratios} x human)", rgens, base
    )
    rep.checks.append(
        (
            "later replace generations flagged",
            all(r.result["health"] in SEVERE for r in rep.rows[2:]),
        )
    )
    out.append(rep)
    acc = h.with_baseline("accumulate against the generation-0 baseline", agens, base)
    acc.checks.append(
        ("accumulate never 'collapse'", all(r.result["health"] != "collapse" for r in acc.rows))
    )
    out.append(acc)
    out.append(h.fresh_baseline_windows(rgens[0].model, base))
    log("baseline scenarios done")
    out.append(h.decoding_regression(rgens[0].model))
    if setup.semantic:
        from benchmarks import semantic

        out.extend(semantic.scenarios(h, rgens, tgens, windows=setup.windows, planted=20, log=log))
    return out


# ------------------------------------------------------------------ early warning (trend)

ARL_SHIFTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
ARL_MEAN_ERRORS = (0.0, 0.33, 0.58)  # large pool; window = 1/10 of the pool; 3-window baseline


def arl_table(cfg: TrendConfig) -> str:
    """Markov-chain ARL of the CUSUM defaults (normal windows) by shift (in calibrated band
    sd) and mean error of the band centre (the detector's reference value grows with it),
    from the pin (with the head start) / once running (steady state); plus the share of
    baselines, their centre off by c ~ N(0, u^2), whose in-control ARL from the pin is
    below 1,000 windows, and the in-control ARL of a fleet of them (1 / E[1 / ARL0]:
    windows per false alarm over many models)."""
    rows = [["mean_error", "k_eff"] + [f"{d:g} sd" for d in ARL_SHIFTS]
            + ["P(ARL0<1000)", "fleet ARL0"]]
    grid = np.linspace(-4, 4, 33)
    weights = np.exp(-grid**2 / 2)
    weights /= weights.sum()
    head = cfg.head_start * cfg.h
    for u in ARL_MEAN_ERRORS:
        k = cfg.k + cfg.allowance * u
        cells = [f"{u:.2f}", f"{k:.2f}"]
        for d in ARL_SHIFTS:
            y = d * math.sqrt(1 + u * u)
            pin = cusum_arl(y, k, cfg.h, start=head)
            steady = cusum_arl(y, k, cfg.h, steady=True)
            cells.append(f"{pin:.0f}" if d == 0 else f"{pin:.1f}/{steady:.1f}")
        arl0 = [cusum_arl(c, k, cfg.h, start=head, states=150) for c in grid * u]
        short = sum(w for a, w in zip(arl0, weights) if a < 1000) if u else 0.0
        # a fleet of such baselines: windows per false alarm, 1 / E[1 / ARL0]
        fleet = 1.0 / sum(w / a for a, w in zip(arl0, weights))
        cells += [f"{short:.1%}", f"{fleet:.0f}"]
        rows.append(cells)
    return _table(rows)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def replicate_increments(profile, reference, n_docs: int, budget: int) -> dict[str, np.ndarray]:
    """Per signal, the CUSUM increments a fresh in-control window would give, drawn from
    the calibrated band's replicates (the detector's unit: spread around the centre)."""
    from metrics.bands import calibrate
    from metrics.scoring import metric_ratios, signal_ratios
    from metrics.trend import COLLAPSE_SIGN

    cal = calibrate(profile.band(n_docs, budget, reference), profile.pool, n_docs, budget,
                    sample_docs=(reference or profile).config.suite.semantic_sample)
    centre = np.nanmean(cal.band, axis=0)
    logs = np.log(signal_ratios(metric_ratios(cal.within, centre, n_docs)))
    out = {}
    for j, name in enumerate(metrics.SIGNALS):
        col = logs[:, j]
        out[name] = COLLAPSE_SIGN[name] * (col - np.nanmean(col)) / np.nanstd(col, ddof=1)
    return out


def simulated_arl(increments: dict[str, np.ndarray], mean_error: float, cfg: TrendConfig,
                  shifts=(0.0, 1.0, 2.0), runs: int = 2000) -> dict[str, list[float]]:
    """Mean run length per signal from the pin (with the head start) when increments are
    resampled band replicates (+ a shift in band sd); in-control runs are censored at
    20,000 windows."""
    k = cfg.k + cfg.allowance * mean_error
    out = {}
    for name, inc in increments.items():
        out[name] = [
            float(simulate_run_lengths(inc + d * math.sqrt(1 + mean_error**2), k, cfg.h,
                                       runs=runs if d else runs // 2,
                                       limit=20_000 if d == 0 else 500, seed=7,
                                       start=cfg.head_start * cfg.h).mean())
            for d in shifts
        ]
    return out


def first_alarm(results: Sequence[dict]) -> int | None:
    """1-based index of the first window whose trend (over the windows so far) alarms."""
    for t in range(1, len(results) + 1):
        if any(v["alarm"] for v in trend(results[:t]).values()):
            return t
    return None


def stream_report(title: str, results: list[dict]) -> Scenario:
    sc = Scenario(title)
    zs = {s: np.array([r["signals"][s]["z"] for r in results], dtype=float)
          for s in metrics.SIGNALS}
    state = trend(results)
    alarm = first_alarm(results)
    for s in metrics.SIGNALS:
        v = state[s]
        sc.checks.append((
            (f"{s}: z mean {np.nanmean(zs[s]):+.2f} sd {np.nanstd(zs[s]):.2f}; final statistic "
            f"{v['statistic']:.2f} of {v['threshold']}"), True))
    sc.checks.append((f"no alarm over {len(results)} windows (first alarm: {alarm})",
                      alarm is None))
    return sc


def trend_run(setup: Setup, log: Callable[[str], None] = lambda s: None) -> list[str]:
    """The ARL/delay tables and the recursive-generator streams (see docs/early-warning.md)."""
    cfg = TrendConfig()
    out = [(f"## CUSUM defaults k={cfg.k}, h={cfg.h}, head start {cfg.head_start}h, allowance="
            f"{cfg.allowance}: ARL by shift (Markov chain, normal windows; from the pin/"
            "steady-state)"), "", arl_table(cfg), ""]
    h = Harness(setup, log)
    rng = random.Random(setup.seed + 5)
    human = [h.score(rng.sample(h.held, setup.window)) for _ in range(setup.windows)]
    budget = human[0]["token_budget"]
    log("human stream scored")
    rgens = recursive_generations(h.train, setup.generations, "replace", seed=setup.seed)
    agens = recursive_generations(h.train, setup.generations, "accumulate", seed=setup.seed)
    base = h.baseline(rgens[0].model.sample(setup.baseline_docs, seed=50_000), "gen0")
    fresh = [h.score(rgens[0].model.sample(setup.window, seed=60_000 + i), base)
             for i in range(setup.windows)]
    log("fresh generation-0 stream scored")

    rows = [["band", "signal", "mean_error", "ARL0", "1 sd", "2 sd"]]
    for label, prof, ref_arg, res in (("human", h.reference, None, human),
                                      ("gen-0 baseline", base, h.reference, fresh)):
        inc = replicate_increments(prof, ref_arg, setup.window, res[0]["token_budget"])
        for name in metrics.SIGNALS:
            u = res[0]["signals"][name]["mean_error"] or 0.0
            arl = simulated_arl({name: inc[name]}, u, cfg)[name]
            rows.append([label, name, f"{u:.2f}", f"{arl[0]:.0f}", f"{arl[1]:.1f}",
                         f"{arl[2]:.1f}"])
    out += [(f"## Simulated from band replicates (window {setup.window}, budget {budget}; "
            "from the pin; ARL0 censored at 20,000)"), "", _table(rows), ""]
    out.append(stream_report(f"steady stream: fresh human windows vs the reference "
                             f"({setup.windows} x {setup.window})", human).render())
    out.append("")
    out.append(stream_report(f"steady stream: fresh generation-0 windows vs the generation-0 "
                             f"baseline ({setup.windows} x {setup.window})", fresh).render())
    out.append("")
    for regime, gens in (("replace", rgens), ("accumulate", agens)):
        sc = Scenario(f"{regime}: windows of one generation after pinning the generation-0 "
                      f"baseline (first alarm, window health with the trend)")
        for g in gens:
            results = [h.score(g.model.sample(setup.window, seed=70_000 + 100 * g.index + i),
                               base) for i in range(TREND_WINDOWS)]
            alarm = first_alarm(results)
            healths = [trend_health(r["health"], trend(results[: i + 1]))
                       for i, r in enumerate(results)]
            lines = describe(trend(results)) or ["no alarm"]
            sc.checks.append(((f"gen {g.index}: first alarm at window {alarm}; health "
                              f"{' '.join(x[:5] for x in healths)}; {lines[0]}"),
                              (alarm is not None and alarm <= 3) if g.index and
                              regime == "replace" else True))
        log(f"{regime} streams done")
        out.append(sc.render())
        out.append("")
    return out


TREND_WINDOWS = 6  # windows per generation in the recursive streams


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--window", type=int, default=500)
    p.add_argument("--windows", type=int, default=40)
    p.add_argument("--replicates", type=int, default=200)
    p.add_argument(
        "--token-budget",
        type=int,
        default=None,
        help="ScoreConfig.token_budget (default: the library default)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller run: windows of 300, 20 windows, 100 replicates",
    )
    p.add_argument("--semantic", action="store_true",
                   help="also the semantic validation tables (benchmarks.semantic)")
    p.add_argument(
        "--trend",
        action="store_true",
        help="early warning: ARL/delay tables, steady streams, recursive-generator streams",
    )
    args = p.parse_args(argv)
    setup = (
        Setup(window=300, windows=20, replicates=100, token_budget=args.token_budget,
              semantic=args.semantic)
        if args.quick
        else Setup(
            window=args.window,
            windows=args.windows,
            replicates=args.replicates,
            token_budget=args.token_budget,
            semantic=args.semantic,
        )
    )
    start = time.monotonic()
    if args.trend:
        # the detector reads the lexical signals: profiles without embeddings score faster
        setup = replace(setup, lexical_only=True)
        lines = trend_run(
            setup, log=lambda s: print(f"[{time.monotonic() - start:6.0f}s] {s}", file=sys.stderr)
        )
        print(f"# Early-warning report (window {setup.window} documents, {setup.replicates} "
              f"band replicates)\n")
        print("\n".join(lines))
        print(f"{time.monotonic() - start:.0f} s")
        return 0
    scenarios = run(
        setup, log=lambda s: print(f"[{time.monotonic() - start:6.0f}s] {s}", file=sys.stderr)
    )
    print(
        f"# Detection report (window {setup.window} documents, {setup.replicates} band "
        f"replicates; * = outside the band)\n"
    )
    for sc in scenarios:
        print(sc.render())
        print()
    failed = [text for sc in scenarios for text, ok in sc.checks if not ok]
    print(
        f"{sum(len(sc.checks) for sc in scenarios) - len(failed)} checks pass, "
        f"{len(failed)} fail; {time.monotonic() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
