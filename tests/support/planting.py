"""Signals planted into fresh human text, for the evidence tests (library, pipeline, CLI)."""

from __future__ import annotations

import numpy as np

import metrics
from metrics.evidence import EvidenceConfig, background_of, vanishing_candidates
from metrics.sample import Sample
from metrics.scoring import encode_window_texts


def window_tokens(docs: list[str], reference: metrics.Profile) -> int:
    corpus, keys, _ = encode_window_texts(docs, reference)
    return int(Sample(corpus, int(corpus.offsets[-1]), keys).docs.offsets[-1])


def remove_tail_words(docs: list[str], reference: metrics.Profile, baseline: metrics.Profile,
                      seed: int, count: int = 30, min_expected: float = 5.0,
                      extra_tokens: int = 0) -> tuple[list[str], list[str]]:
    """Drop every document holding one of ``count`` words the baseline uses often enough
    that their absence is significant: expected >= ``min_expected`` times in the window that
    remains (plus ``extra_tokens`` the caller will add). The removal shrinks the window, and
    so every expectation: a chosen word that falls below the floor is swapped for another
    until all qualify. Returns (kept documents, chosen words)."""
    background = background_of(baseline, reference, EvidenceConfig())
    tok = reference.config.tokenizer
    doc_words = [set(metrics.tokenize(d, tok)) for d in docs]

    def expected(kept: list[str]) -> dict[str, float]:
        tokens = window_tokens(kept, reference) + extra_tokens
        return {c["term"]: c["expected"] for c in vanishing_candidates(background, tokens)
                if " " not in c["term"]}

    pool = [w for w, e in expected(docs).items() if e >= 1.3 * min_expected]
    rng = np.random.default_rng(seed)
    rng.shuffle(pool)
    chosen, spare = pool[:count], pool[count:]
    low: list[str] = []
    kept = docs
    for _ in range(20):
        gone = set(chosen)
        kept = [d for d, words in zip(docs, doc_words) if not gone & words]
        after = expected(kept)
        low = [w for w in chosen if after[w] < min_expected]
        if not low:
            break
        chosen = [w for w in chosen if w not in low] + [spare.pop() for _ in low]
    assert not low, f"could not choose {count} words expected >= {min_expected}"
    return kept, chosen


def plant_phrase(docs: list[str], phrase: str, every: int = 5) -> list[str]:
    """``phrase`` appended to every ``every``-th document (a fifth by default)."""
    return [d + " " + phrase if i % every == 0 else d for i, d in enumerate(docs)]


def plant_duplicates(docs: list[str], sources: list[str],
                     sizes: tuple[int, ...] = (5, 4, 3, 3, 2)) -> tuple[list[str], list[int]]:
    """Groups of edited copies (case, punctuation, a word added or dropped at an end: the
    Jaccard of 5-word shingles stays >= 0.8) of ``sources``, one group per size, appended to
    ``docs``. Returns (documents, group sizes)."""
    out = list(docs)
    for src, size in zip(sources, sizes):
        edits = [src.upper(), src + " Indeed.", src.rsplit(" ", 1)[0],
                 src.replace(",", ";") + " ok", "So, " + src]
        out += [src, *edits[: size - 1]]
    return out, list(sizes[:len(sources)])
