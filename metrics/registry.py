"""The metric suite as a registry: name, signal, direction under collapse, cost.

Code that runs "all metrics" loops over :data:`REGISTRY`. Each metric is a small function
of a :class:`~metrics.sample.Sample` and the reference :class:`Context`; it returns a float,
or None when the window has nothing to measure (no tokens, one document).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from metrics import kernels, semantic
from metrics.config import SuiteConfig
from metrics.lm import ReferenceModel
from metrics.sample import Sample
from metrics.semantic import SemanticContext

SIGNALS = ("diversity", "tail_coverage", "sameness")
DOWN, UP = "down", "up"


@dataclass(frozen=True)
class Context:
    """Reference-side inputs of the metrics."""

    model: ReferenceModel
    human_nll: np.ndarray  # sorted per-document NLL of the calibration documents
    suite: SuiteConfig
    ref_prob: np.ndarray  # reference unigram distribution, aligned with model.uni_ids
    # semantic inputs (metrics.semantic.SemanticContext), or None with the reason why
    semantic: SemanticContext | None = None
    semantic_unavailable: str | None = None


@dataclass(frozen=True)
class MetricSpec:
    """One metric of the suite.

    signal: "diversity", "tail_coverage", "sameness" or "typicality" (reported only).
    direction: how the value moves under collapse ("down" or "up").
    view: what the metric reads. "docs": the window's documents (per-document quantities:
      duplicates, Self-BLEU, NLL); "budget": the first B tokens (type counts, which depend
      on sample size). A "docs" metric must not read the budget view and vice versa: a
      band replicate's document view is the same at every budget, so its "docs" columns
      are computed once per window size and reused across budgets (see metrics.bands).
    cost: time complexity in tokens T and documents D.
    weight: weight in its signal's aggregate (0 = reported, not aggregated).
    complement_ratio: for duplicate rates, which are often exactly 0 in human text, the
      ratio compares the shares of *distinct* documents instead of the rates:
      (1 - band mean) / (1 - value), with 1 - value floored at one document's share. It
      reads "k times fewer distinct documents than human", stays finite, and one stray
      duplicate in 500 documents moves it by 0.2% instead of doubling it.
    revision: bumped when the definition changes under the same name; it is part of
      :data:`METRIC_SUITE`, which keys stored and cached bands, so a band computed by the
      old definition is never read as the new one.
    """

    name: str
    view: str  # "docs" (whole documents) or "budget" (the token budget view)
    signal: str
    direction: str
    cost: str
    fn: Callable[[Sample, Context], float | None]
    weight: float = 1.0
    complement_ratio: bool = False
    description: str = ""
    revision: int = 1


# ------------------------------------------------------------------ diversity


def _distinct(n: int) -> Callable[[Sample, Context], float | None]:
    def fn(s: Sample, ctx: Context) -> float | None:
        _, counts = s.counts("budget", n)
        return float(len(counts) / counts.sum()) if len(counts) else None

    return fn


def _entropy(s: Sample, ctx: Context) -> float | None:
    return kernels.entropy_bits(s.counts("budget", 1)[1])


def _mattr(s: Sample, ctx: Context) -> float | None:
    return kernels.mattr_ids(s.budget_ids(), ctx.suite.mattr_window)


def _compression(s: Sample, ctx: Context) -> float | None:
    b = s.budget()
    if b.offsets[-1] == 0:
        return None
    return kernels.gzip_ratio(" ".join(b.words()[b.index].tolist()).encode("utf-8"))


# ------------------------------------------------------------------ tail coverage


def _present(sorted_ref: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if len(sorted_ref) == 0 or len(keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    idx = np.minimum(np.searchsorted(sorted_ref, keys), len(sorted_ref) - 1)
    return sorted_ref[idx] == keys


def _tail_recall(s: Sample, ctx: Context) -> float | None:
    tail = ctx.model.tail_ids
    if len(tail) == 0 or s.budget_tokens == 0:
        return None
    types, _ = s.counts("budget", 1)
    return float(_present(tail, types).sum() / len(tail))


def _tail_mass(s: Sample, ctx: Context) -> float | None:
    types, counts = s.counts("budget", 1)
    if counts.sum() == 0:
        return None
    return float(counts[_present(ctx.model.tail_ids, types)].sum() / counts.sum())


def _missing_mass(s: Sample, ctx: Context) -> float | None:
    return kernels.good_turing_missing_mass(s.counts("budget", 1)[1])


def _chao1(s: Sample, ctx: Context) -> float | None:
    return kernels.chao1(s.counts("budget", 1)[1])


def _rare_bigram_recall(s: Sample, ctx: Context) -> float | None:
    rare = ctx.model.rare_bigrams
    if len(rare) == 0 or s.budget_tokens == 0:
        return None
    keys, _ = s.counts("budget", 2)
    return float(_present(rare, keys).sum() / len(rare))


# ------------------------------------------------------------------ sameness


def _exact_dup(s: Sample, ctx: Context) -> float | None:
    if s.n_docs == 0:
        return None
    return float(1.0 - len(kernels.unique_counts(s.doc_keys)[0]) / s.n_docs)


def _shingles(s: Sample, ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of each document's distinct word shingles (short documents: one)."""
    k = ctx.suite.shingle
    keys, doc_of = s.ngrams("docs", k)
    lengths = s.docs.lengths
    short = np.flatnonzero((lengths > 0) & (lengths < k))
    if len(short):
        keys = np.concatenate([keys, s.doc_keys[short]])
        doc_of = np.concatenate([doc_of, short])
        order = np.argsort(doc_of, kind="stable")  # minhash_signatures wants them grouped
        keys, doc_of = keys[order], doc_of[order]
    # repeated shingles need no removal: a minimum does not change when a value repeats
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32), doc_of


def minhash_of(s: Sample, ctx: Context) -> np.ndarray:
    """(documents, num_perm) MinHash signatures of a sample's documents. A row depends only
    on its own document, so rows computed for a pool can be taken for any subset of it."""
    su = ctx.suite
    hashes, owners = _shingles(s, ctx)
    return kernels.minhash_signatures(hashes, owners, s.n_docs, su.num_perm, su.minhash_seed)


def _near_dup(s: Sample, ctx: Context) -> float | None:
    if s.n_docs == 0:
        return None
    su = ctx.suite
    sig = s.memo("minhash", lambda: minhash_of(s, ctx))
    keys = s.memo("lsh_keys", lambda: kernels.lsh_keys(sig, su.near_duplicate_threshold))
    eligible = s.docs.lengths > 0
    return float(kernels.near_duplicate_flags(sig, su.near_duplicate_threshold, eligible,
                                              band_keys=keys).mean())


def _groups(s: Sample, n: int) -> tuple[np.ndarray, ...]:
    return s.memo(("groups", n), lambda: kernels.doc_ngram_groups(*s.ngrams("docs", n)))


def _self_repetition(s: Sample, ctx: Context) -> float | None:
    return kernels.self_repetition_groups(_groups(s, ctx.suite.self_repetition_n), s.n_docs)


def _self_bleu(s: Sample, ctx: Context) -> float | None:
    if s.n_docs < 2:
        return None
    per_doc = kernels.self_bleu_per_doc(
        s.ids(), s.docs.offsets, ctx.suite.self_bleu_max_n, groups_of=lambda n: _groups(s, n)
    )
    return float(per_doc.mean())


def _top_share(s: Sample, ctx: Context) -> float | None:
    _, counts = s.counts("budget", ctx.suite.top_ngram_n)
    return kernels.top_share(counts, ctx.suite.top_ngram_k)


# ------------------------------------------------------------------ typicality


def _doc_nll(s: Sample, ctx: Context) -> np.ndarray:
    def compute() -> np.ndarray:
        nll = ctx.model.doc_nll(s.ids(), s.docs.offsets)
        return nll[~np.isnan(nll)]

    return s.memo("doc_nll", compute)


def _nll_median(s: Sample, ctx: Context) -> float | None:
    nll = _doc_nll(s, ctx)
    return float(np.median(nll)) if len(nll) else None


def _nll_spread(s: Sample, ctx: Context) -> float | None:
    nll = _doc_nll(s, ctx)
    if len(nll) < 2:
        return None
    q75, q25 = np.percentile(nll, [75, 25])
    return float(q75 - q25)


def _nll_ks(s: Sample, ctx: Context) -> float | None:
    """Two-sample Kolmogorov–Smirnov distance to the human (calibration) NLL distribution."""
    nll = np.sort(_doc_nll(s, ctx))
    human = ctx.human_nll
    if len(nll) == 0 or len(human) == 0:
        return None
    grid = np.concatenate([nll, human])
    cdf_w = np.searchsorted(nll, grid, side="right") / len(nll)
    cdf_h = np.searchsorted(human, grid, side="right") / len(human)
    return float(np.abs(cdf_w - cdf_h).max())


def _unigram_jsd(s: Sample, ctx: Context) -> float | None:
    """Jensen–Shannon distance (base 2, in [0, 1]) between window and reference unigrams."""
    types, counts = s.counts("budget", 1)
    if counts.sum() == 0:
        return None
    q = counts / counts.sum()
    ref_ids, ref_p = ctx.model.uni_ids, ctx.ref_prob
    idx = np.minimum(np.searchsorted(ref_ids, types), max(len(ref_ids) - 1, 0))
    found = (ref_ids[idx] == types) if len(ref_ids) else np.zeros(len(types), bool)
    p_at_window = np.where(found, ref_p[idx] if len(ref_ids) else 0.0, 0.0)
    # terms over the window's types, then the reference types the window lacks
    m_w = 0.5 * (p_at_window + q)
    kl_q = np.sum(q * np.log2(q / m_w))
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p_w = np.where(p_at_window > 0, p_at_window * np.log2(p_at_window / m_w), 0.0).sum()
    missing = np.ones(len(ref_ids), dtype=bool)
    missing[idx[found]] = False
    kl_p_rest = ref_p[missing].sum() * 1.0  # p·log2(p / (p/2)) = p
    js = 0.5 * (kl_q + kl_p_w + kl_p_rest)
    return float(np.sqrt(max(js, 0.0)))


REGISTRY: tuple[MetricSpec, ...] = (
    MetricSpec("distinct_1", "budget", "diversity", DOWN, "O(T log T)", _distinct(1),
               description="distinct unigrams / unigrams on the token budget"),
    MetricSpec("distinct_2", "budget", "diversity", DOWN, "O(T log T)", _distinct(2),
               description="distinct bigrams / bigrams on the token budget"),
    MetricSpec("distinct_3", "budget", "diversity", DOWN, "O(T log T)", _distinct(3),
               description="distinct trigrams / trigrams on the token budget"),
    MetricSpec("unigram_entropy", "budget", "diversity", DOWN, "O(T log T)", _entropy,
               description="Shannon entropy of the unigram distribution (bits)"),
    MetricSpec("mattr", "budget", "diversity", DOWN, "O(T log T)", _mattr,
               description="moving-average type-token ratio, window 100"),
    MetricSpec("compression_ratio", "budget", "diversity", UP, "O(T)", _compression,
               description="text bytes / gzip bytes (one pass); rises as text repeats"),
    MetricSpec("tail_recall", "budget", "tail_coverage", DOWN, "O(T log V)", _tail_recall,
               description="share of the reference tail-band types that appear"),
    MetricSpec("tail_mass", "budget", "tail_coverage", DOWN, "O(T log V)", _tail_mass,
               description="share of window tokens that are tail-band types"),
    MetricSpec("missing_mass", "budget", "tail_coverage", DOWN, "O(T log T)", _missing_mass,
               description="Good-Turing missing mass N1/N"),
    MetricSpec("chao1", "budget", "tail_coverage", DOWN, "O(T log T)", _chao1,
               description="bias-corrected Chao1 richness estimate"),
    MetricSpec("rare_bigram_recall", "budget", "tail_coverage", DOWN, "O(T log V)",
               _rare_bigram_recall, description="share of reference hapax bigrams that appear"),
    MetricSpec("exact_duplicate_rate", "docs", "sameness", UP, "O(T + D log D)", _exact_dup,
               complement_ratio=True, description="share of documents repeating an earlier one"),
    MetricSpec("near_duplicate_rate", "docs", "sameness", UP, "O(T·128)", _near_dup,
               complement_ratio=True,
               description="share of documents with a Jaccard >= 0.8 partner (MinHash LSH)"),
    # reported, not aggregated: zero-inflated on human text (in most small windows no two
    # documents share a 4-gram, a few share many), so its ratio to the band mean swings
    # between ~0 and ~3 on human windows alone and would dominate a geometric mean
    MetricSpec("self_repetition", "docs", "sameness", UP, "O(T log T)", _self_repetition,
               weight=0.0, description="Salkar et al. 2022 self-repetition of 4-grams"),
    MetricSpec("self_bleu", "docs", "sameness", UP, "O(T log T)", _self_bleu,
               description="mean BLEU-4 of each document against all others"),
    MetricSpec("top_ngram_share", "budget", "sameness", UP, "O(T log T)", _top_share,
               description="share of trigram occurrences in the 100 most common trigrams"),
    MetricSpec("nll_median", "docs", "typicality", DOWN, "O(T log V)", _nll_median,
               description="median per-document NLL (nats/token) under the reference LM"),
    MetricSpec("nll_spread", "docs", "typicality", DOWN, "O(T log V)", _nll_spread,
               description="interquartile range of per-document NLL"),
    MetricSpec("nll_ks", "docs", "typicality", UP, "O(T log V + D log D)", _nll_ks,
               description="KS distance to the human per-document NLL distribution"),
    MetricSpec("unigram_jsd", "budget", "typicality", UP, "O(T log V + V)", _unigram_jsd,
               description="Jensen-Shannon distance to the reference unigram distribution"),
    # semantic (metrics.semantic): a fixed-size subsample of the window's documents (256
    # for the pairwise metrics, up to 512 for the topic counts), embedded locally; None when
    # no embedding model or no profile embeddings. Weights come from benchmarks/semantic.py:
    # 1 when the median effect on collapsed windows is >= 2 band sd in the collapse
    # direction and fresh human windows leave the band <= 5% of the time. Measured
    # (fortunes, 500-document windows, 60 human windows, `python -m benchmarks.semantic
    # --windows 60 --planted 10`): similarity +17 sd, Vendi +12, k-NN recall +30 (human 1/60
    # outside), topic entropy +11 (human: 0 outside); topic_recall -0.1 and
    # rare_topic_recall (its band at the ceiling) do not move on the recursive generator,
    # which still reaches every topic (weight 0, reported: they serve topic loss, where
    # removing two rare topics puts both out of band in 10/10 windows, intact 0/5); MMD²
    # +49, typicality, reported.
    MetricSpec("semantic_similarity", "docs", "sameness", UP, "O(S·d) + embedding",
               semantic.semantic_similarity, weight=1.0,
               description="mean pairwise cosine similarity of document embeddings"),
    MetricSpec("semantic_vendi", "docs", "diversity", DOWN, "O(S·d·min(S, d)) + embedding",
               semantic.semantic_vendi, weight=1.0,
               description="Vendi score of the embeddings (Friedman & Dieng 2023)"),
    MetricSpec("semantic_recall", "docs", "tail_coverage", DOWN, "O(S²·d + S·R·d) + embedding",
               semantic.semantic_recall, weight=1.0,
               description="k-NN recall of the reference embeddings (Kynkaanniemi et al. 2019)"),
    MetricSpec("topic_recall", "docs", "tail_coverage", DOWN, "O(S·K·d) + embedding",
               semantic.topic_recall, weight=0.0, revision=3,
               description="share of reference documents whose topic the window reaches"),
    MetricSpec("rare_topic_recall", "docs", "tail_coverage", DOWN, "O(S·K·d) + embedding",
               semantic.rare_topic_recall, weight=0.0, revision=3,
               description="share of rare-topic reference documents (the smallest topics, "
                           "~20% of documents) whose topic the window reaches"),
    MetricSpec("topic_entropy", "docs", "diversity", DOWN, "O(S·K·d) + embedding",
               semantic.topic_entropy, weight=1.0, revision=2,
               description="Shannon entropy (bits) of the documents' reference topics"),
    MetricSpec("semantic_mmd", "docs", "typicality", UP, "O(S²·d + S·R·d) + embedding",
               semantic.semantic_mmd, weight=0.0,
               description="unbiased MMD^2 (Gaussian kernel) to the reference embeddings"),
)

METRIC_NAMES = tuple(spec.name for spec in REGISTRY)
# the metric list with each definition's revision: what a band's columns mean
METRIC_SUITE = tuple(spec.name if spec.revision == 1 else f"{spec.name}@{spec.revision}"
                     for spec in REGISTRY)
BY_NAME = {spec.name: spec for spec in REGISTRY}


DOC_COLUMNS = np.array([i for i, s in enumerate(REGISTRY) if s.view == "docs"], dtype=np.intp)
BUDGET_COLUMNS = np.array([i for i, s in enumerate(REGISTRY) if s.view == "budget"],
                          dtype=np.intp)
# "docs" columns that read a fixed-size subsample of the window's documents (the semantic
# metrics: SuiteConfig.semantic_sample or .topic_sample documents), so their effective
# window size, for the finite-population correction of a band (metrics.bands), is
# min(documents, sample)
SUBSAMPLE_COLUMNS = np.array([i for i, s in enumerate(REGISTRY)
                              if s.fn.__module__ == semantic.__name__], dtype=np.intp)


def subsample_docs(suite: SuiteConfig) -> np.ndarray:
    """Per registry column, how many of a window's documents it reads at most (inf: all of
    them); what ``metrics.bands`` calibrates, interpolates and extends the columns by."""
    out = np.full(len(REGISTRY), np.inf)
    for i in SUBSAMPLE_COLUMNS:
        out[i] = getattr(suite, REGISTRY[i].fn.reads)
    return out


def compute_all(sample: Sample, ctx: Context, columns: np.ndarray | None = None) -> np.ndarray:
    """Values of every registry metric, in registry order (NaN where undefined).

    ``columns``: compute only these registry positions (the others stay NaN).
    """
    out = np.full(len(REGISTRY), np.nan)
    for i in range(len(REGISTRY)) if columns is None else columns:
        value = REGISTRY[i].fn(sample, ctx)
        if value is not None and np.isfinite(value):
            out[i] = value
    return out
