"""Synthetic share of a window: what part of it was written by known generators.

A window W from a data stream is modelled as a mixture

    W = (1 - π - u)·H + Σ_s π_s·S_s + u·U,     π = Σ_s π_s

of human text H (the reference R), the outputs of known generators S_s (their baseline
profiles) and an "unexplained" part U of documents that fit none of them. π and the π_s are
estimated by maximum likelihood with the component densities fixed (EM, Dempster, Laird &
Rubin 1977; for fixed components the log-likelihood is concave in the weights, so EM finds
the global maximum), and the 95% interval by a bootstrap over the window's documents (Efron
& Tibshirani 1993, ch. 13, percentile interval) to which the effect of resampling the
calibration documents is added, since the components are estimated from finite samples too.
See ``docs/synthetic-share.md``.

Per document and source s the score is a likelihood ratio between two language models the
profiles already carry: the reference's bigram LM (built on its profile part) and an LM of
the same kind built from part of the source's baseline documents,

    z_s(d) = Σ_t [ -ln P_R(t | prev) + ln P_S(t | prev) ] / sqrt(n_t),

summed over the tokens t of d whose word both LMs have seen (words only one side knows
measure topic coverage, not who wrote the text) and divided by the root of their number
n_t, so short and long documents are on one scale. The densities of z under each component
are kernel density estimates over documents neither LM was built from: the reference's
calibration part for H, the held-out part of each baseline for S_s.

A stream's human text rarely comes from the reference's own sources, and the reference LM
knows its own topics better than anyone else's: fresh human text sits closer to the
synthetic side than the reference's calibration documents. With ``adapt_human`` (default)
the human density is allowed a location and scale change in score space (within
``shift_range`` / ``scale_range``), fitted by maximum likelihood together with the weights;
the source densities stay fixed. This reduces the bias on human text from other sources;
it does not remove it when their scores differ by more than a shift and a stretch
(``benchmarks/mixture.py`` and ``docs/synthetic-share.md`` give the numbers).

Cost: tokenising the window, then O(T log V) per source for the LM scores and O(N·C) per EM
iteration; the bootstrap runs its replicates as one matrix product per iteration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from threadpoolctl import threadpool_limits

from metrics.errors import MetricsError, ProfileError
from metrics.lm import ReferenceModel, _lookup
from metrics.profile import Profile
from metrics.sample import Corpus
from metrics.text import normalize_documents, tokenize_documents

# grid cells per dimension of the binned density estimate, by number of sources
_GRID = {1: 1024, 2: 160, 3: 48}
_GRID_MAX_DIMS = 16
_KEEP_RESAMPLED_BYTES = 16 << 20  # calibration resamples' densities kept up to this size
_FLOOR = 1e-300  # keeps log-likelihoods finite where every density is zero
_CELL = 0.04  # lattice step (human standard deviations) the bootstrap groups scores by


@dataclass(frozen=True)
class MixtureConfig:
    """How the synthetic share is estimated.

    calibration_fraction: share of each baseline's documents held out from its LM to
      calibrate the score density under that source (the reference's own split is used
      for the human side).
    bootstrap: replicates for the 95% interval (percentile interval).
    calibration_resamples: resamples of the calibration documents whose effect on the
      estimate is added to the window's bootstrap replicates, so the interval also carries
      the error of components estimated from a few hundred or thousand documents (0: the
      interval knows only the window's sampling noise).
    confidence: interval level.
    adapt_human: fit a location/scale change of the human score density to the window.
    shift_range: the largest location change, in standard deviations of the human scores.
    scale_range: the smallest and largest scale change.
    unexplained_spread: the unexplained component is a normal density this many times
      wider than the spread of all calibration scores: only documents far from every
      component are attributed to it.
    max_iter / tol: EM stopping rule (change of any weight below tol).
    seed: makes the source split and the bootstrap reproducible.
    semantic: add an embedding score to each source's (see "The semantic score" below);
      needs embeddings in the reference and every source, and a model to embed windows.
      Every document of a window is embedded (~2.8 s per 500 fortunes on one core).
    discriminant_shrinkage: how far the embeddings' covariance is shrunk towards its mean
      variance for the discriminant direction (Friedman 1989).
    """

    calibration_fraction: float = 0.4
    bootstrap: int = 200
    calibration_resamples: int = 20
    confidence: float = 0.95
    adapt_human: bool = True
    shift_range: float = 0.5
    scale_range: tuple[float, float] = (0.67, 1.5)
    unexplained_spread: float = 3.0
    max_iter: int = 1000
    tol: float = 1e-6
    seed: int = 0
    semantic: bool = False
    discriminant_shrinkage: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.calibration_fraction < 1.0:
            raise ValueError("calibration_fraction must be between 0 and 1")
        if self.bootstrap < 0 or not 0.0 < self.confidence < 1.0:
            raise ValueError("bootstrap must be >= 0 and confidence between 0 and 1")
        if self.calibration_resamples < 0:
            raise ValueError("calibration_resamples must be >= 0")
        if not 0.0 <= self.discriminant_shrinkage <= 1.0:
            raise ValueError("discriminant_shrinkage must be between 0 and 1")
        lo, hi = self.scale_range
        if not 0.0 < lo <= 1.0 <= hi or self.shift_range < 0:
            raise ValueError("scale_range must contain 1.0 and shift_range must be >= 0")


@dataclass(frozen=True)
class ShareResult:
    """The estimate for one window (``to_dict`` gives the CLI/REST JSON)."""

    estimate: float
    low: float
    high: float
    by_source: dict[str, dict[str, float]]
    unexplained: float
    documents: int
    posterior: np.ndarray = field(repr=False)  # P(synthetic | document), per input document
    human_shift: tuple[float, float] = (0.0, 1.0)  # fitted (location, scale) of the human scores
    scores: str = "lexical"  # "lexical" or "lexical+semantic": what the documents were scored by

    def to_dict(self) -> dict:
        return {
            "synthetic_share": {
                "estimate": round(self.estimate, 4),
                "low": round(self.low, 4),
                "high": round(self.high, 4),
                "by_source": {
                    name: {k: round(v, 4) for k, v in share.items()}
                    for name, share in self.by_source.items()
                },
                "unexplained": round(self.unexplained, 4),
                "scores": self.scores,
            },
            "documents": self.documents,
        }

    def fields(self) -> dict:
        """``synthetic_share`` of :meth:`to_dict` with ``documents`` inside: what a scored
        window stores, and what :func:`join_shares` joins."""
        out = self.to_dict()
        return {**out["synthetic_share"], "documents": out["documents"]}


@dataclass(frozen=True)
class _Source:
    name: str
    model: ReferenceModel
    calibration: Corpus
    calibration_vectors: np.ndarray | None = None  # its calibration documents' embeddings
    direction: np.ndarray | None = None  # the embedding discriminant (semantic score)
    weight: float = 0.0  # of the embedding score beside the LM score


def shrunk_discriminant(a: np.ndarray, b: np.ndarray, shrinkage: float) -> np.ndarray:
    """Fisher's linear discriminant direction from the rows of ``a`` to those of ``b``, the
    pooled within-class covariance shrunk towards its mean variance (regularised
    discriminant analysis, Friedman 1989: with a few hundred documents per class and 384
    dimensions the plain covariance is near singular)."""
    centred = np.vstack([a - a.mean(axis=0), b - b.mean(axis=0)])
    cov = np.atleast_2d(np.cov(centred.T))
    d = cov.shape[0]
    cov = (1.0 - shrinkage) * cov + shrinkage * np.trace(cov) / d * np.eye(d)
    return np.linalg.solve(cov, b.mean(axis=0) - a.mean(axis=0))


def _split_order(n_docs: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(LM part, calibration part) document indices of a baseline, seeded."""
    rng = np.random.default_rng([seed, 0x313])
    order = rng.permutation(n_docs)
    n_cal = min(max(1, round(fraction * n_docs)), n_docs - 1)
    return np.sort(order[n_cal:]), np.sort(order[:n_cal])


def _binned_density(points: np.ndarray, lo: np.ndarray, step: np.ndarray, shape: tuple) -> np.ndarray:
    """Gaussian KDE of ``points`` on a regular grid (binned, then smoothed; Scott's rule).

    Binning first (Wand & Jones 1995, §D.2) makes the cost O(points + cells), so the density
    can be read at many transformed positions for the price of an interpolation.
    """
    n, d = points.shape
    cells = np.clip(np.rint((points - lo) / step).astype(np.int64), 0, np.array(shape) - 1)
    hist = np.zeros(shape)
    np.add.at(hist, tuple(cells.T), 1.0)
    # Scott (1992): h_j = σ_j n^(-1/(d+4)); a floor keeps a degenerate dimension smooth
    sigma = np.maximum(points.std(axis=0), 1e-3) * n ** (-1.0 / (d + 4))
    dens = ndimage.gaussian_filter(hist, sigma=sigma / step, mode="constant", truncate=5.0)
    return dens / (n * np.prod(step))


class MixtureModel:
    """Frozen components for one reference and its known sources; estimates windows.

    Building costs one bigram LM per source plus scoring the calibration documents
    (well under a second for baselines of a few thousand documents); keep the object
    to estimate many windows.
    """

    def __init__(
        self, reference: Profile, sources: Sequence[Profile], config: MixtureConfig | None = None
    ) -> None:
        if reference.kind != "reference" or reference.model is None:
            raise ProfileError(f"{reference.name!r} is a {reference.kind}; pass a reference profile")
        if not sources:
            raise MetricsError("at least one source (a baseline profile) is needed")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise MetricsError(f"source names must be distinct, got {names}")
        self.config = cfg = config or MixtureConfig()
        self.reference = reference
        self._embedder = None
        if cfg.semantic:
            self._embedder = self._semantic_embedder(reference, sources)
        self._sources: list[_Source] = []
        for src in sources:
            if src.kind != "baseline":
                raise ProfileError(f"source {src.name!r} is a {src.kind}; pass baseline profiles")
            if src.reference_sha256 != reference.sha256:
                raise ProfileError(
                    f"source {src.name!r} was built against another reference "
                    f"(sha256 {str(src.reference_sha256)[:12]}…, this one {reference.sha256[:12]}…); "
                    f"rebuild it with this reference"
                )
            lm_idx, cal_idx = _split_order(src.pool.n_docs, cfg.calibration_fraction, cfg.seed)
            part, cal = src.pool.take(lm_idx), src.pool.take(cal_idx)
            model = ReferenceModel.build(part, reference.config.suite.tail_mass)
            source = _Source(src.name, model, cal)
            if self._embedder is not None:
                source = self._with_discriminant(source, reference, src, lm_idx, cal_idx)
            self._sources.append(source)
        human = self.scores(reference.pool,
                            None if self._embedder is None else self._pool_vectors(reference))
        cal_scores = [self.scores(s.calibration, s.calibration_vectors) for s in self._sources]
        keep = reference.pool.lengths > 0
        human = human[keep]
        cal_scores = [c[s.calibration.lengths > 0] for c, s in zip(cal_scores, self._sources)]
        # score space is standardised on the human calibration scores
        self._center = human.mean(axis=0)
        self._scale = np.maximum(human.std(axis=0), 1e-9)
        std = [(c - self._center) / self._scale for c in [human, *cal_scores]]
        every = np.concatenate(std)
        d = every.shape[1]
        self._dims = d
        if d > _GRID_MAX_DIMS:
            raise MetricsError(f"at most {_GRID_MAX_DIMS} sources at once")
        cells = _GRID.get(d, max(8, round(200_000 ** (1 / d))))
        span = every.max(axis=0) - every.min(axis=0)
        margin = 0.25 * span + 1.0
        self._lo = every.min(axis=0) - margin
        hi = every.max(axis=0) + margin
        self._shape = (cells,) * d
        self._step = (hi - self._lo) / (cells - 1)
        self._calibration = std  # standardised calibration scores: human, then each source
        self._grids = [_binned_density(c, self._lo, self._step, self._shape) for c in std]
        self._resampled: list[list[np.ndarray]] | None = None  # _resampled_grids
        # the unexplained component: one broad normal over the whole score space
        self._u_mean = every.mean(axis=0)
        self._u_sd = cfg.unexplained_spread * np.maximum(every.std(axis=0), 1e-3)
        self.calibration_sizes = {"human": len(human)} | {
            s.name: len(c) for s, c in zip(self._sources, cal_scores)
        }

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self._sources]

    @property
    def discriminants(self) -> list[tuple[np.ndarray | None, float]]:
        """Per source, the embedding discriminant w_s and its weight a_s (None, 0.0 without
        the semantic score)."""
        return [(s.direction, s.weight) for s in self._sources]

    @property
    def score_kind(self) -> str:
        """"lexical+semantic" when documents get the embedding score too, else "lexical"."""
        return "lexical" if self._embedder is None else "lexical+semantic"

    # ------------------------------------------------------------------ semantic score
    #
    # The semantic score. The LM ratio sees which words follow which; a window's documents
    # also carry meaning that a word bigram does not, and the two disagree often enough to
    # add up (benchmarks/mixture.py --separation: one document's AUC 0.86-0.88 from the LM
    # ratio, 0.85-0.89 from the embeddings, 0.90-0.93 from both, on three splits). Per
    # source, e_s(d) = w_s·v(d) for the document's unit embedding v(d), with w_s Fisher's
    # discriminant (shrunk) between the reference's profile-part embeddings and the
    # embeddings of the source's LM part: the documents the two LMs were built from, so
    # the calibration documents stay unseen by every part of the score. The score is then
    # z_s + a_s·e_s, with a_s the weight a two-dimensional discriminant puts on e_s
    # against z_s on the calibration documents (one number per source, fitted on the same
    # documents the densities are estimated from; the densities carry the rest).

    @staticmethod
    def _semantic_embedder(reference: Profile, sources: Sequence[Profile]):
        ref = reference.semantic
        if ref is None or ref.ref is None:
            raise MetricsError("the semantic score needs a reference built with embeddings")
        for src in sources:
            sem = src.semantic
            if sem is None or sem.identity != ref.identity or len(sem.pool) != src.pool.n_docs:
                raise MetricsError(f"the semantic score needs source {src.name!r} built with "
                                   f"embeddings of the reference's model")
        embedder = reference.context().semantic.embedder
        if embedder is None:
            reason = reference.context().semantic_unavailable or "no embedding model"
            raise MetricsError(f"the semantic score needs an embedding model: {reason}")
        return embedder

    @staticmethod
    def _pool_vectors(profile: Profile) -> np.ndarray | None:
        sem = profile.semantic
        return None if sem is None else sem.pool.astype(np.float64)

    def _with_discriminant(self, source: _Source, reference: Profile, src: Profile,
                           lm_idx: np.ndarray, cal_idx: np.ndarray) -> _Source:
        vectors = src.semantic.pool.astype(np.float64)
        lm = vectors[lm_idx][src.pool.lengths[lm_idx] > 0]
        direction = shrunk_discriminant(reference.semantic.ref.astype(np.float64), lm,
                                        self.config.discriminant_shrinkage)
        cal_vectors = vectors[cal_idx]
        lexical = _Source(source.name, source.model, source.calibration)
        keep_h = reference.pool.lengths > 0
        keep_s = source.calibration.lengths > 0
        human = np.column_stack([
            self._lexical_scores(reference.pool, [lexical])[keep_h, 0],
            (self._pool_vectors(reference) @ direction)[keep_h]])
        synthetic = np.column_stack([
            self._lexical_scores(source.calibration, [lexical])[keep_s, 0],
            (cal_vectors @ direction)[keep_s]])
        both = shrunk_discriminant(human, synthetic, 0.0)
        weight = float(both[1] / both[0]) if both[0] > 0 else 0.0
        if not np.isfinite(weight) or weight < 0:
            weight = 0.0
        return _Source(source.name, source.model, source.calibration, cal_vectors, direction,
                       weight)

    # ------------------------------------------------------------------ scores

    def corpus(self, documents: Sequence[str]) -> Corpus:
        """Documents tokenised the reference's way."""
        tok = self.reference.config.tokenizer
        return Corpus.from_tokens(tokenize_documents(normalize_documents(documents), tok))

    def scores(self, corpus: Corpus, vectors: np.ndarray | None = None) -> np.ndarray:
        """(documents, sources) scores: the likelihood ratios z_s (0 for a document with no
        word both LMs know: no evidence either way), plus a_s·e_s with the semantic score
        (``vectors``: the documents' unit embeddings, row per document; embedded here when
        not given). O(T log V) per source, plus embedding."""
        out = self._lexical_scores(corpus, self._sources)
        if self._embedder is not None:
            if vectors is None:
                from metrics.semantic import embed_corpus

                vectors = embed_corpus(corpus, self._embedder)
            for j, src in enumerate(self._sources):
                if src.direction is not None:
                    out[:, j] += src.weight * (np.asarray(vectors, np.float64) @ src.direction)
        return out

    def _lexical_scores(self, corpus: Corpus, sources: Sequence[_Source]) -> np.ndarray:
        ref = self.reference.model
        assert ref is not None
        ids = corpus.vocab_ids[corpus.index]
        lengths = corpus.lengths
        doc_of = np.repeat(np.arange(corpus.n_docs), lengths)
        nlp_r = ref.token_neglogprob(ids, corpus.offsets)
        in_r = _lookup(ref.uni_ids, ref.uni_counts, ids) > 0
        out = np.zeros((corpus.n_docs, len(sources)))
        for j, src in enumerate(sources):
            nlp_s = src.model.token_neglogprob(ids, corpus.offsets)
            both = in_r & (_lookup(src.model.uni_ids, src.model.uni_counts, ids) > 0)
            total = np.bincount(doc_of, weights=np.where(both, nlp_r - nlp_s, 0.0),
                                minlength=corpus.n_docs)
            count = np.bincount(doc_of, weights=both.astype(np.float64), minlength=corpus.n_docs)
            out[:, j] = total / np.sqrt(np.maximum(count, 1.0))
        return out

    # ------------------------------------------------------------------ densities

    def _read(self, grid: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Density on ``grid`` at standardised points ``u`` (linear interpolation; 0 off-grid)."""
        coords = ((u - self._lo) / self._step).T
        return ndimage.map_coordinates(grid, coords, order=1, mode="constant", cval=0.0)

    def _human(self, u: np.ndarray, shift: float, scale: float,
               grids: Sequence[np.ndarray] | None = None) -> np.ndarray:
        # density of the location/scale-changed human scores: f((u - μ)/σ) / σ^d
        grid = (grids or self._grids)[0]
        return self._read(grid, (u - shift) / scale) / scale**self._dims

    def _fixed(self, u: np.ndarray, grids: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """(N, sources + 1) densities of the sources and the unexplained component."""
        cols = [self._read(g, u) for g in (grids or self._grids)[1:]]
        z = (u - self._u_mean) / self._u_sd
        unexplained = np.exp(-0.5 * (z**2).sum(axis=1)) / np.prod(self._u_sd * np.sqrt(2 * np.pi))
        return np.column_stack([*cols, unexplained])

    # ------------------------------------------------------------------ estimation

    def estimate(self, documents: Sequence[str] | Corpus,
                 vectors: np.ndarray | None = None) -> ShareResult:
        """Synthetic share of a window with its interval, per-source shares, the
        unexplained share and every document's posterior probability of being synthetic.
        ``vectors``: the documents' embeddings when the caller has them (the semantic
        score; a row per document), else they are embedded here."""
        corpus = documents if isinstance(documents, Corpus) else self.corpus(documents)
        if corpus.n_docs == 0:
            raise MetricsError("the window has no documents")
        if vectors is not None and len(vectors) != corpus.n_docs:
            raise MetricsError(f"{len(vectors)} embeddings for {corpus.n_docs} documents")
        return self.estimate_scores(self.scores(corpus, vectors))

    def estimate_scores(self, scores: np.ndarray) -> ShareResult:
        """As :meth:`estimate`, from :meth:`scores` of the window's documents."""
        # the fit and the bootstrap run thousands of small matrix products; a multithreaded
        # BLAS spends more waking and spinning its threads than working on them (4 to 20
        # times the single-thread CPU time on a busy machine, benchmarks/stream.py)
        with threadpool_limits(limits=1, user_api="blas"):
            return self._estimate_scores(scores)

    def _estimate_scores(self, scores: np.ndarray) -> ShareResult:
        u = (np.asarray(scores, dtype=np.float64) - self._center) / self._scale
        n = len(u)
        if n == 0:
            raise MetricsError("the window has no documents")
        fixed = self._fixed(u)
        weights, shift, scale = self._fit(u, fixed)
        k = len(self._sources)
        joint = (np.column_stack([self._human(u, shift, scale), fixed]) + _FLOOR) * weights
        post = joint / joint.sum(axis=1, keepdims=True)
        low, high, src_ci = self._bootstrap(u, weights, shift, scale)
        point = float(weights[1 : 1 + k].sum())
        # a percentile interval can miss its own point estimate when the estimate sits on
        # the boundary (π = 0); widened to contain it, so low <= estimate <= high always
        by_source = {
            s.name: {"estimate": float(weights[1 + j]),
                     "low": min(src_ci[0][j], float(weights[1 + j])),
                     "high": max(src_ci[1][j], float(weights[1 + j]))}
            for j, s in enumerate(self._sources)
        }
        return ShareResult(
            estimate=point,
            low=min(low, point),
            high=max(high, point),
            by_source=by_source,
            unexplained=float(weights[-1]),
            documents=n,
            posterior=post[:, 1 : 1 + k].sum(axis=1),
            human_shift=(float(shift), float(scale)),
            scores=self.score_kind,
        )

    def _fit(self, u: np.ndarray, fixed: np.ndarray) -> tuple[np.ndarray, float, float]:
        """(weights, location, scale) maximising the likelihood: the weights by EM for each
        (location, scale) of the human density, those by a grid over the allowed ranges
        refined three times around the best point (the profile likelihood is smooth in
        them, but not concave, so a local search alone could stop early). The candidates of
        a round are fitted together, one row each."""
        cfg = self.config
        rest = fixed + _FLOOR

        def fit(cands: list[tuple[float, float]], start: np.ndarray | None):
            dens = _HumanPerRow(np.stack([self._human(u, *c) for c in cands]) + _FLOOR, rest)
            w = _em(dens, np.ones((len(cands), len(u))), cfg.max_iter, cfg.tol, start=start)
            ll = np.log(_mix(w, dens)).sum(axis=1)
            i = int(np.argmax(ll))  # the first of equals, as a point-by-point search keeps
            return float(ll[i]), w[i], cands[i]

        if not cfg.adapt_human:
            return fit([(0.0, 1.0)], None)[1], 0.0, 1.0
        best = fit(self._grid(), None)
        steps = self._steps()
        for _ in range(3):
            steps = (steps[0] / 2.0, steps[1] ** 0.5)
            round_best = fit(self._around(best[2], steps, 1), best[1])
            if round_best[0] > best[0]:
                best = round_best
        return best[1], best[2][0], best[2][1]

    def _grid(self) -> list[tuple[float, float]]:
        cfg = self.config
        lo, hi = cfg.scale_range
        shifts = np.linspace(-cfg.shift_range, cfg.shift_range, 11)
        scales = np.unique(np.r_[np.geomspace(lo, hi, 7), 1.0])
        return [(float(a), float(b)) for a in shifts for b in scales]

    def _steps(self) -> tuple[float, float]:
        """Grid steps: additive for the location, multiplicative for the scale."""
        cfg = self.config
        lo, hi = cfg.scale_range
        return cfg.shift_range / 5.0, (hi / lo) ** (1.0 / 6.0) if hi > lo else 1.0

    def _around(self, centre: tuple[float, float], steps: tuple[float, float], reach: int):
        cfg = self.config
        lo, hi = cfg.scale_range
        out = {
            (float(np.clip(centre[0] + a * steps[0], -cfg.shift_range, cfg.shift_range)),
             float(np.clip(centre[1] * steps[1] ** b, lo, hi)))
            for a in range(-reach, reach + 1) for b in range(-reach, reach + 1)
        }
        return sorted(out)

    def _bootstrap(self, u: np.ndarray, weights: np.ndarray, shift: float, scale: float):
        """Percentile interval of π and of each π_s over document resamples; each replicate
        refits the human location/scale among the neighbours of the full-window fit.

        Documents whose standardised scores fall in one cell of a fine lattice (a fifth of a
        typical kernel bandwidth) share their densities, so a replicate is a multinomial
        draw over occupied cells: the same resampling as over documents, at a fraction of
        the cost.
        """
        cfg = self.config
        k = len(self._sources)
        if cfg.bootstrap == 0:
            point = float(weights[1 : 1 + k].sum())
            per = [float(w) for w in weights[1 : 1 + k]]
            return point, point, (per, per)
        centers, occupancy, counts = self._resamples(u)
        fixed = self._fixed(centers)
        if cfg.adapt_human:
            best_w = self._replicate_fits(centers, fixed, counts, weights, shift, scale)
        else:
            dens = np.column_stack([self._human(centers, 0.0, 1.0), fixed]) + _FLOOR
            best_w = _em(dens, counts, 300, 1e-5, start=weights)
        if cfg.calibration_resamples:
            # the components are estimates too: add the change a calibration resample makes
            # to the full window's fit (first order, the two errors are independent and add;
            # at the fitted human location/scale: refitting those per resample cost 4 times
            # as much with two sources, beyond the 1 s budget, benchmarks/stream.py)
            deltas = self._calibration_deltas(centers, occupancy, weights, [(shift, scale)])
            best_w = best_w + deltas[np.arange(cfg.bootstrap) % len(deltas)]
            best_w = np.clip(best_w, 0.0, 1.0)
        alpha = (1.0 - cfg.confidence) / 2.0
        qs = [alpha, 1.0 - alpha]
        total = np.quantile(np.clip(best_w[:, 1 : 1 + k].sum(axis=1), 0.0, 1.0), qs)
        per = np.quantile(best_w[:, 1 : 1 + k], qs, axis=0)
        return float(total[0]), float(total[1]), (per[0].tolist(), per[1].tolist())

    def _resamples(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cell centres, the window's count per cell, each replicate's count per cell)."""
        cfg = self.config
        n = len(u)
        cells, inverse = np.unique(np.rint(u / _CELL), axis=0, return_inverse=True)
        occupancy = np.bincount(inverse.ravel(), minlength=len(cells)).astype(np.float64)
        rng = np.random.default_rng([cfg.seed, n, 0xB007])
        counts = rng.multinomial(n, occupancy / n, size=cfg.bootstrap).astype(np.float64)
        return cells * _CELL, occupancy, counts

    def _replicate_fits(self, centers: np.ndarray, fixed: np.ndarray, counts: np.ndarray,
                        weights: np.ndarray, shift: float, scale: float) -> np.ndarray:
        """(replicates, components) weights of each replicate at its own best human
        location/scale on the 5 x 5 lattice around the full window's (half the fit's grid
        steps, up to two either way).

        Two cheaper bootstraps tried narrowed the intervals: 3 x 3 candidates over the same
        range, and single-precision fits (EM's steps drop under float32's resolution before
        it converges, so replicates stop near their common start): on the benchmark's
        hardest split the embedding score's intervals covered 26 and 24 of 30 windows,
        against 27 or more here (tests/metrics/test_mixture.py). The lattice is searched by
        steepest ascent instead of point by point: every replicate is fitted at the inner
        3 x 3, then at the unvisited neighbours of its best point until that point is its
        best among its neighbours. Most replicates stay next to the full window's fit, so a
        replicate costs about 10 fits instead of 25; the result is the exhaustive search's
        wherever a replicate's likelihood has one peak on the lattice (checked against it
        in tests/metrics/test_mixture.py)."""
        cfg = self.config
        s0, s1 = self._steps()
        s0, s1 = s0 / 2.0, s1 ** 0.5
        lo, hi = cfg.scale_range
        reach = 2
        side = 2 * reach + 1
        n_rep = len(counts)
        every = np.arange(n_rep)
        seen = np.zeros((n_rep, side, side), dtype=bool)
        best_ll = np.full(n_rep, -np.inf)
        best_w = np.zeros((n_rep, weights.size))
        best_at = np.zeros((n_rep, 2), dtype=np.int64)  # lattice offsets of each best
        todo = {(a, b): every for a in (-1, 0, 1) for b in (-1, 0, 1)}
        while todo:
            for (a, b), rows in sorted(todo.items()):
                cand = (float(np.clip(shift + a * s0, -cfg.shift_range, cfg.shift_range)),
                        float(np.clip(scale * s1 ** b, lo, hi)))
                dens = np.column_stack([self._human(centers, *cand), fixed]) + _FLOOR
                w = _em(dens, counts[rows], 300, 1e-5, start=weights)
                ll = (counts[rows] * np.log(w @ dens.T)).sum(axis=1)
                seen[rows, a + reach, b + reach] = True
                better = ll > best_ll[rows]
                up = rows[better]
                best_ll[up], best_w[up], best_at[up] = ll[better], w[better], (a, b)
            todo = {}
            for a in range(-reach, reach + 1):
                for b in range(-reach, reach + 1):
                    near = (np.abs(best_at[:, 0] - a) <= 1) & (np.abs(best_at[:, 1] - b) <= 1)
                    rows = every[near & ~seen[:, a + reach, b + reach]]
                    if len(rows):
                        todo[(a, b)] = rows
        return best_w

    def _calibration_deltas(self, centers: np.ndarray, occupancy: np.ndarray,
                            weights: np.ndarray, candidates) -> np.ndarray:
        """(resamples, components) change of the window's fitted weights when every
        component's density is rebuilt from a resample (with replacement) of its own
        calibration documents (the bootstrap of Efron & Tibshirani 1993, ch. 6, applied to
        the calibration samples); the human location/scale is the best of ``candidates``."""
        grids = self._resampled_grids()
        counts = np.tile(occupancy, (len(grids), 1))
        best_ll = np.full(len(grids), -np.inf)
        best_w = np.zeros((len(grids), weights.size))
        for cand in candidates:
            dens = np.stack([
                np.column_stack([self._human(centers, *cand, grids=gr),
                                 self._fixed(centers, grids=gr)]) + _FLOOR
                for gr in grids
            ])
            w = _em(dens, counts, 300, 1e-5, start=weights)
            ll = (counts * np.log(np.einsum("bc,bnc->bn", w, dens))).sum(axis=1)
            better = ll > best_ll
            best_ll[better], best_w[better] = ll[better], w[better]
        return best_w - weights

    def _resampled_grids(self) -> list[list[np.ndarray]]:
        """Per calibration resample, every component's density rebuilt from it. They depend
        on the model alone (the resamples are seeded), so they are built once and kept
        when they are small (12 MB with two sources, 0.3 MB with one; not kept from three
        sources on): building them was half of the calibration part of a window's cost."""
        if self._resampled is not None:
            return self._resampled
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 0xCA1B])
        grids = [
            [_binned_density(c[rng.integers(0, len(c), len(c))], self._lo, self._step,
                             self._shape)
             for c in self._calibration]
            for _ in range(cfg.calibration_resamples)
        ]
        if sum(g.nbytes for gr in grids for g in gr) <= _KEEP_RESAMPLED_BYTES:
            self._resampled = grids
        return grids

    # ------------------------------------------------------------------ filtering

    def filter(
        self, documents: Sequence[str] | Corpus, max_synthetic: float
    ) -> tuple[np.ndarray, float, ShareResult]:
        """(keep mask, expected synthetic share of the kept documents, the estimate).

        Documents are dropped in order of decreasing posterior probability of being
        synthetic until the mean posterior of the rest — the expected synthetic share of
        the kept set under the fitted mixture — is at most ``max_synthetic``.
        """
        if not 0.0 <= max_synthetic <= 1.0:
            raise MetricsError(f"max_synthetic must be between 0 and 1, got {max_synthetic}")
        result = self.estimate(documents)
        keep, expected = filter_by_posterior(result.posterior, max_synthetic)
        return keep, expected, result


class JoinedMixture:
    """Both estimators of one reference and its sources: the LM ratio alone (over every
    document of a window) and with the embedding score beside it (over the documents the
    window's semantic metrics embed). A window's share is the midpoint of the two estimates
    and its interval spans both intervals (:func:`join_shares`).

    Why: each estimator is wrong on one kind of human text unlike the reference. The LM
    ratio alone is biased when the human part of a stream differs from the reference's mix
    (its interval shrinks with the window, its bias does not); with the embedding score it
    reads human text on one narrow subject as synthetic. Each 95% interval covers the truth
    in 95% of windows where its estimator's model holds, so the joined interval keeps that
    coverage wherever either model holds, and its lower bound passes a guard only when both
    intervals do (docs/synthetic-share.md, "Streams in the service")."""

    score_kind = "joined"

    def __init__(self, lexical: MixtureModel, semantic: MixtureModel) -> None:
        if lexical.score_kind != "lexical" or semantic.score_kind != "lexical+semantic":
            raise ValueError("JoinedMixture takes a lexical and a lexical+semantic model")
        if lexical.source_names != semantic.source_names:
            raise ValueError("both models must have the same sources")
        self.lexical, self.semantic = lexical, semantic

    @property
    def reference(self) -> Profile:
        return self.lexical.reference

    @property
    def source_names(self) -> list[str]:
        return self.lexical.source_names

    def estimate(self, documents: Sequence[str] | Corpus) -> dict:
        """Both estimators over every document (offline; a stream's window reads the
        embedded documents for the embedding score, ``metrics.scoring``), joined: the
        :func:`join_shares` fields."""
        corpus = documents if isinstance(documents, Corpus) else self.lexical.corpus(documents)
        return join_shares(self.lexical.estimate(corpus).fields(),
                           self.semantic.estimate(corpus).fields())


def join_shares(lexical: dict, semantic: dict) -> dict:
    """One ``synthetic_share`` from the two estimators' (``ShareResult.to_dict()`` forms,
    each with its ``documents``): the midpoint of the estimates and the span of the two 95%
    intervals (from the lower of the lows to the higher of the highs), in total and per
    source; ``parts`` keeps each estimator's own numbers.

    The midpoint's error is at most the mean of the two errors; the midpoint always lies in
    the span, since each estimate lies in its own interval."""
    parts = (lexical, semantic)

    def join(entries: Sequence[dict]) -> dict:
        return {"estimate": round(sum(e["estimate"] for e in entries) / len(entries), 4),
                "low": min(e["low"] for e in entries),
                "high": max(e["high"] for e in entries)}

    out = join(parts)
    out["by_source"] = {name: join([p["by_source"][name] for p in parts])
                        for name in lexical["by_source"]}
    out["unexplained"] = round(sum(p["unexplained"] for p in parts) / len(parts), 4)
    out["scores"] = JoinedMixture.score_kind
    out["documents"] = max(p["documents"] for p in parts)
    out["parts"] = {p["scores"]: {k: p[k] for k in ("estimate", "low", "high", "unexplained",
                                                    "documents")}
                    for p in parts}
    return out


STREAM_SCORES = ("joined", "lexical", "semantic")


def stream_mixture(reference: Profile, sources: Sequence[Profile],
                   config: MixtureConfig | None = None,
                   scores: str = "joined") -> tuple[MixtureModel | JoinedMixture, str | None]:
    """The mixture a monitored stream is estimated with. ``scores``:

    * ``joined`` (the default): :class:`JoinedMixture`, the LM ratio alone and with the
      embedding score, when the reference and every source carry embeddings of the model
      windows are embedded with; else the LM ratio alone;
    * ``semantic``: the LM ratio with the embedding score only (same condition, same
      fallback);
    * ``lexical``: the LM ratio alone.

    The embedding score costs no embedding of its own: a stream's window reads the
    documents its semantic metrics embed (``metrics.scoring.synthetic_share_fields``).
    Returns (model, why the embedding score is off, or None).

    ProfileError (a source of another reference, not a baseline) is raised as such."""
    from dataclasses import replace

    if scores not in STREAM_SCORES:
        raise ValueError(f"scores must be one of {', '.join(STREAM_SCORES)}, got {scores!r}")
    cfg = config or MixtureConfig()

    def lexical() -> MixtureModel:
        return MixtureModel(reference, sources, replace(cfg, semantic=False))

    if scores == "lexical":
        return lexical(), None
    try:
        semantic = MixtureModel(reference, sources, replace(cfg, semantic=True))
    except ProfileError:
        raise
    except MetricsError as exc:
        return lexical(), f"{exc}"
    return (JoinedMixture(lexical(), semantic) if scores == "joined" else semantic), None


def filter_by_posterior(posterior: np.ndarray, max_synthetic: float) -> tuple[np.ndarray, float]:
    """Largest set of least-likely-synthetic documents whose mean posterior is
    <= ``max_synthetic``: (keep mask, that mean). O(N log N)."""
    post = np.asarray(posterior, dtype=np.float64)
    order = np.argsort(post, kind="stable")
    # mean posterior of the m least-synthetic documents, m = 1..N; non-decreasing in m
    means = np.cumsum(post[order]) / np.arange(1, len(post) + 1)
    m = int(np.searchsorted(means, max_synthetic + 1e-12, side="right"))
    keep = np.zeros(len(post), dtype=bool)
    keep[order[:m]] = True
    return keep, float(means[m - 1]) if m else 0.0


class _HumanPerRow(NamedTuple):
    """Component densities whose first column, the human one, differs between rows (one
    location/scale of the human density per row) while the others are shared: ``human``
    (B, N), ``rest`` (N, C - 1). Every product stays a row-wise one or one matrix product,
    where a full (B, N, C) array would cost an ``einsum`` over all of it."""

    human: np.ndarray
    rest: np.ndarray


_Densities = np.ndarray | _HumanPerRow


def _mix(w: np.ndarray, dens: _Densities) -> np.ndarray:
    """Σ_c w_bc f_(b)ic for every row b: one density matrix for all rows, one per row, or a
    human column per row beside shared ones."""
    if isinstance(dens, _HumanPerRow):
        return w[:, :1] * dens.human + w[:, 1:] @ dens.rest.T
    return w @ dens.T if dens.ndim == 2 else np.einsum("bc,bnc->bn", w, dens)


def _em_step(w: np.ndarray, dens: _Densities, counts: np.ndarray, total: np.ndarray) -> np.ndarray:
    """One EM update of the weights of every row (Dempster et al. 1977):
    w_k <- w_k · Σ_i c_i f_ik / (Σ_j w_j f_ij) / Σ_i c_i."""
    r = counts / _mix(w, dens)
    if isinstance(dens, _HumanPerRow):
        back = np.column_stack([np.einsum("bn,bn->b", r, dens.human), r @ dens.rest])
    else:
        back = r @ dens if dens.ndim == 2 else np.einsum("bn,bnc->bc", r, dens)
    return w * back / total


def _em(dens: _Densities, counts: np.ndarray, max_iter: int, tol: float,
        start: np.ndarray | None = None) -> np.ndarray:
    """Mixture weights by EM with fixed component densities, for several document weightings
    at once: ``dens`` (N, C), one per row (B, N, C) or a :class:`_HumanPerRow`, ``counts``
    (B, N) -> (B, C).

    EM alone crawls when components overlap (its rate is the fraction of missing
    information); SQUAREM (Varadhan & Roland 2008, scheme S3) extrapolates two EM steps and
    falls back to the plain step whenever that would not increase the likelihood, so the
    fixed point and its monotone ascent are kept.
    """
    n_comp = 1 + dens.rest.shape[1] if isinstance(dens, _HumanPerRow) else dens.shape[-1]
    total = counts.sum(axis=1, keepdims=True)
    w = np.tile(np.full(n_comp, 1.0 / n_comp) if start is None else start, (len(counts), 1))
    # a component must keep a little weight to be able to grow back under EM
    w = np.maximum(w, 1e-3)
    w /= w.sum(axis=1, keepdims=True)

    # rows are independent problems: each stops once its own step is under ``tol`` and
    # the rest go on without it (the bootstrap's replicates converge at different speeds)
    rows = np.arange(len(w))
    d, c, tot = dens, counts, total
    c32 = c.astype(np.float32)

    def gain(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """log-likelihood of x minus that of y, per row (one logarithm, not two). In single
        precision, a third of the time: it only chooses between two EM-updated points, and
        where rounding can flip its sign (|gain| ~ 1e-4) both are as near the optimum; the
        weights themselves and the stopping rule stay in double precision. The ratio of two
        mixtures of the same densities with positive weights cannot leave float32's range
        (overflow would read inf or nan: the jump or the plain step, both safe)."""
        ratio = np.maximum(_mix(x, d), _FLOOR) / np.maximum(_mix(y, d), _FLOOR)
        return np.einsum("bn,bn->b", c32, np.log(ratio.astype(np.float32)))

    for _ in range(max(1, max_iter // 3)):
        x = w[rows]
        w1 = _em_step(x, d, c, tot)
        w2 = _em_step(w1, d, c, tot)
        r = w1 - x
        v = w2 - w1 - r
        alpha = -np.sqrt((r**2).sum(axis=1, keepdims=True)) / np.maximum(
            np.sqrt((v**2).sum(axis=1, keepdims=True)), 1e-300
        )
        alpha = np.clip(alpha, -100.0, -1.0)  # bounded steps keep the extrapolation finite
        jump = np.clip(x - 2 * alpha * r + alpha**2 * v, 0.0, None)
        jump /= np.maximum(jump.sum(axis=1, keepdims=True), 1e-300)
        jump = _em_step(np.maximum(jump, 1e-12), d, c, tot)
        new = np.where((gain(jump, w2) >= 0.0)[:, None], jump, w2)
        going = np.abs(new - x).max(axis=1) >= tol
        w[rows] = new
        if not going.any():
            break
        if not going.all():
            rows, c, c32, tot = rows[going], c[going], c32[going], tot[going]
            if isinstance(d, _HumanPerRow):
                d = _HumanPerRow(d.human[going], d.rest)
            elif d.ndim == 3:
                d = d[going]
    return w
