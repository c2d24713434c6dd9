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
* the evidence lists (``metrics.evidence``): ``metrics.score`` with and without them on
  the same window, side by side (goal: at most 20% more).

nltk Self-BLEU is quadratic: by default only the first ``--nltk-hypotheses`` documents are
scored, each against all other documents of the window (exactly their share of a full run),
and the time is extrapolated linearly to the whole window; ``--nltk-hypotheses 0`` runs it
all. The table says which.

Every time is given as CPU seconds of the process doing the work (``time.process_time``;
the code measured is single-threaded, so this is the wall time on an idle machine) and as
wall seconds. The goals and ratios use CPU seconds: on a shared machine wall time mostly
measures the other processes. The first output line gives the load average.
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
from service.demo.sample_data import human_documents

SUITE_GOAL_SECONDS = 1.0
REFERENCE_GOAL_SECONDS = 60.0
EVIDENCE_SHARE_GOAL = 0.20  # evidence may add at most 20% to a window's scoring time
BAND_SIZES = (100, 500, 2000)


@dataclass(frozen=True)
class Timing:
    cpu: float
    wall: float

    @classmethod
    def of(cls, seconds: dict) -> Timing:
        return cls(cpu=seconds["cpu"], wall=seconds["wall"])

    def scaled(self, factor: float) -> Timing:
        return Timing(self.cpu * factor, self.wall * factor)


@dataclass
class Row:
    what: str
    ours: Timing
    peer_name: str
    peer: Timing | None
    goal: str
    note: str = ""

    def ratio(self) -> str:
        return f"{self.peer.cpu / self.ours.cpu:,.1f}x" if self.peer else "-"

    def verdict(self) -> str:
        if self.goal == "<= peer":
            return "ok" if self.peer is None or self.ours.cpu <= self.peer.cpu else "SLOWER"
        limit = float(self.goal.split()[1])
        return "ok" if self.ours.cpu <= limit else "MISSED"


def timed(fn: Callable[[], object], repeats: int = 1) -> tuple[Timing, object]:
    """Median CPU and wall seconds of ``repeats`` runs of ``fn()``, and its last value."""
    cpus, walls, value = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        value = fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return Timing(statistics.median(cpus), statistics.median(walls)), value


def run_peers(docs: list[list[str]], repeats: int, nltk_hypotheses: int) -> dict[str, dict]:
    """Every peer on the same tokens, each in its own venv and process."""
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
    bleu["limit"] = limit
    near = {"threshold": 0.8, "num_perm": 128, "shingle": 5, "seed": 1, "repeats": repeats}
    sketch = envs.run("datasketch", "near_duplicates", {"docs": joined, **near})
    richness = envs.run(
        "lexicalrichness", "mattr", {"tokens": flat, "window": 100, "repeats": repeats}
    )
    return {
        "distinct": distinct,
        "self_repetition": repetition,
        "compression": compression,
        "self_bleu": bleu,
        "near_duplicates": sketch,
        "mattr": richness,
    }


def per_metric_rows(texts: list[str], repeats: int, nltk_hypotheses: int) -> list[Row]:
    docs = [tokenize(text) for text in texts]
    joined = [" ".join(doc) for doc in docs]
    flat = [tok for doc in docs for tok in doc]
    peers = run_peers(docs, repeats, nltk_hypotheses)

    def peer(name: str) -> Timing:
        return Timing.of(peers[name]["seconds"])

    def same(ours_value: float, peer_value: float) -> str:
        return f"value {ours_value:.6f}, peer {peer_value:.6f}"

    rows = []
    t, _ = timed(lambda: F.distinct_ns(docs, 3), repeats)
    rows.append(
        Row(
            "distinct-1,2,3",
            t,
            "diversity.ngram_diversity_score(num_n=3)",
            peer("distinct"),
            "<= peer",
            "peer's n-grams also span document boundaries",
        )
    )
    t, value = timed(lambda: F.self_repetition(docs, 4), repeats)
    rows.append(
        Row(
            "self-repetition (4-grams)",
            t,
            "diversity.self_repetition_score",
            peer("self_repetition"),
            "<= peer",
            same(value, peers["self_repetition"]["value"]),
        )
    )
    # the peer gets the documents as strings; compression_ratio accepts the same
    t, value = timed(lambda: F.compression_ratio(joined), repeats)
    double = peers["compression"]["double_gzip_ratio"]
    rows.append(
        Row(
            "compression ratio (gzip)",
            t,
            "diversity.compression_ratio",
            peer("compression"),
            "<= peer",
            f"value {value:.6f} (one gzip pass), peer {double:.6f} (two)",
        )
    )
    t, _ = timed(lambda: F.self_bleu(docs, 4), repeats)
    limit = peers["self_bleu"]["limit"]
    rows.append(
        Row(
            "Self-BLEU-4",
            t,
            "nltk sentence_bleu method1",
            peer("self_bleu").scaled(len(docs) / limit),
            "<= peer",
            (
                f"nltk ran {limit} of {len(docs)} hypotheses (each vs all others),"
                f" time x{len(docs) / limit:g}"
                if limit < len(docs)
                else "nltk full run"
            ),
        )
    )
    t, value = timed(lambda: F.near_duplicate_rate(docs), repeats)
    rows.append(
        Row(
            "near-duplicates (MinHash LSH)",
            t,
            "datasketch MinHash+MinHashLSH",
            peer("near_duplicates"),
            "<= peer",
            same(value, peers["near_duplicates"]["verified_rate"]),
        )
    )
    t, value = timed(lambda: F.mattr(flat, 100), repeats)
    rows.append(
        Row(
            "MATTR(100)",
            t,
            "lexicalrichness mattr",
            peer("mattr"),
            "<= peer",
            same(value, peers["mattr"]["value"]),
        )
    )
    return rows


def reference_and_suite_rows(texts: list[str], repeats: int, peer_total: Timing) -> list[Row]:
    corpus = human_documents()
    config = ReferenceConfig(band_sizes=BAND_SIZES)
    print(f"building a reference from {len(corpus)} documents", file=sys.stderr)
    build, profile = timed(lambda: metrics.build_reference(corpus, "fortunes", config=config))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fortunes.cwref"
        metrics.save_profile(profile, path)
        size_mb = path.stat().st_size / 1e6
        load, reference = timed(lambda: metrics.load_profile(path))
    first, _ = timed(lambda: metrics.score(texts, reference))
    suite, _ = timed(lambda: metrics.score(texts, reference), repeats)
    # evidence (metrics.evidence) is computed inside score; its cost is the difference
    bare, _ = timed(lambda: metrics.score(texts, reference, with_evidence=False), repeats)
    extra = Timing(suite.cpu - bare.cpu, suite.wall - bare.wall)
    return [
        Row(
            f"evidence inside metrics.score ({len(texts)} docs)",
            extra,
            "metrics.score without evidence",
            bare,
            f"<= {EVIDENCE_SHARE_GOAL * bare.cpu:.3f} s",
            f"{extra.cpu / bare.cpu:.0%} of scoring without evidence "
            f"(goal {EVIDENCE_SHARE_GOAL:.0%})",
        ),
        Row(
            f"whole suite, metrics.score ({len(texts)} docs)",
            suite,
            "sum of the peers above",
            peer_total,
            f"<= {SUITE_GOAL_SECONDS:g} s",
            f"first call {first.cpu:.3f} s; reference load {load.cpu:.3f} s",
        ),
        Row(
            f"reference build ({len(corpus)} docs, bands {'/'.join(map(str, BAND_SIZES))})",
            build,
            "-",
            None,
            f"<= {REFERENCE_GOAL_SECONDS:g} s",
            f"file {size_mb:.1f} MB",
        ),
    ]


def render(rows: list[Row]) -> str:
    header = (
        "what",
        "ours cpu s",
        "ours wall s",
        "peer",
        "peer cpu s",
        "peer wall s",
        "peer/ours",
        "goal",
        "",
        "note",
    )
    lines = [
        (
            r.what,
            f"{r.ours.cpu:.4f}",
            f"{r.ours.wall:.4f}",
            r.peer_name,
            "-" if r.peer is None else f"{r.peer.cpu:.4f}",
            "-" if r.peer is None else f"{r.peer.wall:.4f}",
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
    parser.add_argument("--repeats", type=int, default=5, help="runs per timing (median)")
    parser.add_argument(
        "--nltk-hypotheses", type=int, default=200, help="0 = full nltk Self-BLEU run"
    )
    args = parser.parse_args(argv)
    texts = fortunes_window(args.window)
    rows = per_metric_rows(texts, args.repeats, args.nltk_hypotheses)
    peer_total = Timing(
        sum(r.peer.cpu for r in rows if r.peer), sum(r.peer.wall for r in rows if r.peer)
    )
    rows += reference_and_suite_rows(texts, args.repeats, peer_total)
    # semantic metrics (issue 16): cost per stage at a 500-document window
    from benchmarks.semantic import cost_rows

    rows += cost_rows(Row, timed, 500)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"window: {args.window} fortunes (seed 2000); load average {load} on {os.cpu_count()} CPUs"
    )
    print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
