"""What a stream's synthetic share adds to scoring one window, side by side.

    .venv/bin/python -m benchmarks.stream [--window 2000] [--repeats 3]

A reference of fortunes, one or two trigram generators (``metrics.synthetic``) trained on
other fortunes, each with a baseline of its own outputs; a window of ``--window`` documents,
half fresh human fortunes and half fresh outputs. It times, on that window:

* ``metrics.score`` (what every window costs; the band is computed before timing starts);
* ``metrics.score(..., mixture=)`` with what each ``COLLAPSEWATCH_STREAM_SHARE_SCORES``
  builds (``metrics.mixture.stream_mixture``): ``joined``, the default (the LM ratio over
  every document and, when the profiles have embeddings as they do with the ``embeddings``
  extra, the LM ratio with the embedding score over the documents the semantic metrics
  embed, joined), ``lexical`` and ``semantic``, with one source and with two: the
  difference to the first line is what a stream's window costs on top;
* building each mixture (once per reference and sources per worker process, not per window).

Times are CPU seconds of this process (``time.process_time``; the code measured is
single-threaded) and wall seconds, medians of ``--repeats``. Goal: the estimate adds at most
1 s CPU to a 2,000-document window; judged on the share timed alone (its ``synthetic_share_
fields`` on the window as scoring encoded and embedded it), the difference to
``metrics.score`` alone printed beside it as a cross-check.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable

import metrics
from metrics.mixture import STREAM_SCORES, stream_mixture
from metrics.sample import Sample
from metrics.scoring import encode_window_texts, synthetic_share_fields
from metrics.semantic import window_vectors
from metrics.synthetic import NGramModel
from metrics.text import normalize_documents
from service.demo.sample_data import human_documents

GOAL_SECONDS = 1.0


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(median CPU seconds, median wall seconds, last result)."""
    cpu, wall, out = [], [], None
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall), out


def read_share(window: list[str], reference, written: set[str], documents: int) -> float:
    """The true share of ``written`` documents among those the estimate read: the first
    ``documents`` non-empty ones in scoring order (``metrics.scoring.synthetic_share_fields``)."""
    corpus, _, texts = encode_window_texts(window, reference)
    order = [i for i in range(len(texts)) if corpus.lengths[i] > 0][:documents]
    marked = set(normalize_documents(written))  # the texts scoring sees
    return sum(texts[i] in marked for i in order) / max(len(order), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-size", type=int, default=4000)
    args = parser.parse_args(argv)

    docs = list(human_documents())
    random.Random(7).shuffle(docs)
    n_ref = args.reference_size
    reference_docs = docs[:n_ref]
    gen_a = NGramModel.train(docs[n_ref:n_ref + 2000])
    gen_b = NGramModel.train(docs[n_ref + 2000:n_ref + 4000], order=2)
    fresh = docs[n_ref + 4000:]
    half = args.window // 2
    if len(fresh) < half:
        parser.error(f"only {len(fresh)} fresh human documents; use a smaller --window "
                     "or --reference-size")
    print(f"load average {os.getloadavg()[0]:.2f}; window {args.window} documents "
          f"(half synthetic), reference {n_ref} documents")

    reference = metrics.build_reference(reference_docs, "fortunes",
                                        config=metrics.ReferenceConfig(replicates=20))
    base_a = metrics.build_baseline(gen_a.sample(1000, seed=1), reference, "trigram")
    base_b = metrics.build_baseline(gen_b.sample(1000, seed=1), reference, "bigram")
    out_a, out_b = gen_a.sample(half - half // 2, seed=2), gen_b.sample(half // 2, seed=2)
    window = fresh[:half] + out_a + out_b
    synthetic = (set(out_a), set(out_b))
    metrics.score(window, reference)  # the band for this window size, outside the timing
    # the window as metrics.score encodes it, with the embeddings its semantic metrics compute
    corpus, keys, _ = encode_window_texts(window, reference)
    sample = Sample(corpus, int(corpus.offsets[-1]), keys)
    if reference.context().semantic is not None:
        window_vectors(sample, reference.context().semantic)

    rows = []
    cpu, wall, _ = timed(lambda: metrics.score(window, reference), args.repeats)
    rows.append(("metrics.score (every window)", cpu, wall, ""))
    score_cpu = cpu
    for sources in ([base_a], [base_a, base_b]):
        label = "+".join(s.name for s in sources)
        written = synthetic[0] if len(sources) == 1 else synthetic[0] | synthetic[1]
        # what each COLLAPSEWATCH_STREAM_SHARE_SCORES builds (stream_mixture): the default
        # first (both estimators, joined), then each alone
        variants = []
        for scores in STREAM_SCORES:
            b_cpu, b_wall, (mixture, why) = timed(
                lambda s=sources, k=scores: stream_mixture(reference, s, scores=k), 1)
            name = f"STREAM_SHARE_SCORES={scores}" + (", the default" if scores == "joined"
                                                      else "")
            if why is not None:
                rows.append((f"{name} ({label})", b_cpu, b_wall,
                             f"falls back to the LM ratio: {why}"))
            variants.append((name, b_cpu, b_wall, mixture))
        for name, b_cpu, b_wall, model in variants:
            rows.append((f"build mixture ({label}, {name}; once per worker)", b_cpu, b_wall,
                         f"scores: {model.score_kind}"))
            cpu, wall, result = timed(lambda m=model: metrics.score(window, reference, mixture=m),
                                      args.repeats)
            share = result["synthetic_share"]
            truth = read_share(window, reference, written, share["documents"])
            rows.append((f"metrics.score + synthetic share ({label}, {name})", cpu, wall,
                         f"{cpu - score_cpu:+.3f} s against metrics.score alone"))
            # what the share adds, timed alone: on the window as scoring encoded and
            # embedded it (the difference above is of two ~6 s numbers and moves with the
            # machine's speed during the run)
            cpu, wall, _ = timed(lambda m=model: synthetic_share_fields(sample, reference, m),
                                 args.repeats)
            note = (f"share {share['estimate']:.3f} [{share['low']:.3f}, {share['high']:.3f}] "
                    f"over {share['documents']} documents (true share there {truth:.3f}); "
                    f"goal <= {GOAL_SECONDS:.1f} s on top of scoring: "
                    f"{'met' if cpu <= GOAL_SECONDS else 'MISSED'}")
            rows.append((f"  the synthetic share alone ({label}, {name})", cpu, wall, note))

    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}}  {'cpu s':>7}  {'wall s':>7}")
    for name, cpu, wall, note in rows:
        print(f"{name:<{width}}  {cpu:7.3f}  {wall:7.3f}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
