"""Bootstrap bands: the suite on many random samples of known-good documents.

A band for a window of ``n`` documents and a token budget ``B`` is the matrix of every
registry metric on ``replicates`` random samples of the pool (the reference's calibration
documents, or a baseline's documents). Each replicate resamples *documents*, not tokens
(tokens in one document are not independent): its document view is ``n`` random
documents; its budget view is random documents until ``B`` tokens (the last one cut).
Drawing is without replacement while the pool lasts.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from metrics import kernels
from metrics.registry import (
    BUDGET_COLUMNS,
    DOC_COLUMNS,
    REGISTRY,
    SUBSAMPLE_COLUMNS,
    Context,
    compute_all,
    minhash_of,
)
from metrics.sample import Corpus, Sample
from metrics.semantic import band_vectors

_THREADS = max(1, min(4, os.cpu_count() or 1))
_GRID_STEPS = 8  # budgets snap to 2^(k/8): at most ~8% of a window's tokens go unused


def snap_budget(tokens: int, cap: int) -> int:
    """The token budget for a window of ``tokens`` tokens: the largest grid value <= both.

    Grid values are floor(2^(k/8)); windows of similar length share one band.
    """
    t = min(int(tokens), int(cap))
    if t <= 16:
        return max(t, 0)
    k = math.floor(_GRID_STEPS * math.log2(t))
    while math.floor(2 ** ((k + 1) / _GRID_STEPS)) <= t:
        k += 1
    while math.floor(2 ** (k / _GRID_STEPS)) > t:
        k -= 1
    return math.floor(2 ** (k / _GRID_STEPS))


def _draw(rng: np.random.Generator, lengths: np.ndarray, n_docs: int, budget: int) -> np.ndarray:
    """Random document order covering ``n_docs`` documents and ``budget`` tokens."""
    pool = len(lengths)
    total = int(lengths.sum())
    rounds = max(math.ceil(n_docs / pool), math.ceil(budget / total) if total else 1, 1) + 1
    order = np.concatenate([rng.permutation(pool) for _ in range(min(rounds, 10_000))])
    cum = np.cumsum(lengths[order])
    need_tokens = int(np.searchsorted(cum, budget, side="left")) + 1 if budget > 0 else 0
    return order[: max(n_docs, need_tokens)]


_NO_VECTORS = np.zeros((0, 0), dtype=np.float32)
_TAKE_GROUPS_SHARE = 8


def _pool_groups(pool: Corpus, pool_doc_keys: np.ndarray, ctx: Context
                 ) -> dict[int, tuple[np.ndarray, ...]]:
    """The pool's (n-gram, document, count) groups (:func:`kernels.doc_ngram_groups`) for
    every n the "docs" metrics read (Self-BLEU's 1..max_n, self-repetition's n)."""
    whole = Sample(pool, 0, pool_doc_keys)
    ns = {*range(1, ctx.suite.self_bleu_max_n + 1), ctx.suite.self_repetition_n}
    return {n: kernels.doc_ngram_groups(*whole.ngrams("docs", n)) for n in sorted(ns)}


def _take_groups(groups: tuple[np.ndarray, ...], docs_sel: np.ndarray, pool_docs: int
                 ) -> tuple[np.ndarray, ...]:
    """The groups of the replicate whose documents are the pool's ``docs_sel`` (in that
    order, repeats allowed), from the pool's: each pool entry once per position its
    document takes, without sorting the replicate's n-grams again (the sort was ~60% of
    a large replicate's time). Keys stay sorted; within a key the positions follow the
    pool's document order rather than the replicate's, which nothing reading the groups
    depends on (per key: counts and their maximum; per document: its entries in key
    order, as before)."""
    g_key, g_doc, g_count = groups
    by_doc = np.argsort(docs_sel, kind="stable")
    ptr = np.zeros(pool_docs + 1, dtype=np.int64)
    np.cumsum(np.bincount(docs_sel, minlength=pool_docs), out=ptr[1:])
    mult = ptr[1:] - ptr[:-1]
    m = mult[g_doc]
    keep = np.flatnonzero(m)
    m = m[keep]
    entry = np.repeat(keep, m)
    total = len(entry)
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(m) - m, m)
    positions = by_doc[ptr[g_doc[entry]] + within]
    return g_key[entry], positions.astype(np.int64), g_count[entry]

# Version of the replicate draw. 2: a replicate's random stream does not depend on the
# budget, so its document view is the same at every budget (and its budget view at a
# larger budget extends the one at a smaller budget).
BAND_DRAW = 2


def replicate_order(seed: int, n_docs: int, r: int, lengths: np.ndarray, budget: int
                    ) -> np.ndarray:
    """The pool documents replicate ``r`` of a band reads, in order (its first ``n_docs``
    are the "docs" metrics' sample): replicate r's own seeded stream, see band_matrix."""
    rng = np.random.default_rng([int(seed), int(n_docs), 0xBA5D, BAND_DRAW, r])
    return _draw(rng, lengths, n_docs, budget)


def band_matrix(
    pool: Corpus,
    pool_doc_keys: np.ndarray,
    pool_doc_nll: np.ndarray,
    n_docs: int,
    budget: int,
    ctx: Context,
    replicates: int,
    seed: int,
    doc_part: np.ndarray | None = None,
    pool_vectors: np.ndarray | None = None,
    only: np.ndarray | None = None,
) -> np.ndarray:
    """(replicates, metrics) values of the registry on random pool samples. NaN = undefined.

    Replicate r draws from its own random stream, seeded by (seed, n_docs, r): a band is
    the same whether computed at build time, on demand in a worker, by the offline CLI,
    or by any number of threads. The stream does not depend on ``budget``, so replicate
    r reads the same documents at every budget: the "docs" metrics (see
    :attr:`MetricSpec.view`) of a band at ``n_docs`` documents are valid at any budget,
    and ``doc_part`` (the ``DOC_COLUMNS`` of an earlier band at ``n_docs``) saves
    computing them again; only the "budget" metrics are then computed.

    ``pool_vectors``: the pool's stored document embeddings (semantic metrics read a
    replicate's from them instead of embedding; see :func:`metrics.semantic.band_vectors`).

    ``only``: compute these registry columns only (the others stay NaN; see
    :func:`extend`). Not with ``doc_part``.

    Replicates run on a few threads: the work is numpy sorting and arithmetic, which
    releases the GIL.
    """
    lengths = pool.lengths
    if doc_part is not None and doc_part.shape != (replicates, len(DOC_COLUMNS)):
        raise ValueError(f"doc_part has shape {doc_part.shape}, expected "
                         f"{(replicates, len(DOC_COLUMNS))}")
    if only is not None and doc_part is not None:
        raise ValueError("only and doc_part exclude each other")
    columns = BUDGET_COLUMNS if doc_part is not None else only
    docs_view = columns is None or bool(np.isin(DOC_COLUMNS, columns).any())
    # MinHash signatures depend only on their own document: compute each pool document's
    # once, and let a replicate take its documents' rows
    signatures = lsh = None
    groups: dict[int, tuple[np.ndarray, ...]] = {}
    if docs_view and pool.n_docs and n_docs:
        signatures = minhash_of(Sample(pool, 0, pool_doc_keys), ctx)
        lsh = kernels.lsh_keys(signatures, ctx.suite.near_duplicate_threshold)
        # likewise a document's n-gram counts: a replicate's groups are taken from the
        # pool's instead of sorting its n-grams again. Taking them scans the whole pool's,
        # so it pays only for replicates above ~1/8 of the pool (measured: 2,000 of 4,800
        # documents 1.6x faster, 200 of 4,800 1.6x slower)
        if n_docs * _TAKE_GROUPS_SHARE >= pool.n_docs:
            groups = _pool_groups(pool, pool_doc_keys, ctx)

    def replicate(r: int) -> np.ndarray:
        order = replicate_order(seed, n_docs, r, lengths, budget)
        docs_sel = order[:n_docs]
        sample = Sample(
            docs=pool.take(docs_sel),
            budget_tokens=budget,
            doc_keys=pool_doc_keys[docs_sel],
            budget_source=pool.take(order),
        )
        if docs_view:
            nll = pool_doc_nll[docs_sel]
            sample._cache["doc_nll"] = nll[~np.isnan(nll)]
            if signatures is not None:
                sample._cache["minhash"] = signatures[docs_sel]
                sample._cache["lsh_keys"] = lsh[docs_sel]
            for n, pool_groups in groups.items():
                sample._cache[("groups", n)] = _take_groups(pool_groups, docs_sel, pool.n_docs)
            # a pool without stored embeddings leaves the semantic columns undefined
            # rather than embedding every replicate
            sample._cache["embeddings"] = (
                _NO_VECTORS if pool_vectors is None else
                band_vectors(pool_vectors, lengths, docs_sel, ctx.suite.embedded_docs))
        row = compute_all(sample, ctx, columns)
        if doc_part is not None:
            row[DOC_COLUMNS] = doc_part[r]
        return row

    workers = min(_THREADS, replicates)
    # one BLAS thread per replicate thread: the semantic metrics' products (256 x 384
    # against 1,000 reference vectors) are too small to split, and a multithreaded
    # OpenBLAS under the replicate threads burned ~3x the CPU for the same band on a busy
    # 2-core machine (40 replicates of 1,000 documents: 4.6-5.2 s CPU, 1.6 s with one
    # thread; the same matrix bit for bit). benchmarks/cli.py measures it.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        if workers <= 1:
            rows = [replicate(r) for r in range(replicates)]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool_exec:
                rows = list(pool_exec.map(replicate, range(replicates)))
    if not rows:
        return np.full((0, len(REGISTRY)), np.nan)
    return np.vstack(rows)


# Quantiles of replicates by Hyndman & Fan's (1996) definition 6 ("weibull"): the k-th of R
# order statistics estimates the k/(R + 1) quantile, so a fresh draw falls below the estimated
# p-quantile with probability p. numpy's default (definition 7) puts the 1% bound of 200
# replicates at the 2.99th order statistic, which ~1.5% of fresh draws fall below.
QUANTILE_METHOD = "weibull"


def summarise(matrix: np.ndarray, low: float, high: float) -> dict[str, np.ndarray]:
    """Per-metric mean, low and high quantile over replicates (NaN where never defined)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, on purpose
        return {
            "mean": np.nanmean(matrix, axis=0),
            "low": np.nanquantile(matrix, low, axis=0, method=QUANTILE_METHOD),
            "high": np.nanquantile(matrix, high, axis=0, method=QUANTILE_METHOD),
        }


# ------------------------------------------------------------------ calibration
#
# A replicate is a window drawn without replacement from a finite pool, so it differs from
# a *fresh* window of the same source in two ways (Cochran 1977, "Sampling Techniques",
# ch. 2, finite population correction):
#
# * replicates overlap: the spread of a mean over n of N pool documents is
#   sigma^2/n * (N - n)/(N - 1), smaller than a fresh window's sigma^2/n;
# * the band is centred on the pool's own mean, itself an estimate with error sigma^2/N,
#   which every window compared with it shares.
#
# A fresh window deviates from the band centre with variance sigma^2 (1/n + 1/N), a
# replicate with ~sigma^2 (1/n - 1/N): replicates are spread around their mean by
# sqrt((N + n)/(N - n)) to become a calibrated band, and by sqrt(N/(N - n)) to give the
# spread of a fresh window around the pool mean alone (what a sequential detector, which
# sees the same pool mean in every window, accumulates). n/N is the window's share of the
# pool: documents for the "docs" metrics, tokens (budget / pool tokens) for the "budget"
# metrics, which read random documents up to the token budget, and min(n, S) documents for
# the semantic metrics, which read the first S of them (``sample_docs``; spreading those by
# the whole window's share made their bands too wide: x1.56 instead of x1.24 for 500
# documents against a 1,200-document pool and S = 256). The correction is exact for means
# and a first-order approximation for the type-count metrics; the calibration tests
# measure how well it holds. A column with at least half its replicates at one value (a
# count at its floor or ceiling) is spread around that value instead of its mean.

SMALL_POOL_SHARE = 0.5  # a window above half its pool: widened a lot, flagged
_SHARE_CAP = 0.9  # widening used when the window is as large as the pool (x4.4)


@dataclass(frozen=True)
class Calibration:
    """A raw band matrix turned into what a fresh window of its size is compared with.

    band: replicates spread to a fresh window's deviation from the band centre (quantile
      bands and ``z`` come from it).
    within: replicates spread to a fresh window's deviation from the pool's own mean (no
      error of that mean; the sequential detector's unit).
    share_docs / share_tokens: the window's share of the pool in documents / tokens.
    status: "calibrated" (window at most half its pool), "small_pool" (more: the band is
      widened a lot), "too_small" (the window needs more documents or tokens than the pool
      has: replicates repeat documents; the band is widened at the cap and not trusted).
    """

    band: np.ndarray
    within: np.ndarray
    pool_documents: int
    pool_tokens: int
    share_docs: float
    share_tokens: float
    status: str
    reason: str | None
    # the stored (documents, budget) bands an interpolated band was made from; None when
    # the band was computed (see interpolate below)
    interpolated_from: list[tuple[int, int]] | None = None
    # an extended band (see extend below): the stored band it extends and the replicates
    # computed at the window's size; None otherwise
    extended: Extended | None = None

    @property
    def share(self) -> float:
        return max(self.share_docs, self.share_tokens)

    @property
    def widening(self) -> float:
        """Factor the largest-share columns' spread was multiplied by."""
        f = min(self.share, _SHARE_CAP)
        return math.sqrt((1 + f) / (1 - f))

    def to_json(self) -> dict:
        return {
            "pool_documents": self.pool_documents,
            "pool_tokens": self.pool_tokens,
            "window_share": round(self.share, 4),
            "widening": round(self.widening, 4),
            "status": self.status,
            "reason": self.reason,
            "interpolated_from": (None if self.interpolated_from is None else
                                  [list(k) for k in self.interpolated_from]),
            "extended_from": (None if self.extended is None else {
                "band": list(self.extended.base),
                "replicates_computed": self.extended.replicates}),
        }


def calibrate(
    matrix: np.ndarray, pool: Corpus, n_docs: int, budget: int, what: str = "pool",
    interpolated_from: list[tuple[int, int]] | Extended | None = None,
    sample_docs: np.ndarray | int | None = None,
) -> Calibration:
    """Calibrate a (replicates, metrics) band for windows of ``n_docs`` documents and
    ``budget`` tokens drawn from the source of ``pool`` (see the notes above);
    ``sample_docs``: per registry column, the documents it reads at most
    (:func:`metrics.registry.subsample_docs`; an int: every subsampled column reads that);
    ``interpolated_from``: the band's origin as :meth:`metrics.Profile.band_with_origin`
    gives it (stored keys of an interpolated band, an :class:`Extended`, or None)."""
    extended = interpolated_from if isinstance(interpolated_from, Extended) else None
    if extended is not None:
        interpolated_from = None
    pool_docs, pool_tokens = pool.n_docs, int(pool.offsets[-1])
    f_docs = n_docs / pool_docs if pool_docs else math.inf
    f_tokens = budget / pool_tokens if pool_tokens else math.inf
    shares = np.empty(len(REGISTRY))
    shares[DOC_COLUMNS] = f_docs
    shares[BUDGET_COLUMNS] = f_tokens
    reads = _reads(sample_docs)
    if reads is not None and pool_docs:
        sub = np.isfinite(reads)
        shares[sub] = np.minimum(n_docs, reads[sub]) / pool_docs
    f = np.minimum(shares, _SHARE_CAP)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        centre = np.nanmean(matrix, axis=0) if len(matrix) else np.full(len(REGISTRY), np.nan)
    # a column mostly at one value (a topic recall at its ceiling of 1, duplicate rates at
    # 0) is spread around that value, not its mean: spread around the mean, the atom itself
    # moved (1 became 1.00002) and a window exactly at the ceiling read below the band
    lumpy, mode = _modes(matrix)
    centre = np.where(lumpy, mode, centre)
    dev = matrix - centre
    band = centre + dev * np.sqrt((1 + f) / (1 - f))
    within = centre + dev * np.sqrt(1 / (1 - f))
    share = max(f_docs, f_tokens)
    size = f"{pool_docs} documents, {pool_tokens} tokens"
    need = f"a window of {n_docs} documents and {budget} budget tokens"
    if share >= 1:
        status = "too_small"
        reason = (f"the {what} ({size}) is smaller than {need}: its band repeats documents "
                  f"and cannot be trusted; use a larger {what} or smaller windows")
    elif share > SMALL_POOL_SHARE:
        status = "small_pool"
        reason = (f"the {what} ({size}) is less than twice {need}; its band is widened "
                  f"x{math.sqrt((1 + share) / (1 - share)):.2f} to hold a fresh window; "
                  f"a larger {what} gives a narrower band")
    else:
        status, reason = "calibrated", None
    for m in (band, within):
        m.setflags(write=False)
    return Calibration(band, within, pool_docs, pool_tokens, float(f_docs), float(f_tokens),
                       status, reason, interpolated_from, extended)


# ---------------------------------------------------------------- skew allowance
#
# The widening above gets the *spread* of a fresh window right, not its skew. A document's
# contribution to sameness or diversity is skewed toward collapse (a few very repetitive
# documents), and a fresh window minus a pool's mean, scaled by the pool's own spread, is
# more skewed than the pool's replicates: a pool that lacks the few repetitive documents has
# both a low centre and narrow replicates (the studentisation effect). Measured: 200-document
# windows against a 600-document baseline fell beyond the symmetric 1% bound in 1.71% of
# checks over 60 pools, interval 1.11-2.31% (docs/early-warning.md). The collapse-side edge
# of each signal therefore moves out by a first-order Edgeworth term in the document skew,
# which each band estimates from its own replicates. The estimate is noisy (its influences
# are mostly resampling noise at 200 replicates), so it only ever widens: a negative
# estimate leaves the edge where the symmetric band has it.

# fewer replicates than this reading an average document: no skew estimate (a large pool;
# the allowance would be ~0 anyway, since it grows with the window's share of the pool)
SKEW_MIN_READS = 3


def replicate_reads(seed: int, n_docs: int, replicates: int, lengths: np.ndarray
                    ) -> np.ndarray:
    """(replicates, n_docs) pool-document indices: the documents each replicate of a band
    computed by :func:`band_matrix` reads in its document view. Its budget view reads a
    prefix of the same order, so for the "budget" metrics this is an approximation; the
    first ``n_docs`` of the order do not depend on the budget (``BAND_DRAW`` 2)."""
    budget = 0  # the order's first n_docs documents are the same at every budget
    return np.stack([replicate_order(seed, n_docs, r, lengths, budget)[:n_docs]
                     for r in range(replicates)]).astype(np.int32)


def document_skew(y: np.ndarray, reads: np.ndarray, pool: int) -> tuple[float, float]:
    """(skew of a document's contribution, signal-to-noise of the estimate) from replicates
    ``y`` (R,) and the documents each read, ``reads`` (R, n) indices into a pool of ``pool``
    documents — jackknife-after-bootstrap influences (Efron 1992, JRSS B 54: a document's
    influence is the mean of the replicates that read it minus the mean of those that do
    not). The influences carry the documents' contributions plus sampling noise of known
    variance var(y) (1/k_in + 1/k_out); noise that is symmetric adds nothing to the third
    moment, so the skew is the influences' third central moment over their variance less
    the noise, to the 3/2. (0, 0) when the noise is all there is."""
    flat = reads.ravel()
    k_in = np.bincount(flat, minlength=pool)
    sum_in = np.bincount(flat, weights=np.repeat(y, reads.shape[1]), minlength=pool)
    k_out = len(y) - k_in
    use = (k_in > 2) & (k_out > 2)
    if use.sum() < 3:
        return 0.0, 0.0
    k_in, k_out, sum_in = k_in[use], k_out[use], sum_in[use]
    influence = sum_in / k_in - (y.sum() - sum_in) / k_out
    noise = float(np.mean(y.var(ddof=1) * (1 / k_in + 1 / k_out)))
    signal = float(influence.var()) - noise
    if signal <= 0 or noise <= 0:
        return 0.0, 0.0
    third = float(((influence - influence.mean()) ** 3).mean())
    return third / signal ** 1.5, signal / noise


def edgeworth_shift(gamma: float, n: int, f: float, z: float = 2.326) -> float:
    """How far (in band standard deviations) the collapse-side quantile of a fresh window
    lies beyond the calibrated replicates' own, to first order, for documents whose
    contribution has skew ``gamma`` (toward collapse), windows of ``n`` documents and a pool
    ``n / f`` documents large; ``z``: the band's normal quantile (2.326 for 1%).
    Edgeworth/Cornish-Fisher (Hall 1992, ch. 2): the fresh window minus the pool mean, over
    the pool's spread, has mean ~ gamma f / (2 sqrt(n (1 + f))) and third cumulant
    ~ gamma (1 + 2f) / sqrt(n (1 + f)) (the studentisation adds 3 gamma f / sqrt(n (1 + f))),
    while replicates drawn without replacement have skew gamma (1 - 2f) / sqrt(n (1 - f));
    the quantile moves by the mean plus the difference of third cumulants times
    (z^2 - 1) / 6."""
    f = min(f, _SHARE_CAP)
    g = gamma / math.sqrt(n)
    fresh = g * (1 + 2 * f) / math.sqrt(1 + f)
    replicates = g * (1 - 2 * f) / math.sqrt(1 - f)
    return g * f / (2 * math.sqrt(1 + f)) + (fresh - replicates) * (z * z - 1) / 6


@dataclass(frozen=True)
class SkewAllowance:
    """Per signal: the document skew toward collapse estimated from a band's replicates,
    and how far its collapse-side edge moved out, in units of the band's spread of log
    ratios (0 when the estimate is not positive)."""

    document_skew: np.ndarray
    shift: np.ndarray


def skew_allowance(log_signals: np.ndarray, collapse_sign: np.ndarray, reads: np.ndarray,
                   pool: int, n_docs: int, z: float) -> SkewAllowance:
    """The allowance of a band whose calibrated replicates give ``log_signals`` (R, signals)
    and read ``reads`` (see :func:`replicate_reads`) of a pool of ``pool`` documents, for
    windows of ``n_docs`` documents; ``collapse_sign``: +1 for a signal that rises toward
    collapse, -1 for one that falls; ``z``: the band's normal quantile."""
    k = log_signals.shape[1]
    gammas, shifts = np.zeros(k), np.zeros(k)
    for j in range(k):
        y = collapse_sign[j] * log_signals[:, j]
        ok = np.isfinite(y)
        if ok.sum() < 3:
            continue
        gammas[j] = document_skew(y[ok], reads[ok], pool)[0]
        shifts[j] = edgeworth_shift(max(gammas[j], 0.0), n_docs, n_docs / pool, z)
    return SkewAllowance(gammas, shifts)


def skew_estimable(replicates: int, n_docs: int, pool: int) -> bool:
    """Whether an average document is read by at least SKEW_MIN_READS replicates."""
    return pool > 0 and replicates * n_docs / pool >= SKEW_MIN_READS


def _reads(sample_docs: np.ndarray | int | None) -> np.ndarray | None:
    """``sample_docs`` as a per-column array (inf: the column reads every document)."""
    if sample_docs is None:
        return None
    if np.ndim(sample_docs) == 0:
        out = np.full(len(REGISTRY), np.inf)
        out[SUBSAMPLE_COLUMNS] = sample_docs
        return out
    return np.asarray(sample_docs, dtype=np.float64)


# ------------------------------------------------------------------ interpolation
#
# A band at a window size between two stored ones (a reference built with a grid of band
# sizes, e.g. `collapsewatch reference build --band-sizes`) is interpolated instead of
# computed: ~10 ms instead of seconds. Each column is a location-scale transform of the
# larger stored band's replicates (so the replicates keep their joint structure across
# metrics, which the signal quantiles read) to a mean and spread interpolated between the
# two stored bands, linearly in log size (log mean and log sd where positive: the type
# counts and their spreads follow power laws in the window's size, Heaps 1978). The spread
# is interpolated as a fresh window's spread, sd / sqrt(1 - share) (the finite population
# correction of the notes above), and turned back into a replicate spread at the target's
# share. "docs" columns are interpolated in documents, "budget" columns in budget tokens;
# a budget column at a stored budget is that band's, exactly in distribution (a
# replicate's budget view does not depend on its document count).
#
# Measured by benchmarks/bands.py (fresh fortunes windows beyond the 1% collapse-side
# bound, 12 references x 30 windows x 3 signals per size; docs/early-warning.md,
# "Interpolated bands"): on the default grid 100/200/500/1,000/2,000, at 141 / 316 / 707 /
# 1,414 documents, interpolated 1.0% / 0.5% / 1.4% / 0.6%, computed 0.6% / 0.7% / 1.4% / 0.8%.

# stored sizes further apart than this are not interpolated between (measured at 2x, and
# at 2.5x, the default grid's widest step)
GRID_RATIO_LIMIT = 2.5


def _bracket(values: list[int], x: int, limit: float) -> tuple[int, int] | None:
    below = [v for v in values if v <= x]
    above = [v for v in values if v >= x]
    if not below or not above:
        return None
    lo, hi = max(below), min(above)
    return (lo, hi) if hi <= lo * limit else None


def _moments(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        return np.nanmean(matrix, axis=0), np.nanstd(matrix, axis=0, ddof=1)


def _lumpy(matrix: np.ndarray, share: float = 0.5) -> np.ndarray:
    """Columns where at least ``share`` of the replicates take one value."""
    return _modes(matrix, share)[0]


def _modes(matrix: np.ndarray, share: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(columns where at least ``share`` of the replicates take one value, that value;
    NaN for the other columns)."""
    lumpy = np.zeros(matrix.shape[1], dtype=bool)
    mode = np.full(matrix.shape[1], np.nan)
    for j in range(matrix.shape[1]):
        col = matrix[:, j]
        col = col[~np.isnan(col)]
        if len(col):
            values, counts = np.unique(col, return_counts=True)
            top = int(np.argmax(counts))
            if counts[top] >= share * len(col):
                lumpy[j], mode[j] = True, values[top]
    return lumpy, mode


def _moved(base: np.ndarray, base_mean: np.ndarray, base_sd: np.ndarray, mean: np.ndarray,
           sd: np.ndarray) -> np.ndarray:
    """``base``'s replicates, each column moved (location-scale) to ``mean`` and ``sd``;
    a column without spread keeps its deviations."""
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(base_sd > 0, sd / base_sd, 1.0)
    return mean + (base - base_mean) * scale


def _log_interp(t: float, y1: np.ndarray, y2: np.ndarray) -> np.ndarray:
    """Between y1 (t = 0) and y2 (t = 1): geometric where both are positive, else linear."""
    positive = (y1 > 0) & (y2 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        geometric = np.exp((1 - t) * np.log(np.where(positive, y1, 1.0))
                           + t * np.log(np.where(positive, y2, 1.0)))
    return np.where(positive, geometric, (1 - t) * y1 + t * y2)


def _target_moments(bands: dict[int, np.ndarray], lo: int, hi: int, x: int, pool: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and replicate sd at size ``x`` from the bands at sizes ``lo`` <= x <= ``hi``
    drawn from a pool of ``pool`` units (documents or tokens)."""
    m1, s1 = _moments(bands[lo])
    if lo == hi:
        return m1, s1
    m2, s2 = _moments(bands[hi])
    t = (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))
    fresh = _log_interp(t, s1 / math.sqrt(1 - lo / pool), s2 / math.sqrt(1 - hi / pool))
    return _log_interp(t, m1, m2), fresh * math.sqrt(1 - x / pool)


def interpolate(stored: dict[tuple[int, int], np.ndarray], n_docs: int, budget: int,
                pool_docs: int, pool_tokens: int,
                sample_docs: np.ndarray | int | None = None,
                ) -> tuple[np.ndarray, list[tuple[int, int]]] | None:
    """A (replicates, metrics) band for ``n_docs`` documents and ``budget`` tokens from
    ``stored`` bands ((documents, budget) -> matrix), and the keys it was made from; None
    when the stored sizes or budgets do not bracket the window within
    ``GRID_RATIO_LIMIT`` or the window is not smaller than the pool (see the notes
    above). The subsampled (semantic) columns are interpolated in min(documents,
    ``sample_docs``): between two stored sizes both at least the sample they are the
    larger band's own, exactly in distribution."""
    if not stored or n_docs >= pool_docs or budget >= pool_tokens:
        return None
    # one band per document count and per budget (of several, the largest key)
    doc_keys = {n: (n, b) for n, b in sorted(stored)}
    budget_keys = {b: (n, b) for n, b in sorted(stored)}
    by_docs = {n: stored[k] for n, k in doc_keys.items()}
    by_budget = {b: stored[k] for b, k in budget_keys.items()}
    docs = _bracket(list(by_docs), n_docs, GRID_RATIO_LIMIT)
    # stored budgets are snapped down to the 2^(1/8) grid, so two of them may be up to one
    # grid step further apart than their document counts
    budgets = _bracket(list(by_budget), budget, GRID_RATIO_LIMIT * 2 ** (1 / _GRID_STEPS))
    if docs is None or budgets is None or docs[1] >= pool_docs or budgets[1] >= pool_tokens:
        return None
    lumpy_of: dict[int, np.ndarray] = {}  # by id: the docs and budget axes share bands

    def lumpy(matrix: np.ndarray) -> np.ndarray:
        if id(matrix) not in lumpy_of:
            lumpy_of[id(matrix)] = _lumpy(matrix)
        return lumpy_of[id(matrix)]

    if budgets[0] != budgets[1] and (lumpy(by_budget[budgets[0]])
                                     | lumpy(by_budget[budgets[1]]))[BUDGET_COLUMNS].any():
        # a budget column mostly at one value: at a few tokens per document (a top n-gram
        # share saturates at 1 and falls as the budget grows), neither stored band's
        # values err wide, and there is no location and scale to move; computed instead
        return None
    base = by_docs[docs[1]]
    base_mean, base_sd = _moments(base)
    out = base.copy()
    doc_columns, sampled = DOC_COLUMNS, []
    reads = _reads(sample_docs)
    if reads is not None:
        # the subsampled columns move in the documents they read (per sample size); when
        # both stored bands read the whole sample they stay the larger band's own, as
        # copied above
        sub = np.flatnonzero(np.isfinite(reads))
        doc_columns = np.setdiff1d(DOC_COLUMNS, sub)
        for size in np.unique(reads[sub]):
            lo, hi = (min(n, int(size)) for n in docs)
            if lo != hi:
                sampled.append((sub[reads[sub] == size], {lo: by_docs[docs[0]], hi: base},
                                (lo, hi), min(n_docs, int(size)), pool_docs))
    moves = [(doc_columns, by_docs, docs, n_docs, pool_docs),
             (BUDGET_COLUMNS, by_budget, budgets, budget, pool_tokens), *sampled]
    for columns, bands, (a, b), x, pool in moves:
        # each column moves from the larger stored band of its own axis: the larger size
        # for "docs" columns (``base``), the larger budget for "budget" columns (the same
        # band unless the window's budget is off its size's, e.g. short documents at the
        # grid's smallest size, whose budgets are stored a ladder below its own)
        src = bands[b]
        cols = np.asarray(columns)
        if a == b:
            # one stored band on this axis: its target moments are its own, so the move
            # is the identity; copied, not recomputed (mean + (x - mean)·1 can differ from x
            # in the last bit, and the "docs" columns are the size's own)
            out[:, cols] = src[:, cols]
            continue
        src_mean, src_sd = (base_mean, base_sd) if src is base else _moments(src)
        moved = _moved(src, src_mean, src_sd, *_target_moments(bands, a, b, x, pool))
        # a column mostly at one value (duplicate rates: most replicates have none) has no
        # location and scale to move: the larger stored size's values are kept, which are
        # if anything more spread (more documents, more chances of a duplicate), so the
        # band errs wide
        keep = lumpy(bands[a]) | lumpy(bands[b])
        out[:, cols] = np.where(keep[cols], src[:, cols], moved[:, cols])
    used = sorted({*(doc_keys[n] for n in docs), *(budget_keys[b] for b in budgets)})
    return out, used


# ------------------------------------------------------------------ above the grid
#
# A window larger than every stored band (e.g. 32,000 documents against a grid that ends at
# 2,000) has nothing to be interpolated from, and a full band there costs 200 replicates of
# the window's size: ~60 s at 32,000 fortunes, ~25x the window's own scoring. Such a band
# is *extended* from the largest stored one instead: its replicates keep their joint
# structure and each column's shape, and are moved (location-scale, as in interpolation)
# to the mean and spread of only ``MOMENT_REPLICATES`` replicates computed at the window's
# own size. A mean and a standard deviation need far fewer replicates than a 1% quantile:
# the sd of 50 normal replicates is within ~10% of the truth (relative standard error
# 1/sqrt(2(r - 1)), e.g. Ahn & Fessler 2003), about what the 1% order statistic of 200
# replicates achieves, whose coverage has sd ~0.7% around 1% (Beta(2, 199)). The shape is
# the stored band's: the "docs" columns are per-document averages and medians, whose
# skewness shrinks as 1/sqrt(n), so the shape at >= EXTEND_MIN_DOCS documents is at least
# as wide in the tails as the target's. Columns that need no computing are taken as they
# are: the budget columns from a stored band at the same budget (the token budget is
# capped, so every large window shares one; exact in distribution, see interpolate), the
# subsampled (semantic) columns when the stored band already reads the whole sample.
# Columns mostly at one value (duplicate rates) have no location and scale: the computed
# replicates themselves, repeated, stand for them. benchmarks/bands.py, with sizes above its
# --grid, measures the false-alarm rate of extended bands against computed ones.

MOMENT_REPLICATES = 50
EXTEND_MIN_DOCS = 1_000


@dataclass(frozen=True)
class Extended:
    """How an extended band was made: the stored band it extends and the replicates
    computed at the window's size (Score JSON: calibration.extended_from)."""

    base: tuple[int, int]
    replicates: int
    sources: tuple[tuple[int, int], ...] = ()  # stored bands whose columns were taken


def extension_plan(stored: dict[tuple[int, int], np.ndarray], n_docs: int, budget: int,
                   sample_docs: np.ndarray | int | None = None
                   ) -> tuple[tuple[int, int], np.ndarray, dict[int, tuple[int, int]]] | None:
    """For a window above every stored document count: (the base band's key, the registry
    columns to compute at the window's size, {column: stored key whose column is taken
    as it is}); None when the window is not above the stored sizes or the largest is
    below ``EXTEND_MIN_DOCS``."""
    if not stored or max(n for n, _ in stored) >= n_docs:
        return None
    base = max(stored)  # the largest document count (of several, the largest budget)
    if base[0] < EXTEND_MIN_DOCS:
        return None
    taken: dict[int, tuple[int, int]] = {}
    same_budget = [k for k in stored if k[1] == budget]
    if same_budget:
        for j in BUDGET_COLUMNS:
            taken[int(j)] = max(same_budget)
    reads = _reads(sample_docs)
    if reads is not None:
        for j in np.flatnonzero(np.isfinite(reads)):
            if min(base[0], reads[j]) == min(n_docs, reads[j]):
                taken[int(j)] = base
    compute = np.array([j for j in range(len(REGISTRY)) if j not in taken], dtype=np.intp)
    return base, compute, taken


def extend(stored: dict[tuple[int, int], np.ndarray], base: tuple[int, int],
           computed: np.ndarray, compute: np.ndarray, taken: dict[int, tuple[int, int]]
           ) -> np.ndarray:
    """The extended band (see the notes above): ``stored[base]``'s replicates, the
    ``compute`` columns moved to the mean and sd of ``computed`` (replicates at the
    window's size), the ``taken`` columns moved to their stored band's (for a column of
    the base itself: unchanged)."""
    matrix = stored[base]
    rows = len(matrix)
    base_mean, base_sd = _moments(matrix)
    base_lumpy = _lumpy(matrix)
    out = matrix.copy()
    targets = [(np.asarray(compute, dtype=np.intp), computed)]
    for key in sorted(set(taken.values())):
        targets.append((np.array([j for j, k in taken.items() if k == key], dtype=np.intp),
                        stored[key]))
    for cols, source in targets:
        if not len(cols) or source is matrix:
            continue
        lumpy = base_lumpy | _lumpy(source)
        moved = _moved(matrix, base_mean, base_sd, *_moments(source))
        for j in cols:
            out[:, j] = np.resize(source[:, j], rows) if lumpy[j] else moved[:, j]
    return out
