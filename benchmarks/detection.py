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
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import metrics
from metrics.synthetic import NGramModel, recursive_generations
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
        self.reference = metrics.build_reference(ref_docs, "fortunes", config=cfg)
        self.score_config = (
            metrics.ScoreConfig(token_budget=setup.token_budget)
            if setup.token_budget
            else metrics.ScoreConfig()
        )

    def score(self, docs: Sequence[str], baseline=None) -> dict:
        return metrics.score(docs, self.reference, baseline, config=self.score_config)

    def baseline(self, docs: Sequence[str], name: str):
        cfg = metrics.ReferenceConfig(replicates=self.setup.replicates, seed=self.setup.seed)
        return metrics.build_baseline(docs, self.reference, name, config=cfg)

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
