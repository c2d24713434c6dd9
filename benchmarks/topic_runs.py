"""Human text in topic runs: how often a stream's guard would read it as synthetic.

    .venv/bin/python -m benchmarks.topic_runs [--window 200] [--reference 1500] [--limit 0.1]

A stream's human text arrives in runs of one subject (a crawl of one site, a feed of one
topic), not as a shuffle of everything. The shipped fortunes are stored file by file, so
consecutive documents are mostly one fortune file. The setting is the service tests' stream:
a reference of the first ``--reference`` fortunes (10 replicates), one trigram generator
(``metrics.synthetic``) trained on fortunes 3,000–5,000 with a baseline of 600 of its
outputs. Every window of ``--window`` consecutive fortunes after the 5,000th is estimated
with the LM ratio alone (``COLLAPSEWATCH_STREAM_SHARE_SCORES=lexical``), with the embedding
score beside it (``=semantic``) and the two joined (the default, ``metrics.mixture.
JoinedMixture``); then the same documents shuffled into as many windows. Everything here is
human, so every lower bound above ``--limit`` is a false page of the ``synthetic_share``
guard at that limit. Printed per window and summed up.

    .venv/bin/python -m benchmarks.topic_runs --health [--reference 1500]

scores the same windows for collapse instead (``metrics.score`` against the reference alone,
no baseline): how many fresh human windows, in topic runs and shuffled, read ``healthy``,
``early_collapse`` or ``collapse``, and how often each signal is outside its band.
"""

from __future__ import annotations

import argparse
import random

import metrics
from metrics.mixture import join_shares, stream_mixture
from metrics.synthetic import NGramModel
from service.demo.sample_data import human_documents

FIRST_FRESH = 5000


def windows_of(docs: list[str], args) -> tuple[list[list[str]], list[list[str]]]:
    """(consecutive windows after the first fresh document, the same documents shuffled)."""
    fresh = docs[FIRST_FRESH:]
    n_windows = len(fresh) // args.window
    runs = [fresh[i * args.window:(i + 1) * args.window] for i in range(n_windows)]
    shuffled = list(fresh[:n_windows * args.window])
    random.Random(args.seed).shuffle(shuffled)
    mixed = [shuffled[i * args.window:(i + 1) * args.window] for i in range(n_windows)]
    return runs, mixed


def health(docs: list[str], reference, args) -> int:
    runs, mixed = windows_of(docs, args)
    print(f"{len(runs)} windows of {args.window} fresh human documents against a reference of "
          f"the first {args.reference}")
    for label, windows in (("topic runs", runs), ("shuffled", mixed)):
        verdicts: dict[str, int] = {}
        outside: dict[str, int] = {}
        for window in windows:
            result = metrics.score(window, reference)
            verdicts[result["health"]] = verdicts.get(result["health"], 0) + 1
            for name, signal in result["signals"].items():
                if signal.get("outside_band"):
                    outside[name] = outside.get(name, 0) + 1
        print(f"{label:<11} health {dict(sorted(verdicts.items()))}; "
              f"outside the band (either side) {dict(sorted(outside.items()))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--reference", type=int, default=1500)
    parser.add_argument("--limit", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="the shuffle of the second pass")
    parser.add_argument("--health", action="store_true",
                        help="score the windows for collapse instead of their synthetic share")
    args = parser.parse_args(argv)

    docs = human_documents()
    reference = metrics.build_reference(docs[:args.reference], "fortunes",
                                        config=metrics.ReferenceConfig(replicates=10))
    if args.health:
        return health(docs, reference, args)
    generator = NGramModel.train(docs[3000:FIRST_FRESH])
    baseline = metrics.build_baseline(generator.sample(600, seed=1), reference, "trigram-v1")
    mixture, why = stream_mixture(reference, [baseline])
    if why:
        print(f"no embedding score ({why}): the LM ratio only")
        models = {"lexical": mixture}
    else:
        models = {"lexical": mixture.lexical, "lexical+semantic": mixture.semantic}
    names = [*models, "joined"] if len(models) == 2 else list(models)

    runs, mixed = windows_of(docs, args)
    n_windows = len(runs)

    summary = []
    for label, windows in (("topic runs", runs), ("shuffled", mixed)):
        print(f"\n{label}: {n_windows} windows of {args.window} human documents")
        print(f"{'first doc':>9}  " + "  ".join(f"{k:>24}" for k in names))
        lows = {k: [] for k in names}
        estimates = {k: [] for k in names}
        for i, window in enumerate(windows):
            cells = []
            shares = {}
            corpus = models["lexical"].corpus(window)  # tokenised once for every model
            for name, model in models.items():
                shares[name] = model.estimate(corpus).fields()
            if "joined" in names:
                shares["joined"] = join_shares(shares["lexical"], shares["lexical+semantic"])
            for name in names:
                r = shares[name]
                lows[name].append(r["low"])
                estimates[name].append(r["estimate"])
                cells.append(f"{r['estimate']:.3f} [{r['low']:.3f}, {r['high']:.3f}]")
            first = FIRST_FRESH + i * args.window if label == "topic runs" else i * args.window
            print(f"{first:>9}  " + "  ".join(f"{c:>24}" for c in cells))
        for name in names:
            summary.append((label, name, sum(estimates[name]) / n_windows,
                            sum(x > args.limit for x in lows[name]),
                            sum(x > 0.02 for x in lows[name]), n_windows))
    print(f"\n{'windows':<11} {'scores':<17} {'mean estimate':>13} "
          f"{'low > ' + str(args.limit):>11} {'low > 0.02':>11}")
    for label, name, mean, over, over02, n in summary:
        print(f"{label:<11} {name:<17} {mean:>13.3f} {f'{over}/{n}':>11} {f'{over02}/{n}':>11}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
