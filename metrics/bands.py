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
    if workers <= 1:
        rows = [replicate(r) for r in range(replicates)]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool_exec:
            rows = list(pool_exec.map(replicate, range(replicates)))
    if not rows:
        return np.full((0, len(REGISTRY)), np.nan)
    return np.vstack(rows)


def summarise(matrix: np.ndarray, low: float, high: float) -> dict[str, np.ndarray]:
    """Per-metric mean, low and high quantile over replicates (NaN where never defined)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, on purpose
        return {
            "mean": np.nanmean(matrix, axis=0),
            "low": np.nanquantile(matrix, low, axis=0),
            "high": np.nanquantile(matrix, high, axis=0),
        }
