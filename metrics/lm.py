"""What a reference knows about human text: vocabulary, tail band, rare bigrams, n-gram LM.

Built from the *profile* part of the reference documents only; the calibration part is
held out so that human windows are scored against a model that has not seen them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metrics.kernels import unique_counts
from metrics.sample import Corpus
from metrics.text import combine, ngram_keys


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[k] for each query key found in sorted_keys, 0 elsewhere. O(Q log K)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(query), dtype=values.dtype)
    idx = np.searchsorted(sorted_keys, query)
    idx_c = np.minimum(idx, len(sorted_keys) - 1)
    found = sorted_keys[idx_c] == query
    return np.where(found, values[idx_c], 0)


def tail_band(counts: np.ndarray, tail_mass: float) -> np.ndarray:
    """Boolean mask of the types in the tail band.

    The tail band is the rarest types that together carry at most ``tail_mass`` of the
    token mass, taken by whole count classes (all types seen once, then all seen twice,
    ...), so no arbitrary tie-break decides which of two equally rare words is "tail".
    If even the types seen once carry more than ``tail_mass``, the band is those types.
    """
    total = counts.sum()
    if total == 0:
        return np.zeros(len(counts), dtype=bool)
    classes, per_class = np.unique(counts, return_counts=True)
    mass = np.cumsum(classes * per_class) / total
    keep = int(np.searchsorted(mass, tail_mass, side="right"))
    cutoff = classes[max(keep, 1) - 1]
    return counts <= cutoff


@dataclass(frozen=True)
class ReferenceModel:
    uni_ids: np.ndarray  # uint64 sorted
    uni_counts: np.ndarray  # int64
    ctx_total: np.ndarray  # int64: times the type is followed by a token in its document
    ctx_types: np.ndarray  # int64: distinct types that follow it
    bi_keys: np.ndarray  # uint64 sorted bigram keys
    bi_counts: np.ndarray  # int64
    tail_ids: np.ndarray  # uint64 sorted: the tail band
    rare_bigrams: np.ndarray  # uint64 sorted: bigrams seen once in the profile part

    ARRAYS = (
        "uni_ids", "uni_counts", "ctx_total", "ctx_types", "bi_keys", "bi_counts",
        "tail_ids", "rare_bigrams",
    )

    @property
    def total(self) -> int:
        return int(self.uni_counts.sum())

    @classmethod
    def build(cls, corpus: Corpus, tail_mass: float) -> ReferenceModel:
        ids = corpus.vocab_ids[corpus.index]
        uni_ids, uni_counts = unique_counts(ids)
        bi, _ = ngram_keys(ids, corpus.offsets, 2)
        bi_keys, bi_counts = unique_counts(bi)
        # contexts: every token that has a successor inside its document
        lengths = corpus.lengths
        doc_of = np.repeat(np.arange(len(lengths)), lengths)
        has_next = np.zeros(len(ids), dtype=bool)
        has_next[:-1] = doc_of[:-1] == doc_of[1:]
        ctx_ids = ids[has_next]
        nxt_ids = ids[1:][has_next[:-1]]
        c_ids, c_tot = unique_counts(ctx_ids)
        # distinct followers of each context: distinct bigram keys, grouped by their context
        order = np.lexsort((combine(ctx_ids, nxt_ids), ctx_ids))
        ctx_sorted, bi_sorted = ctx_ids[order], combine(ctx_ids, nxt_ids)[order]
        first = np.r_[True, (ctx_sorted[1:] != ctx_sorted[:-1]) | (bi_sorted[1:] != bi_sorted[:-1])]
        t_ids, t_types = unique_counts(ctx_sorted[first])
        ctx_total = _lookup(c_ids, c_tot.astype(np.int64), uni_ids)
        ctx_types = _lookup(t_ids, t_types.astype(np.int64), uni_ids)
        tail = uni_ids[tail_band(uni_counts, tail_mass)]
        rare = bi_keys[bi_counts == 1]
        return cls(
            uni_ids, uni_counts.astype(np.int64), ctx_total, ctx_types, bi_keys,
            bi_counts.astype(np.int64), np.sort(tail), np.sort(rare),
        )

    def token_neglogprob(self, ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """-ln P(token | previous token) for every token; O(T log V).

        Interpolated Witten–Bell bigram model (Witten & Bell 1991; Chen & Goodman 1998,
        §2.5): P(w|v) = (c(v,w) + T(v)·P1(w)) / (c(v) + T(v)), T(v) = distinct followers of
        v. P1 is add-one over the vocabulary plus one unknown-word slot. The first token of
        a document uses P1.
        """
        n_types = len(self.uni_ids)
        total = self.total
        c_w = _lookup(self.uni_ids, self.uni_counts, ids).astype(np.float64)
        p1 = (c_w + 1.0) / (total + n_types + 1.0)
        prob = p1.copy()
        if len(ids) > 1:
            lengths = np.diff(offsets)
            doc_of = np.repeat(np.arange(len(lengths)), lengths)
            cont = np.flatnonzero(doc_of[1:] == doc_of[:-1]) + 1  # positions with a predecessor
            prev = ids[cont - 1]
            c_v = _lookup(self.uni_ids, self.ctx_total, prev).astype(np.float64)
            t_v = _lookup(self.uni_ids, self.ctx_types, prev).astype(np.float64)
            c_vw = _lookup(self.bi_keys, self.bi_counts, combine(prev, ids[cont])).astype(
                np.float64
            )
            seen = (c_v + t_v) > 0
            interp = (c_vw + t_v * p1[cont]) / np.where(seen, c_v + t_v, 1.0)
            prob[cont] = np.where(seen, interp, p1[cont])
        return -np.log(prob)

    def doc_nll(self, ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Mean negative log-likelihood per token (nats) of every document; NaN if empty."""
        lengths = np.diff(offsets)
        nlp = self.token_neglogprob(ids, offsets)
        doc_of = np.repeat(np.arange(len(lengths)), lengths)
        sums = np.bincount(doc_of, weights=nlp, minlength=len(lengths))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(lengths > 0, sums / np.maximum(lengths, 1), np.nan)
