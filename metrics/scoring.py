"""Scoring a window: metric values, ratios to the human (and baseline) band, signals, health.

``score`` returns the DESIGN.md "Score JSON": JSON-serialisable, never NaN (None instead).
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from metrics.bands import (
    BAND_DRAW,
    QUANTILE_METHOD,
    Calibration,
    SkewAllowance,
    calibrate,
    replicate_reads,
    skew_allowance,
    skew_estimable,
    snap_budget,
    summarise,
)
from metrics.config import ScoreConfig
from metrics.errors import MetricsError, ProfileError
from metrics.evidence import evidence as window_evidence
from metrics.mixture import JoinedMixture, join_shares
from metrics.profile import Profile
from metrics.registry import DOWN, REGISTRY, SIGNALS, UP, compute_all, subsample_docs
from metrics.sample import Corpus, Sample
from metrics.semantic import score_fields as semantic_score_fields
from metrics.semantic import window_vectors
from metrics.text import normalize_documents, tokenize_documents

HEALTH_STATES = ("healthy", "early_collapse", "collapse", "insufficient_data")
# how each signal moves under collapse: diversity and tail coverage fall, sameness rises
SIGNAL_DIRECTION = {"diversity": DOWN, "tail_coverage": DOWN, "sameness": UP}
_RATIO_CLIP = (1e-3, 1e3)  # a metric at 0 must not send its signal's geometric mean to 0


def _num(x: float | np.floating | None) -> float | None:
    """A JSON-safe float: None for NaN/inf/None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


_COMPLEMENT = np.array([spec.complement_ratio for spec in REGISTRY])


def metric_ratios(values: np.ndarray, means: np.ndarray, n_docs: int) -> np.ndarray:
    """Ratio of each metric to its band mean (..., metrics); NaN where undefined.

    value / mean, except for the duplicate rates (``complement_ratio``), compared as
    shares of distinct documents: (1 - mean) / (1 - value), oriented the same way.
    """
    floor = 1.0 / max(n_docs, 1)
    with np.errstate(all="ignore"):
        plain = np.where(means > 0, values / np.where(means > 0, means, 1.0), np.nan)
        comp = (1.0 - means) / np.maximum(1.0 - values, floor)
        return np.where(_COMPLEMENT, comp, plain)


def signal_ratios(ratios: np.ndarray) -> np.ndarray:
    """Aggregate metric ratios (..., metrics) into signal ratios (..., signals).

    Weighted geometric mean of each signal's metric ratios, each oriented to its signal
    (a metric moving against its signal's collapse direction enters inverted: the
    compression ratio rises as diversity falls). NaN metrics are left out.
    """
    ratios = np.atleast_2d(ratios)
    out = np.full((ratios.shape[0], len(SIGNALS)), np.nan)
    for j, signal in enumerate(SIGNALS):
        cols, weights, signs = [], [], []
        for i, spec in enumerate(REGISTRY):
            if spec.signal == signal and spec.weight > 0:
                cols.append(i)
                weights.append(spec.weight)
                signs.append(1.0 if spec.direction == SIGNAL_DIRECTION[signal] else -1.0)
        r = ratios[:, cols]
        logs = np.log(np.clip(r, *_RATIO_CLIP)) * np.asarray(signs)
        w = np.where(np.isnan(r), 0.0, np.asarray(weights))
        total = w.sum(axis=1)
        with np.errstate(all="ignore"):
            agg = np.where(total > 0, np.nansum(logs * w, axis=1) / np.where(total > 0, total, 1), np.nan)
        out[:, j] = np.exp(agg)
    return out


def band_signal_ratios(
    own: np.ndarray, human: np.ndarray, n_docs: int
) -> dict[str, float | None]:
    """Signal ratios of one band's mean to another band's mean (a baseline's "× human")."""
    own_mean = summarise(own, 0.5, 0.5)["mean"]
    human_mean = summarise(human, 0.5, 0.5)["mean"]
    sig = signal_ratios(metric_ratios(own_mean, human_mean, n_docs))[0]
    return {name: _num(sig[j]) for j, name in enumerate(SIGNALS)}


def _percentile(replicates: np.ndarray, value: float) -> float | None:
    """Mid-rank share of band replicates below the value."""
    reps = replicates[~np.isnan(replicates)]
    if len(reps) == 0 or not math.isfinite(value):
        return None
    return float(((reps < value).sum() + 0.5 * (reps == value).sum()) / len(reps))


# +1 for a signal that rises toward collapse (sameness), -1 for one that falls
_COLLAPSE_SIGN = np.array([1.0 if SIGNAL_DIRECTION[name] == UP else -1.0 for name in SIGNALS])


def _skew_of(profile: Profile, origin, n_docs: int, budget: int, band: np.ndarray,
             cfg: ScoreConfig) -> Callable[[np.ndarray], SkewAllowance] | None:
    """The skew allowance of a band (see :func:`metrics.bands.skew_allowance`): None for a
    band whose replicates' documents are not known — extended, interpolated between
    document counts, or stored the way of an older release. A band interpolated between
    budgets at the window's own document count keeps the replicates of its stored bands,
    which read the same documents at every budget (``band_matrix``). A pool too large for
    the replicates to read each document a few times gets a zero allowance (it would be ~0:
    it grows with the window's share of the pool)."""
    if isinstance(origin, list):
        if any(n != n_docs for n, _ in origin):
            return None
        used = [tuple(k) for k in origin]
    elif origin is None:
        used = [(n_docs, budget)]
    else:
        return None
    older_draw = profile.band_draw != BAND_DRAW and any(k in profile.stored_bands for k in used)
    replicates, pool = len(band), profile.pool.n_docs
    if older_draw or replicates != profile.config.replicates:
        return None
    z = float(statistics.NormalDist().inv_cdf(cfg.band_high))
    if not skew_estimable(replicates, n_docs, pool):
        return lambda logs: SkewAllowance(np.zeros(len(SIGNALS)), np.zeros(len(SIGNALS)))

    def of(logs: np.ndarray) -> SkewAllowance:
        # the documents each replicate read, once per document count (not per budget)
        reads = profile.memoised(("replicate_reads", n_docs), lambda: replicate_reads(
            profile.config.seed, n_docs, replicates, profile.pool.lengths))
        return skew_allowance(logs, _COLLAPSE_SIGN, reads, pool, n_docs, z)
    return of


class _Comparison:
    """A window compared with one band (human or baseline), calibrated for a fresh window
    (see :func:`metrics.bands.calibrate`)."""

    def __init__(self, values: np.ndarray, cal: Calibration, n_docs: int, cfg: ScoreConfig,
                 skew: Callable[[np.ndarray], SkewAllowance] | None = None):
        band = cal.band
        self.calibration = cal
        self.summary = summarise(band, cfg.band_low, cfg.band_high)
        self.ratios = metric_ratios(values, self.summary["mean"], n_docs)
        self.outside = (values < self.summary["low"]) | (values > self.summary["high"])
        replicate_signals = signal_ratios(metric_ratios(band, self.summary["mean"], n_docs))
        within_signals = signal_ratios(metric_ratios(cal.within, self.summary["mean"], n_docs))
        self.signals = signal_ratios(self.ratios)[0]
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: undefined, on purpose
            self.signal_low = np.nanquantile(replicate_signals, cfg.band_low, axis=0,
                                             method=QUANTILE_METHOD)
            self.signal_high = np.nanquantile(replicate_signals, cfg.band_high, axis=0,
                                              method=QUANTILE_METHOD)
            # z on log ratios: signals are geometric means, so their logs are the
            # additive scale; the calibrated replicates give the spread
            logs = np.log(replicate_signals)
            sd = np.nanstd(logs, axis=0, ddof=1)
            within_sd = np.nanstd(np.log(within_signals), axis=0, ddof=1)
            self.signal_z = (np.log(self.signals) - np.nanmean(logs, axis=0)) / sd
            # error of the band centre itself, in units of a fresh window's spread
            # around it: the part of z every window against this band shares
            self.mean_error = np.sqrt(np.maximum(sd**2 / within_sd**2 - 1.0, 0.0))
            self.metric_z = (values - self.summary["mean"]) / np.nanstd(band, axis=0, ddof=1)
        # the collapse-side edges move out by the band's skew allowance (see
        # metrics.bands.skew_allowance); z stays the symmetric standardised deviation
        self.skew: SkewAllowance | None = skew(logs) if skew is not None else None
        # the collapse-side edge is multiplied (sameness) or divided by this
        self.edge_factor = np.ones(len(SIGNALS))
        if self.skew is not None:
            moved = self.edge_factor = np.where(self.skew.shift > 0,
                                                np.exp(self.skew.shift * sd), 1.0)
            rises = _COLLAPSE_SIGN > 0
            self.signal_high = np.where(rises, self.signal_high * moved, self.signal_high)
            self.signal_low = np.where(rises, self.signal_low, self.signal_low / moved)

    def signal_outside(self, j: int) -> bool:
        return bool(self.signals[j] < self.signal_low[j] or self.signals[j] > self.signal_high[j])

    def skew_json(self) -> dict | None:
        if self.skew is None:
            return None
        return {name: {"document_skew": _num(self.skew.document_skew[j]),
                       "edge_moved_sd": _num(self.skew.shift[j]),
                       "edge_factor": _num(self.edge_factor[j])}
                for j, name in enumerate(SIGNALS)}

    def bands(self) -> Band:
        return {
            name: (float(self.signals[j]), float(self.signal_low[j]), float(self.signal_high[j]))
            for j, name in enumerate(SIGNALS)
        }


Band = dict[str, tuple[float, float, float]]  # signal -> (ratio, band low, band high)


def health_state(human: Band, baseline: Band | None, config: ScoreConfig) -> str:
    """The health rules (see :class:`ScoreConfig`) on signal ratios and their bands.

    Every rule needs significance (the ratio beyond its band, on the collapse side) and
    size (the ratio beyond a threshold).
    """
    cfg = config

    def below(band: Band, name: str, threshold: float) -> bool:
        ratio, low, _ = band[name]
        return ratio < low and ratio <= threshold

    def above(band: Band, name: str, threshold: float) -> bool:
        ratio, _, high = band[name]
        return ratio > high and ratio >= threshold

    if baseline is None:
        if below(human, "diversity", cfg.collapse_diversity_ratio) or above(
            human, "sameness", cfg.collapse_sameness_ratio
        ):
            return "collapse"
        if below(human, "tail_coverage", cfg.early_tail_ratio):
            return "early_collapse"
        return "healthy"
    if below(human, "diversity", cfg.floor_diversity_ratio) or above(
        human, "sameness", cfg.floor_sameness_ratio
    ):
        return "collapse"
    if below(baseline, "diversity", cfg.baseline_collapse_diversity_ratio) or above(
        baseline, "sameness", cfg.baseline_collapse_sameness_ratio
    ):
        return "collapse"
    if below(baseline, "tail_coverage", cfg.baseline_early_tail_ratio):
        return "early_collapse"
    return "healthy"


def encode_window(documents: Sequence[str], reference: Profile) -> tuple[Corpus, np.ndarray]:
    """Tokenise with the reference's tokenizer; canonical document order (by content)."""
    corpus, keys, _ = encode_window_texts(documents, reference)
    return corpus, keys


def encode_window_texts(
    documents: Sequence[str], reference: Profile
) -> tuple[Corpus, np.ndarray, list[str]]:
    """:func:`encode_window`, and the normalised texts in the same order (for quoting).

    Documents with equal tokens ("Quit." and "quit") are ordered by their text, so the
    quoted texts do not depend on the order documents arrived in either.
    """
    texts = normalize_documents(documents)
    corpus = Corpus.from_tokens(tokenize_documents(texts, reference.config.tokenizer))
    keys = corpus.doc_keys()
    order = sorted(range(len(texts)), key=lambda i: (int(keys[i]), texts[i]))
    return corpus.take(np.asarray(order, dtype=np.int64)), keys[order], [texts[i] for i in order]


def _check_profiles(reference: Profile, baseline: Profile | None) -> None:
    if not isinstance(reference, Profile) or reference.kind != "reference":
        raise ProfileError("the reference argument must be a reference profile")
    if baseline is None:
        return
    if not isinstance(baseline, Profile) or baseline.kind != "baseline":
        raise ProfileError("the baseline argument must be a baseline profile")
    if baseline.reference_sha256 != reference.sha256:
        raise ProfileError(
            f"baseline {baseline.name!r} was built against reference "
            f"{(baseline.reference_sha256 or '?')[:12]}, not {reference.name!r} "
            f"({reference.sha256[:12]}); rebuild the baseline against this reference"
        )


def score(
    documents: Sequence[str],
    reference: Profile,
    baseline: Profile | None = None,
    *,
    config: ScoreConfig | None = None,
    with_evidence: bool = True,
    evidence_text: bool = True,
    mixture=None,
) -> dict:
    """Score one window of model outputs against a reference (and optionally a baseline).

    Returns the Score JSON. Windows below ``config.min_documents`` documents (or without
    a single token) are ``insufficient_data``: metric values are reported, bands and
    ratios are None. Raises ProfileError for a baseline built against another reference.
    ``evidence`` (see :mod:`metrics.evidence`) is left out with ``with_evidence=False``;
    ``evidence_text=False`` keeps it but without quoted sample text. With ``mixture`` (a
    :class:`metrics.mixture.MixtureModel` of this reference: a stream's window) the result
    carries ``synthetic_share`` (see :func:`synthetic_share_fields`).
    """
    cfg = config or ScoreConfig()
    _check_profiles(reference, baseline)
    corpus, keys, texts = encode_window_texts(documents, reference)
    n_docs, tokens = corpus.n_docs, int(corpus.offsets[-1])
    budget = snap_budget(tokens, cfg.token_budget)
    sample = Sample(corpus, budget, keys)
    values = compute_all(sample, reference.context())
    enough = n_docs >= cfg.min_documents and budget > 0
    band, origin = (reference.band_with_origin(n_docs, budget, interpolate=cfg.interpolate_bands)
                    if enough else (None, None))
    human = None
    sample_docs = subsample_docs(reference.config.suite)  # what the semantic columns read
    if band is not None:
        cal = calibrate(band, reference.pool, n_docs, budget, "reference's calibration pool",
                        interpolated_from=origin, sample_docs=sample_docs)
        human = _Comparison(values, cal, n_docs, cfg,
                            _skew_of(reference, origin, n_docs, budget, band, cfg))
        band = cal.band
    base = base_cal = None
    if enough and baseline is not None:
        base_band, base_origin = baseline.band_with_origin(n_docs, budget, reference,
                                                           interpolate=cfg.interpolate_bands)
        base_cal = calibrate(base_band, baseline.pool, n_docs, budget, "baseline",
                             interpolated_from=base_origin, sample_docs=sample_docs)
        # a window larger than the baseline cannot be judged against it (its replicates
        # repeat documents): the baseline comparison is left out and said so
        if base_cal.status != "too_small":
            base = _Comparison(values, base_cal, n_docs, cfg, _skew_of(
                baseline, base_origin, n_docs, budget, base_band, cfg))
    health = "insufficient_data"
    if human is not None:
        health = health_state(human.bands(), base.bands() if base else None, cfg)
    result = {
        "reference": {"name": reference.name, "sha256": reference.sha256},
        "baseline": None if baseline is None else {"name": baseline.name, "sha256": baseline.sha256},
        "documents": n_docs,
        "tokens": tokens,
        "token_budget": budget,
        "health": health,
        "signals": _signals_json(human, base, baseline is not None),
        "metrics": _metrics_json(values, band, human, base, baseline is not None),
        "calibration": _calibration_json(human, base_cal, base),
    }
    if with_evidence:
        result["evidence"] = window_evidence(
            sample, reference, baseline, texts=texts, quote_text=evidence_text
        )
    extra = semantic_score_fields(sample, reference, baseline)
    if "semantic" in extra:
        result["semantic"] = extra["semantic"]
    # vanished topics sit beside the vanished words in the evidence
    evidence = result.setdefault("evidence", {})
    if isinstance(evidence, dict):
        evidence["vanished_topics"] = extra["vanished_topics"]
    if mixture is not None:
        result.update(synthetic_share_fields(sample, reference, mixture))
    return result


def synthetic_share_fields(sample: Sample, reference: Profile, mixture) -> dict:
    """``synthetic_share`` of a scored window (or ``synthetic_share_unavailable``: why not).

    A mixture with the semantic score reads the documents the semantic metrics embedded
    (the window's first ``SuiteConfig.topic_sample`` non-empty documents in its scoring
    order, which sorts them by a hash of their tokens: a sample that does not depend on
    arrival order), so a stream's share costs no embedding of its own; its ``documents``
    says how many it read. A lexical mixture reads every document; a
    ``metrics.mixture.JoinedMixture`` estimates both ways and joins them
    (``metrics.mixture.join_shares``)."""
    try:
        if mixture.reference.sha256 != reference.sha256:
            raise MetricsError("the mixture was built against another reference than the "
                               "window is scored with")
        if isinstance(mixture, JoinedMixture):
            fields = join_shares(_share_fields(sample, reference, mixture.lexical),
                                 _share_fields(sample, reference, mixture.semantic))
        else:
            fields = _share_fields(sample, reference, mixture)
    except MetricsError as exc:
        return {"synthetic_share_unavailable": f"{exc}"}
    return {"synthetic_share": fields}


def _share_fields(sample: Sample, reference: Profile, mixture) -> dict:
    """One estimator's ``synthetic_share`` of the window, with the documents it read."""
    if mixture.score_kind == "lexical+semantic":
        sem = reference.context().semantic
        vectors = window_vectors(sample, sem) if sem is not None else None
        if vectors is None or len(vectors) == 0:
            raise MetricsError("the window's documents could not be embedded")
        rows = np.flatnonzero(sample.docs.lengths > 0)[: len(vectors)]
        share = mixture.estimate(sample.docs.take(rows), vectors)
    else:
        share = mixture.estimate(sample.docs)
    return share.fields()


def _calibration_json(human: _Comparison | None, base_cal: Calibration | None,
                      base: _Comparison | None) -> dict:
    """How each band was calibrated for this window (see :func:`metrics.bands.calibrate`),
    with its skew allowance (:func:`metrics.bands.skew_allowance`; null when the band's
    replicates' documents are not known)."""
    out: dict = {"human": None}
    if human is not None:
        out["human"] = {**human.calibration.to_json(), "skew_allowance": human.skew_json()}
    if base_cal is not None:
        out["baseline"] = {**base_cal.to_json(),
                           "skew_allowance": base.skew_json() if base else None}
    return out


def _signals_json(human: _Comparison | None, base: _Comparison | None, with_baseline: bool) -> dict:
    out = {}
    for j, name in enumerate(SIGNALS):
        entry = {
            "ratio": _num(human.signals[j]) if human else None,
            "outside_band": human.signal_outside(j) if human else False,
            "human_low": _num(human.signal_low[j]) if human else None,
            "human_high": _num(human.signal_high[j]) if human else None,
        }
        if with_baseline:
            entry["baseline_ratio"] = _num(base.signals[j]) if base else None
            entry["outside_baseline_band"] = base.signal_outside(j) if base else False
            entry["baseline_low"] = _num(base.signal_low[j]) if base else None
            entry["baseline_high"] = _num(base.signal_high[j]) if base else None
        # z: standardised log-ratio deviation from the band the window is judged by
        judge = base if base is not None else human
        entry["z"] = _num(judge.signal_z[j]) if judge else None
        entry["z_against"] = None if judge is None else ("baseline" if base else "human")
        entry["mean_error"] = _num(judge.mean_error[j]) if judge else None
        out[name] = entry
    return out


def _metrics_json(
    values: np.ndarray,
    band: np.ndarray | None,
    human: _Comparison | None,
    base: _Comparison | None,
    with_baseline: bool,
) -> dict:
    out = {}
    for i, spec in enumerate(REGISTRY):
        entry = {
            "value": _num(values[i]),
            "human_mean": _num(human.summary["mean"][i]) if human else None,
            "human_low": _num(human.summary["low"][i]) if human else None,
            "human_high": _num(human.summary["high"][i]) if human else None,
            "ratio": _num(human.ratios[i]) if human else None,
            "percentile": _percentile(band[:, i], values[i]) if band is not None else None,
            "outside_band": bool(human.outside[i]) if human else False,
            "signal": spec.signal,
            "direction": spec.direction,
        }
        if with_baseline:
            entry["baseline_mean"] = _num(base.summary["mean"][i]) if base else None
            entry["baseline_ratio"] = _num(base.ratios[i]) if base else None
            entry["outside_baseline_band"] = bool(base.outside[i]) if base else False
        judge = base if base is not None else human
        entry["z"] = _num(judge.metric_z[i]) if judge else None
        out[spec.name] = entry
    return out
