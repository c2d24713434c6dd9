"""Deterministic document sets shared by collapsewatch and the peers.

Every set is derived from the shipped fortunes (``service.demo.sample_data.human_documents()``)
with fixed seeds, and pre-tokenised here so both sides count exactly the same tokens: the
fixture stores token lists, the peers receive ``" ".join(tokens)`` and split on whitespace.
"""

from __future__ import annotations

import re

import numpy as np

from service.demo.sample_data import human_documents

# Lowercased words, apostrophes kept inside a word ("don't"). Unicode-aware (\w), no whitespace
# inside a token, which the peers' whitespace splitting requires.
TOKEN_PATTERN = re.compile(r"\w+(?:'\w+)*")
TOKENIZER_DESCRIPTION = r"lowercase, then re.findall(r\"\w+(?:'\w+)*\")"

Tokens = list[str]


def tokenize(text: str) -> Tokens:
    return TOKEN_PATTERN.findall(text.lower())


def fortunes_tokens() -> list[Tokens]:
    return [tokenize(doc) for doc in human_documents()]


def fortunes_window(size: int, seed: int = 2000) -> list[str]:
    """A fixed random window of ``size`` fortunes (raw text), as the benchmarks score it."""
    docs = human_documents()
    picked = np.random.RandomState(seed).choice(len(docs), size=size, replace=False)
    return [docs[i] for i in sorted(picked)]


def _sample(pool: list[Tokens], size: int, rng: np.random.RandomState) -> list[Tokens]:
    return [list(pool[i]) for i in rng.choice(len(pool), size=size, replace=False)]


def human_set(corpus: list[Tokens]) -> list[Tokens]:
    """200 fortunes, as they are."""
    return _sample([d for d in corpus if d], 200, np.random.RandomState(1))


def _substitute(doc: Tokens, positions: list[int]) -> Tokens:
    """A copy of ``doc`` with the tokens at ``positions`` replaced by tokens it does not
    contain: each edit changes the up to five 5-gram shingles that cover it."""
    out = list(doc)
    for k, pos in enumerate(positions):
        out[pos] = f"zzedit{k}"
    return out


def duplicated_set(corpus: list[Tokens]) -> list[Tokens]:
    """Fortunes with exact copies and edited copies whose Jaccard similarity to the original
    (on word 5-gram shingles) is far above 0.8 (last token edited in a long document: ~0.98),
    far below it (8 spread edits in a medium document: < 0.4) or close to it (3 pairs).
    Originals of edited copies are in the set too."""
    rng = np.random.RandomState(2)
    base = _sample([d for d in corpus if d], 80, rng)
    copies = [list(d) for d in base[:30]]
    long_docs = _sample([d for d in corpus if len(d) >= 120], 12, rng)
    medium = _sample([d for d in corpus if 40 <= len(d) < 80], 16, rng)
    near = _sample([d for d in corpus if 60 <= len(d) < 70], 3, rng)
    above = [_substitute(d, [len(d) - 1]) for d in long_docs]
    below = [_substitute(d, list(range(2, len(d), len(d) // 8))[:8]) for d in medium]
    # one edit in the middle of a 60-70 token document changes 5 of ~60 shingles: J ~ 0.85;
    # two edits 10 apart: J ~ 0.72
    close = [
        _substitute(d, [len(d) // 2 - 5 * k, len(d) // 2 + 5 * k][: 1 + k])
        for k, d in enumerate(near)
    ]
    docs = base + copies + long_docs + above + medium + below + near + close
    return [docs[i] for i in rng.permutation(len(docs))]


def collapsed_set(corpus: list[Tokens]) -> list[Tokens]:
    """200 documents stitched from spans of only 8 fortunes: what late collapse reads like
    (few distinct n-grams, much cross-document repetition, high Self-BLEU)."""
    rng = np.random.RandomState(3)
    pool = _sample([d for d in corpus if len(d) >= 30], 8, rng)
    docs = []
    for _ in range(200):
        doc: Tokens = []
        for _ in range(int(rng.randint(1, 4))):
            source = pool[int(rng.randint(len(pool)))]
            start = int(rng.randint(0, len(source) - 5))
            length = int(rng.randint(5, 16))
            doc.extend(source[start : start + length])
        docs.append(doc)
    return docs


def edge_set() -> list[Tokens]:
    """Short and empty documents, duplicated short documents, non-ASCII tokens, repeats."""
    return [
        [],
        ["solo"],
        ["three", "little", "words"],
        ["exactly", "four", "tokens", "here"],
        ["exactly", "four", "tokens", "here"],
        ["five", "tokens", "make", "one", "shingle"],
        ["five", "tokens", "make", "one", "shingle"],
        ["café", "naïve", "日本語", "über", "straße", "façade"],
        ["the"] * 9,
        ["the", "cat", "sat", "on", "the", "mat", "and", "the", "cat", "sat"],
        ["a", "cat", "sat", "on", "the", "mat", "and", "the", "dog", "sat"],
        [],
        ["solo"],
        ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"],
        ["a", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "cat", "again"],
    ]


def document_sets() -> dict[str, tuple[str, list[Tokens]]]:
    corpus = fortunes_tokens()
    return {
        "human": ("200 fortunes (seed 1)", human_set(corpus)),
        "duplicated": (
            (
                "80 fortunes + 30 exact copies + edited copies of 12 long (J~0.98), 16 medium"
                " (J<0.4) and 3 fortunes (J near 0.8), with their originals (seed 2)"
            ),
            duplicated_set(corpus),
        ),
        "collapsed": (
            "200 documents stitched from spans of 8 fortunes (seed 3)",
            collapsed_set(corpus),
        ),
        "edge": ("empty, 1-5 token, duplicated, non-ASCII and repetitive documents", edge_set()),
    }
