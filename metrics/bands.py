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

from metrics.registry import BUDGET_COLUMNS, DOC_COLUMNS, REGISTRY, Context, compute_all, minhash_of
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

# Version of the replicate draw. 2: a replicate's random stream does not depend on the
# budget, so its document view is the same at every budget (and its budget view at a
# larger budget extends the one at a smaller budget).
BAND_DRAW = 2


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

    Replicates run on a few threads: the work is numpy sorting and arithmetic, which
    releases the GIL.
    """
    lengths = pool.lengths
    if doc_part is not None and doc_part.shape != (replicates, len(DOC_COLUMNS)):
        raise ValueError(f"doc_part has shape {doc_part.shape}, expected "
                         f"{(replicates, len(DOC_COLUMNS))}")
    columns = BUDGET_COLUMNS if doc_part is not None else None
    # MinHash signatures depend only on their own document: compute each pool document's
    # once, and let a replicate take its documents' rows
    signatures = None
    if doc_part is None and pool.n_docs and n_docs:
        signatures = minhash_of(Sample(pool, 0, pool_doc_keys), ctx)

    def replicate(r: int) -> np.ndarray:
        rng = np.random.default_rng([int(seed), int(n_docs), 0xBA5D, BAND_DRAW, r])
        order = _draw(rng, lengths, n_docs, budget)
        docs_sel = order[:n_docs]
        sample = Sample(
            docs=pool.take(docs_sel),
            budget_tokens=budget,
            doc_keys=pool_doc_keys[docs_sel],
            budget_source=pool.take(order),
        )
        if columns is None:
            nll = pool_doc_nll[docs_sel]
            sample._cache["doc_nll"] = nll[~np.isnan(nll)]
            if signatures is not None:
                sample._cache["minhash"] = signatures[docs_sel]
            # a pool without stored embeddings leaves the semantic columns undefined
            # rather than embedding every replicate
            sample._cache["embeddings"] = (
                _NO_VECTORS if pool_vectors is None else
                band_vectors(pool_vectors, lengths, docs_sel, ctx.suite.semantic_sample))
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
# metrics, which read random documents up to the token budget. The correction is exact
# for means and a first-order approximation for the type-count metrics; the calibration
# tests measure how well it holds.

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
        }


def calibrate(
    matrix: np.ndarray, pool: Corpus, n_docs: int, budget: int, what: str = "pool"
) -> Calibration:
    """Calibrate a (replicates, metrics) band for windows of ``n_docs`` documents and
    ``budget`` tokens drawn from the source of ``pool`` (see the notes above)."""
    pool_docs, pool_tokens = pool.n_docs, int(pool.offsets[-1])
    f_docs = n_docs / pool_docs if pool_docs else math.inf
    f_tokens = budget / pool_tokens if pool_tokens else math.inf
    shares = np.empty(len(REGISTRY))
    shares[DOC_COLUMNS] = f_docs
    shares[BUDGET_COLUMNS] = f_tokens
    f = np.minimum(shares, _SHARE_CAP)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        centre = np.nanmean(matrix, axis=0) if len(matrix) else np.full(len(REGISTRY), np.nan)
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
                       status, reason)
