"""Building frozen profiles: a human reference, or a model baseline against a reference."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from metrics.bands import GRID_RATIO_LIMIT, band_matrix, snap_budget
from metrics.config import ReferenceConfig, ScoreConfig
from metrics.embedding import Embedder, shared_embedder
from metrics.errors import ProfileError, ReferenceTooSmall
from metrics.lm import ReferenceModel
from metrics.profile import Profile
from metrics.sample import Corpus
from metrics.semantic import build_baseline_semantic, build_semantic
from metrics.text import documents_sha256, normalize_documents, tokenize_documents

# window size at which a baseline's ratios to human are measured (capped by its size)
HUMAN_RATIO_WINDOW = 500
HUMAN_RATIO_REPLICATES = 50


def _canonical(normalized: list[str]) -> list[str]:
    """Documents in a fixed order independent of the input order (same set, same profile)."""
    return sorted(normalized)


def _check_size(kind: str, name: str, docs: list[str], minimum: int) -> None:
    if len(docs) < minimum:
        raise ReferenceTooSmall(
            f"{kind} {name!r} has {len(docs)} documents; at least {minimum} are needed to "
            f"build a human band (add documents, or lower min_documents in the config)"
        )


def default_budget(pool: Corpus, n_docs: int, cap: int | None = None) -> int:
    """Token budget a window of ``n_docs`` pool-like documents would get."""
    mean_len = pool.offsets[-1] / max(pool.n_docs, 1)
    cap = ScoreConfig().token_budget if cap is None else cap
    return snap_budget(round(float(n_docs * mean_len)), cap)


def band_grid(pool: Corpus, sizes: Sequence[int]) -> list[tuple[int, int]]:
    """(documents, budget) of the bands to precompute for window ``sizes``; a size the
    pool cannot serve (at least as many documents as it has: such a band repeats documents
    and is flagged ``too_small`` when used) is left out.

    Each size gets the budget of pool-like documents; the smallest size also gets budgets
    ``GRID_RATIO_LIMIT`` times smaller, step by step down to one token per document, so
    that a window of that size with shorter documents than the pool's (half of all
    windows of the smallest size, and a model's terse outputs) has a budget between two
    stored ones and is interpolated too. Those extra bands cost only their budget columns
    at small budgets: their "docs" columns are the size's own
    (:func:`metrics.bands.band_matrix`)."""
    keys = []
    for n in sorted({int(n) for n in sizes}):
        budget = default_budget(pool, n) if n < pool.n_docs else 0
        if budget > 0:
            keys.append((n, budget))
    if keys:
        n, budget = keys[0]
        lower = []
        while True:
            budget = snap_budget(math.floor(budget / GRID_RATIO_LIMIT), budget - 1)
            if budget < n:
                break
            lower.append((n, budget))
        keys[:0] = lower[::-1]
    return keys


def _store_bands(profile: Profile, sizes: Sequence[int], reference: Profile | None) -> None:
    """Compute and store the bands of ``sizes`` (see :func:`band_grid`)."""
    for n, budget in band_grid(profile.pool, sizes):
        profile.stored_bands[(n, budget)] = profile.band(n, budget, reference)


def _embedder_for_build(embedder: Embedder | None | str) -> Embedder | None:
    if embedder == "default":
        return shared_embedder()[0]  # not installed: the profile is built lexical-only
    return embedder


def build_reference(
    documents: Sequence[str],
    name: str,
    *,
    config: ReferenceConfig | None = None,
    embedder: Embedder | None | str = "default",
) -> Profile:
    """A frozen human reference from documents.

    The documents are split (seeded) into a *profile* part — vocabulary, tail band,
    rare bigrams, the n-gram LM — and a *calibration* part that human bands are drawn
    from. Bands for ``config.band_sizes`` are computed now and stored; others on first use.
    With an ``embedder`` ("default": the pinned model when installed; None: none), the
    calibration documents are embedded and the reference's topics found
    (:func:`metrics.semantic.build_semantic`), so the semantic metrics can be scored.
    Raises ReferenceTooSmall below ``config.min_documents`` documents or without words.
    """
    cfg = config or ReferenceConfig()
    docs = _canonical(normalize_documents(documents))
    _check_size("reference", name, docs, cfg.min_documents)
    rng = np.random.default_rng([cfg.seed, 0x5E])
    order = rng.permutation(len(docs))
    n_cal = min(max(1, math.ceil(cfg.calibration_fraction * len(docs))), len(docs) - 1)
    cal_docs = [docs[i] for i in np.sort(order[:n_cal])]
    prof_docs = [docs[i] for i in np.sort(order[n_cal:])]
    prof = Corpus.from_tokens(tokenize_documents(prof_docs, cfg.tokenizer))
    pool = Corpus.from_tokens(tokenize_documents(cal_docs, cfg.tokenizer))
    token_count = int(prof.offsets[-1] + pool.offsets[-1])
    if prof.offsets[-1] == 0 or pool.offsets[-1] == 0:
        raise ReferenceTooSmall(
            f"reference {name!r} has too few words ({token_count}) to build a profile"
        )
    model = ReferenceModel.build(prof, cfg.suite.tail_mass)
    pool_ids = pool.vocab_ids[pool.index]
    profile = Profile(
        kind="reference",
        name=name,
        sha256=documents_sha256(docs),
        document_count=len(docs),
        token_count=token_count,
        config=cfg,
        pool=pool,
        pool_doc_keys=pool.doc_keys(),
        pool_doc_nll=model.doc_nll(pool_ids, pool.offsets),
        model=model,
    )
    emb = _embedder_for_build(embedder)
    if emb is not None:
        profile.semantic = build_semantic(pool, prof, emb, cfg.seed)
        profile.use_embedder(emb)
    _store_bands(profile, cfg.band_sizes, None)
    return profile


def build_baseline(
    documents: Sequence[str],
    reference: Profile,
    name: str,
    *,
    config: ReferenceConfig | None = None,
    embedder: Embedder | None | str = "default",
) -> Profile:
    """A frozen baseline from a model's known-good outputs, measured against ``reference``.

    The documents are tokenised with the reference's tokenizer and all of them form the
    band pool (the metrics use the reference's tail band and LM, not the baseline's, so
    nothing is scored against itself). ``human_ratios`` — the baseline's signal ratios to
    the human reference at a window of min(500, documents) — are computed once and stored.
    Only min_documents, replicates, band_sizes and seed are taken from ``config``;
    without a config, the reference's replicates and seed and no stored band sizes (bands
    are computed on first use), so that building stays quick enough for a REST request.
    """
    if reference.kind != "reference":
        raise ProfileError(f"{reference.name!r} is a {reference.kind}; pass a reference profile")
    base = config or reference.config
    cfg = ReferenceConfig(
        min_documents=base.min_documents,
        calibration_fraction=reference.config.calibration_fraction,
        replicates=base.replicates,
        band_sizes=base.band_sizes if config is not None else (),
        seed=base.seed,
        tokenizer=reference.config.tokenizer,
        suite=reference.config.suite,
    )
    docs = _canonical(normalize_documents(documents))
    _check_size("baseline", name, docs, cfg.min_documents)
    pool = Corpus.from_tokens(tokenize_documents(docs, cfg.tokenizer))
    if pool.offsets[-1] == 0:
        raise ReferenceTooSmall(f"baseline {name!r} has no words")
    model = reference.model
    assert model is not None
    profile = Profile(
        kind="baseline",
        name=name,
        sha256=documents_sha256(docs),
        document_count=len(docs),
        token_count=int(pool.offsets[-1]),
        config=cfg,
        pool=pool,
        pool_doc_keys=pool.doc_keys(),
        pool_doc_nll=model.doc_nll(pool.vocab_ids[pool.index], pool.offsets),
        reference_sha256=reference.sha256,
    )
    emb = _embedder_for_build(embedder)
    ref_sem = reference.semantic
    # embedded only with the model the reference was embedded with (else nothing compares)
    if emb is not None and ref_sem is not None and emb.identity == ref_sem.identity:
        profile.semantic = build_baseline_semantic(pool, ref_sem, emb)
    _store_bands(profile, cfg.band_sizes, reference)
    profile.human_ratios = _human_ratios(profile, reference, min(HUMAN_RATIO_WINDOW, len(docs)))
    return profile


def _human_ratios(baseline: Profile, reference: Profile, n_docs: int) -> dict[str, float | None]:
    """Signal ratios of the baseline's band mean to the human band mean at one window size.

    Only band *means* are needed, and they settle with few replicates; these bands are
    not stored (scoring computes full bands for the window sizes in use).
    """
    from metrics.scoring import band_signal_ratios

    budget = default_budget(baseline.pool, n_docs)
    replicates = min(HUMAN_RATIO_REPLICATES, baseline.config.replicates)
    ctx = reference.context()
    own = band_matrix(baseline.pool, baseline.pool_doc_keys, baseline.pool_doc_nll, n_docs,
                      budget, ctx, replicates, baseline.config.seed,
                      pool_vectors=baseline.pool_vectors(reference))
    human = band_matrix(reference.pool, reference.pool_doc_keys, reference.pool_doc_nll, n_docs,
                        budget, ctx, replicates, reference.config.seed,
                        pool_vectors=reference.pool_vectors(reference))
    return band_signal_ratios(own, human, n_docs)
