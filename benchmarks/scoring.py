"""Scoring speed, collapsewatch and the peer implementations side by side, in one run.

    .venv/bin/python -m benchmarks.scoring [--window 2000] [--nltk-hypotheses 200]

On a fixed window of fortunes (``--window`` documents, seed 2000) it times:

* each comparable metric: ``metrics.functional`` against its peer, run in the peer's own
  venv (benchmarks/peers/envs.py) on the same tokens, timed inside the peer process around
  the peer call alone (imports and start-up excluded); both sides report the median of
  ``--repeats`` runs (nltk Self-BLEU: one run);
* the whole suite: ``metrics.score`` on the raw window after the reference file is loaded
  (first call, which may still compute a band, and the median of the repeats), against the
  sum of the peers' times;
* building a reference from all fortunes with human bands for three window sizes.

nltk Self-BLEU is quadratic: by default only the first ``--nltk-hypotheses`` documents are
scored, each against all other documents of the window (exactly their share of a full run),
and the time is extrapolated linearly to the whole window; ``--nltk-hypotheses 0`` runs it
all. The table says which.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import metrics
from benchmarks.peers import envs
from benchmarks.peers.inputs import fortunes_window, tokenize
from metrics import functional as F
from metrics.config import ReferenceConfig
from service.sample_data import human_documents

SUITE_GOAL_SECONDS = 1.0
REFERENCE_GOAL_SECONDS = 60.0
BAND_SIZES = (100, 500, 2000)


@dataclass
class Row:
    what: str
    ours: float
    peer_name: str
    peer: float | None
    goal: str
    note: str = ""

    def ratio(self) -> str:
        return f"{self.peer / self.ours:,.1f}x" if self.peer else "-"

    def verdict(self) -> str:
        if self.goal == "<= peer":
            return "ok" if self.peer is None or self.ours <= self.peer else "SLOWER"
        limit = float(self.goal.split()[1])
        return "ok" if self.ours <= limit else "MISSED"


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _seconds(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def per_metric_rows(texts: list[str], repeats: int, nltk_hypotheses: int) -> list[Row]:
    docs = [tokenize(text) for text in texts]
    joined = [" ".join(doc) for doc in docs]
    flat = [tok for doc in docs for tok in doc]
    print(f"running peers on {len(docs)} documents, {len(flat)} tokens", file=sys.stderr)
    distinct, repetition, compression = envs.run_batch(
        "diversity",
        [
            {"op": "distinct_stream", "docs": joined, "max_n": 3, "repeats": repeats},
            {"op": "self_repetition", "docs": joined, "n": 4, "repeats": repeats},
            {"op": "compression", "docs": joined, "repeats": repeats},
        ],
    )
    limit = nltk_hypotheses if 0 < nltk_hypotheses < len(docs) else len(docs)
    bleu = envs.run("nltk", "self_bleu", {"docs": joined, "limit": limit})
    bleu_seconds = bleu["seconds"] * len(docs) / limit
    bleu_note = (
        f"nltk ran {limit} of {len(docs)} hypotheses (each vs all others), x{len(docs) / limit:g}"
        if limit < len(docs)
        else "nltk full run"
    )
    sketch = envs.run(
        "datasketch",
        "near_duplicates",
        {
            "docs": joined,
            "threshold": 0.8,
            "num_perm": 128,
            "shingle": 5,
            "seed": 1,
            "repeats": repeats,
        },
    )
    richness = envs.run(
        "lexicalrichness", "mattr", {"tokens": flat, "window": 100, "repeats": repeats}
    )

    def ours(fn: Callable[[], object]) -> float:
        return _median_seconds(fn, repeats)

    return [
        Row(
            "distinct-1,2,3",
            ours(lambda: [F.distinct_n(docs, n) for n in (1, 2, 3)]),
            "diversity.ngram_diversity_score(num_n=3)",
            distinct["seconds"],
            "<= peer",
        ),
        Row(
            "self-repetition (4-grams)",
            ours(lambda: F.self_repetition(docs, 4)),
            "diversity.self_repetition_score",
            repetition["seconds"],
            "<= peer",
        ),
        Row(
            "compression ratio (gzip)",
            ours(lambda: F.compression_ratio(docs)),
            "diversity.compression_ratio",
            compression["seconds"],
            "<= peer",
        ),
        Row(
            "Self-BLEU-4",
            ours(lambda: F.self_bleu(docs, 4)),
            "nltk sentence_bleu method1",
            bleu_seconds,
            "<= peer",
            bleu_note,
        ),
        Row(
            "near-duplicates (MinHash LSH)",
            ours(lambda: F.near_duplicate_rate(docs)),
            "datasketch MinHash+MinHashLSH",
            sketch["seconds"],
            "<= peer",
        ),
        Row(
            "MATTR(100)",
            ours(lambda: F.mattr(flat, 100)),
            "lexicalrichness mattr",
            richness["seconds"],
            "<= peer",
        ),
    ]


def reference_and_suite_rows(texts: list[str], repeats: int, peer_total: float) -> list[Row]:
    corpus = human_documents()
    config = ReferenceConfig(band_sizes=BAND_SIZES)
    print(f"building a reference from {len(corpus)} documents", file=sys.stderr)
    build_seconds, profile = _seconds(
        lambda: metrics.build_reference(corpus, "fortunes", config=config)
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fortunes.cwref"
        metrics.save_profile(profile, path)
        size_mb = path.stat().st_size / 1e6
        load_seconds, reference = _seconds(lambda: metrics.load_profile(path))
    first_seconds, _ = _seconds(lambda: metrics.score(texts, reference))
    suite_seconds = _median_seconds(lambda: metrics.score(texts, reference), repeats)
    return [
        Row(
            f"whole suite, metrics.score ({len(texts)} docs)",
            suite_seconds,
            "sum of the peers above",
            peer_total,
            f"<= {SUITE_GOAL_SECONDS:g} s",
            f"first call {first_seconds:.3f} s; reference load {load_seconds:.3f} s",
        ),
        Row(
            f"reference build ({len(corpus)} docs, bands {'/'.join(map(str, BAND_SIZES))})",
            build_seconds,
            "-",
            None,
            f"<= {REFERENCE_GOAL_SECONDS:g} s",
            f"file {size_mb:.1f} MB",
        ),
    ]


def render(rows: list[Row]) -> str:
    header = ("what", "collapsewatch s", "peer", "peer s", "peer/ours", "goal", "", "note")
    lines = [
        (
            r.what,
            f"{r.ours:.4f}",
            r.peer_name,
            "-" if r.peer is None else f"{r.peer:.4f}",
            r.ratio(),
            r.goal,
            r.verdict(),
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(line.rstrip() for line in out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=int, default=2000, help="documents in the window")
    parser.add_argument("--repeats", type=int, default=5, help="runs of ours (median)")
    parser.add_argument(
        "--nltk-hypotheses", type=int, default=200, help="0 = full nltk Self-BLEU run"
    )
    args = parser.parse_args(argv)
    texts = fortunes_window(args.window)
    rows = per_metric_rows(texts, args.repeats, args.nltk_hypotheses)
    peer_total = sum(r.peer for r in rows if r.peer)
    rows += reference_and_suite_rows(texts, args.repeats, peer_total)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"window: {args.window} fortunes (seed 2000); load average {load} on {os.cpu_count()} CPUs"
    )
    print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
