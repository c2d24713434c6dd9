"""Meaning, not only words: semantic diversity, topic coverage and drift from sentence embeddings.

Build time (:func:`build_semantic`): the reference's documents are embedded once (the
calibration documents all, since any of them can be drawn into a band replicate; the
profile part up to ``REF_CAP``), stored as float16, clustered into topics by spherical
k-means, each topic named by its top c-TF-IDF terms, and the smallest topics holding
~20% of the documents marked "rare". A baseline stores its documents' embeddings and their
shares of the reference topics.

Score time: the metrics read the embeddings of a fixed-size subsample of the window
(the first non-empty documents in the window's canonical order, which is an order by
content hash, hence a seeded random subsample): ``SuiteConfig.semantic_sample`` documents
for the pairwise metrics (similarity, Vendi, k-NN recall, MMD²: quadratic in the sample),
``SuiteConfig.topic_sample`` for the topic counts (linear; see "Why the topic metrics read
more documents" below). The window's first max(both) documents are embedded once and each
metric reads its prefix; a band replicate reads the same numbers of its randomly drawn
documents, so window and band are size-matched.

Every metric is a small pure function of unit vectors; cost in its docstring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from metrics.embedding import Embedder
from metrics.text import normalize_documents, tokenize_documents

REF_CAP = 1000  # profile-part documents embedded as the fixed reference set
RARE_SHARE = 0.20  # rare topics: the smallest ones holding about this share of documents
TOPIC_TERMS = 3  # terms in a topic's name
MIN_TOPICS, MAX_TOPICS = 32, 64


# ------------------------------------------------------------------ pure metric functions


def mean_pairwise_cosine(x: np.ndarray) -> float | None:
    """Mean cosine similarity over distinct pairs of unit vectors. O(n·d) via the sum vector:
    sum_{i != j} x_i·x_j = |sum x|² - n."""
    n = len(x)
    if n < 2:
        return None
    total = x.astype(np.float64).sum(axis=0)
    return float((total @ total - np.einsum("ij,ij->", x, x, dtype=np.float64)) / (n * (n - 1)))


def vendi_score(x: np.ndarray) -> float | None:
    """Vendi score of order 2 with the cosine kernel: 1 / sum(λ²) over the eigenvalues λ of
    K/n, K = X Xᵀ (Friedman & Dieng 2023 define the family; order q = 2 is the "cousin" of
    Pasarkar & Dieng 2024, the inverse Simpson index of the spectrum). The non-zero
    eigenvalues of X Xᵀ/n equal those of Xᵀ X/n (the dual form), and sum(λ²) is the squared
    Frobenius norm of that d×d matrix, so no eigendecomposition is needed: O(n·d²).
    Order 1 (Shannon) would need one, which measured 100-1000 ms per call when BLAS threads
    compete on 2 cores — 200 band replicates. Reads as an effective number of documents."""
    n = len(x)
    if n < 2:
        return None
    x = x.astype(np.float64)
    dual = (x.T @ x) / n
    trace = float(np.trace(dual))
    if trace <= 0:
        return None
    return float(trace**2 / (dual * dual).sum())


def knn_recall(ref: np.ndarray, x: np.ndarray, k: int) -> float | None:
    """Improved recall (Kynkäänniemi et al. 2019): share of reference vectors inside the
    manifold of the window, i.e. within the distance from some window vector to its k-th
    nearest window neighbour. Squared Euclidean distances of unit vectors: 2 - 2·cos.
    O(n² d + n·R·d) for n window and R reference vectors."""
    n = len(x)
    if n <= k or len(ref) == 0:
        return None
    d_xx = np.maximum(2.0 - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(d_xx, np.inf)
    radius = np.partition(d_xx, k - 1, axis=1)[:, k - 1]  # k-th neighbour, self excluded
    d_rx = np.maximum(2.0 - 2.0 * (ref @ x.T), 0.0)
    return float((d_rx <= radius[None, :]).any(axis=1).mean())


def topic_counts(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Documents per topic (nearest centroid by cosine). O(n·k·d)."""
    if len(x) == 0:
        return np.zeros(len(centroids), dtype=np.int64)
    return np.bincount(np.argmax(x @ centroids.T, axis=1), minlength=len(centroids))


def share_reached(counts: np.ndarray, topics: np.ndarray, shares: np.ndarray) -> float | None:
    """Share of the given topics' reference documents whose topic has at least one document
    in the window: sum of ``shares`` over reached topics / sum over all of ``topics``.

    Weighted by the reference shares, not a count of topics: a window of n documents misses
    a topic of share s by chance with probability ~exp(-n·s), so the count treats the chance
    absence of a tiny topic (common) like the absence of a large one (rare). The shortfall
    of the weighted share is sum(n·s)/n over missing topics, the summed expected counts of
    what is missing, which is what makes an absence unlikely. Measured on fortunes (3,000-
    document reference, 33 topics, a 256-document sample, every document of the two largest
    rare topics removed): -8 replicate sd against -5 for the count."""
    if len(topics) == 0 or counts.sum() == 0:
        return None
    total = float(shares[topics].sum())
    if total <= 0:
        return None
    return float(shares[topics][counts[topics] > 0].sum() / total)


def entropy_bits(counts: np.ndarray) -> float | None:
    """Shannon entropy (bits) of a count vector."""
    total = counts.sum()
    if total == 0:
        return None
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, gamma: float, k_yy_mean: float) -> float | None:
    """Unbiased MMD² with the Gaussian kernel exp(-gamma·|a-b|²) (Gretton et al. 2012, eq. 3);
    ``k_yy_mean`` is the precomputed off-diagonal mean of the fixed reference kernel.
    O(n² d + n·R·d)."""
    n = len(x)
    if n < 2 or len(y) == 0:
        return None
    k_xx = np.exp(-gamma * np.maximum(2.0 - 2.0 * (x @ x.T), 0.0))
    xx = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    xy = np.exp(-gamma * np.maximum(2.0 - 2.0 * (x @ y.T), 0.0)).mean()
    return float(xx + k_yy_mean - 2.0 * xy)


# ------------------------------------------------------------------ k-means and topic names


def topic_count_for(n_docs: int) -> int:
    """k by size: about sqrt(n/2) topics (BERTopic-like granularity), within 32-64, and at
    least ~5 documents per topic on small references."""
    k = round(math.sqrt(n_docs / 2))
    return int(max(2, min(max(MIN_TOPICS, min(k, MAX_TOPICS)), n_docs // 5)))


def spherical_kmeans(x: np.ndarray, k: int, seed: int, iterations: int = 40,
                     restarts: int = 4) -> np.ndarray:
    """Unit centroids by spherical k-means (cosine), k-means++ seeding (Arthur & Vassilvitskii
    2007); the best of ``restarts`` runs by total cosine to the nearest centroid (one
    unlucky seeding can put two seeds in one cluster, as scikit-learn's n_init guards).
    O(restarts · iterations · n · k · d)."""
    x = x.astype(np.float32)
    best, best_fit = None, -np.inf
    for run in range(restarts):
        centroids = _kmeans_once(x, k, np.random.default_rng([seed, 0x70C, run]), iterations)
        fit = float((x @ centroids.T).max(axis=1).sum())
        if fit > best_fit:
            best, best_fit = centroids, fit
    return best


def _kmeans_once(x: np.ndarray, k: int, rng: np.random.Generator, iterations: int) -> np.ndarray:
    centroids = np.empty((k, x.shape[1]), dtype=np.float32)
    centroids[0] = x[rng.integers(len(x))]
    dist = np.maximum(2.0 - 2.0 * (x @ centroids[0]), 0.0).astype(np.float64)
    for j in range(1, k):
        total = dist.sum()
        p = dist / total if total > 0 else np.full(len(x), 1.0 / len(x))
        centroids[j] = x[rng.choice(len(x), p=p)]
        dist = np.minimum(dist, np.maximum(2.0 - 2.0 * (x @ centroids[j]), 0.0))
    labels = np.full(len(x), -1)
    for _ in range(iterations):
        new = np.argmax(x @ centroids.T, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = x[labels == j]
            if len(members) == 0:  # an empty topic restarts at the worst-fitting document
                worst = int(np.argmin((x * centroids[labels]).sum(axis=1)))
                centroids[j] = x[worst]
                continue
            c = members.sum(axis=0)
            centroids[j] = c / max(float(np.linalg.norm(c)), 1e-12)
    return centroids


STOP_TOP = 150  # the most frequent words (at most 1% of the vocabulary) name no topic


def ctfidf_names(
    labels: np.ndarray, doc_tokens: Sequence[Sequence[str]], k: int, terms: int = TOPIC_TERMS
) -> list[str]:
    """Topic names from class-based TF-IDF (Grootendorst 2022, BERTopic):
    W(t, c) = tf(t, c) · log(1 + A / f(t)), A = mean words per class, f(t) = count of t in
    all classes. The ``terms`` best words of a topic, joined by spaces. Like BERTopic with a
    stop-word list, function words are left out: here the ``STOP_TOP`` most frequent words
    of the documents themselves (no language-specific list; at most 1% of their
    vocabulary), and words seen in one
    document of the topic only (a single document's quirk does not name a topic)."""
    vocab: dict[str, int] = {}
    rows, cols, docs = [], [], []
    for d, (label, tokens) in enumerate(zip(labels, doc_tokens)):
        for t in tokens:
            if len(t) > 1 and not t.isdigit():
                rows.append(int(label))
                cols.append(vocab.setdefault(t, len(vocab)))
                docs.append(d)
    if not vocab:
        return [f"topic {j}" for j in range(k)]
    rows_a, cols_a = np.asarray(rows), np.asarray(cols)
    tf = np.zeros((k, len(vocab)))
    np.add.at(tf, (rows_a, cols_a), 1.0)
    pairs = np.unique(np.stack([rows_a, cols_a, np.asarray(docs)]), axis=1)
    doc_freq = np.zeros((k, len(vocab)))
    np.add.at(doc_freq, (pairs[0], pairs[1]), 1.0)
    freq = tf.sum(axis=0)
    avg = tf.sum() / k
    weight = tf * np.log1p(avg / np.maximum(freq, 1.0))
    weight[:, np.argsort(-freq, kind="stable")[: min(STOP_TOP, len(vocab) // 100)]] = 0.0
    weight[doc_freq < 2] = 0.0
    words = np.asarray(list(vocab), dtype=object)
    names = []
    for j in range(k):
        best = np.argsort(-weight[j], kind="stable")[:terms]
        best = [words[i] for i in best if weight[j, i] > 0]
        names.append(" ".join(best) if best else f"topic {j}")
    return names


# ------------------------------------------------------------------ profile side


@dataclass(frozen=True)
class SemanticProfile:
    """The semantic part of a profile.

    pool: float16 embeddings of the band pool, one row per pool document (zeros for empty
      documents). Reference only: ref, the fixed reference set (float16); centroids (unit,
      float32); names; rare (bool per topic); gamma and k_yy_mean for MMD².
    shares: share of each reference topic among this profile's documents.
    """

    identity: str
    pool: np.ndarray
    shares: np.ndarray
    ref: np.ndarray | None = None
    centroids: np.ndarray | None = None
    names: tuple[str, ...] = ()
    rare: np.ndarray | None = None
    gamma: float = 1.0
    k_yy_mean: float = 0.0

    ARRAYS = ("pool", "shares", "ref", "centroids", "rare")

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays = {"s_" + a: getattr(self, a) for a in self.ARRAYS if getattr(self, a) is not None}
        meta = {"identity": self.identity, "names": list(self.names), "gamma": self.gamma,
                "k_yy_mean": self.k_yy_mean}
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict) -> SemanticProfile:
        return cls(
            identity=meta["identity"],
            names=tuple(meta.get("names", ())),
            gamma=float(meta.get("gamma", 1.0)),
            k_yy_mean=float(meta.get("k_yy_mean", 0.0)),
            **{a: arrays.get("s_" + a) for a in cls.ARRAYS},
        )


def corpus_texts(corpus) -> list[str]:
    """Each document of a :class:`~metrics.sample.Corpus` as its tokens joined by spaces: the
    text windows and band pools are both embedded from, so they are embedded alike."""
    words = corpus.words()
    off = corpus.offsets
    return [" ".join(words[corpus.index[a:b]].tolist()) for a, b in pairwise(off)]


def embed_corpus(corpus, embedder: Embedder) -> np.ndarray:
    """float32 unit embeddings of every document (zeros for empty ones); each distinct
    document is embedded once."""
    texts = corpus_texts(corpus)
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    keep = [i for i, t in enumerate(texts) if t]
    unique: dict[str, int] = {}
    for i in keep:
        unique.setdefault(texts[i], len(unique))
    if unique:
        vectors = embedder.embed(list(unique))
        out[keep] = vectors[[unique[texts[i]] for i in keep]]
    return out


def build_semantic(pool, prof, embedder: Embedder, seed: int) -> SemanticProfile:
    """The reference side: pool embeddings, the reference set, topics, rare topics.

    ``pool`` and ``prof`` are the calibration and profile-part corpora. Cost: embedding
    len(pool) + min(len(prof), REF_CAP) documents dominates (~100 documents/s per core).
    """
    rng = np.random.default_rng([seed, 0x5EA])
    pool_vec = embed_corpus(pool, embedder)
    pick = np.sort(rng.permutation(prof.n_docs)[:REF_CAP])
    ref_corpus = prof.take(pick)
    ref_vec = embed_corpus(ref_corpus, embedder)
    ref_vec = ref_vec[ref_corpus.lengths > 0]
    pool_ok = pool.lengths > 0
    both = np.vstack([pool_vec[pool_ok], ref_vec])
    k = topic_count_for(len(both))
    centroids = spherical_kmeans(both, k, seed)
    labels = np.argmax(both @ centroids.T, axis=1)
    texts = [t.split() for t, ok in zip(corpus_texts(pool), pool_ok) if ok]
    texts += [t.split() for t in corpus_texts(ref_corpus) if t]
    names = ctfidf_names(labels, texts, k)
    counts = np.bincount(labels, minlength=k)
    shares = counts / max(counts.sum(), 1)
    rare = np.zeros(k, dtype=bool)
    order = np.argsort(counts, kind="stable")
    cum = np.cumsum(shares[order])
    rare[order[: max(1, int(np.searchsorted(cum, RARE_SHARE, side="right")))]] = True
    # MMD bandwidth: the median heuristic on the reference set (Gretton et al. 2012)
    d2 = np.maximum(2.0 - 2.0 * (ref_vec @ ref_vec.T), 0.0)
    off = ~np.eye(len(ref_vec), dtype=bool)
    median = float(np.median(d2[off])) if off.any() else 1.0
    gamma = 1.0 / max(median, 1e-6)
    k_yy = np.exp(-gamma * d2)
    k_yy_mean = float(k_yy[off].mean()) if off.any() else 0.0
    return SemanticProfile(
        identity=embedder.identity,
        pool=pool_vec.astype(np.float16),
        shares=shares,
        ref=ref_vec.astype(np.float16),
        centroids=centroids.astype(np.float32),
        names=tuple(names),
        rare=rare,
        gamma=gamma,
        k_yy_mean=k_yy_mean,
    )


def build_baseline_semantic(pool, reference: SemanticProfile, embedder: Embedder) -> SemanticProfile:
    """A baseline's side: its documents' embeddings and their shares of the reference topics."""
    vec = embed_corpus(pool, embedder)
    counts = topic_counts(vec[pool.lengths > 0], reference.centroids)
    return SemanticProfile(
        identity=embedder.identity,
        pool=vec.astype(np.float16),
        shares=counts / max(counts.sum(), 1),
    )


# ------------------------------------------------------------------ score side


@dataclass(frozen=True)
class SemanticContext:
    """What the semantic metrics read besides the window: the embedder (for windows), the
    reference set, topics and their rare mask, the MMD constants, the suite parameters."""

    embedder: Embedder | None  # None: windows cannot be embedded (bands still can)
    ref: np.ndarray  # float32 unit vectors
    centroids: np.ndarray
    rare_topics: np.ndarray  # indices
    all_topics: np.ndarray
    shares: np.ndarray  # the reference's topic shares (weights of the topic recalls)
    gamma: float
    k_yy_mean: float
    semantic_sample: int  # documents the pairwise metrics read (SuiteConfig.semantic_sample)
    knn: int
    topic_sample: int = 512  # documents the topic counts read (SuiteConfig.topic_sample)

    @property
    def embed_docs(self) -> int:
        """How many of a window's documents are embedded: what the widest metric reads."""
        return max(self.semantic_sample, self.topic_sample)

    @classmethod
    def of(cls, profile: SemanticProfile, embedder: Embedder | None, sample_size: int,
           knn: int, topic_sample: int = 512) -> SemanticContext:
        return cls(
            embedder=embedder,
            ref=profile.ref.astype(np.float32),
            centroids=profile.centroids,
            rare_topics=np.flatnonzero(profile.rare),
            all_topics=np.arange(len(profile.centroids)),
            shares=np.asarray(profile.shares, dtype=np.float64),
            gamma=profile.gamma,
            k_yy_mean=profile.k_yy_mean,
            semantic_sample=sample_size,
            knn=knn,
            topic_sample=topic_sample,
        )


def window_vectors(sample, sem: SemanticContext) -> np.ndarray:
    """Embeddings of the sample's first ``sem.embed_docs`` non-empty documents (memoised on
    the sample; a band replicate has them set from the stored pool embeddings); each metric
    reads a prefix."""

    def compute() -> np.ndarray:
        if sem.embedder is None:
            return np.zeros((0, 0), dtype=np.float32)
        docs = sample.docs
        nonempty = np.flatnonzero(docs.lengths > 0)[: sem.embed_docs]
        return embed_corpus(docs.take(nonempty), sem.embedder)

    return sample.memo("embeddings", compute)


def band_vectors(pool_vectors: np.ndarray, pool_lengths: np.ndarray, docs_sel: np.ndarray,
                 sample_size: int) -> np.ndarray:
    """A band replicate's embeddings: its first ``sample_size`` non-empty drawn documents."""
    chosen = docs_sel[pool_lengths[docs_sel] > 0][:sample_size]
    return pool_vectors[chosen].astype(np.float32)


# Why the topic metrics read more documents (``SuiteConfig.topic_sample``). A window misses
# a topic of share s by chance with probability ~exp(-n·s): absence is evidence only when
# n·s is large. Measured on fortunes (`python -m benchmarks.semantic --topic-sweep`:
# 8,000-document reference, 46 topics; 2,000 replicates of the 3,200-document calibration
# pool against 400 fresh samples and 400 with every document of the two largest rare
# topics, 1.9% and 1.7%, removed; share below the replicates' 1% quantile):
#
#   documents read                 256     320     384     448     512
#   topic_recall        fresh      2.5%    1.0%    2.2%    0.5%    0.2%
#                       planted    37%     100%    100%    100%    100%
#   rare_topic_recall   fresh      1.2%    1.8%    1.8%    2.0%    2.5%
#                       planted    100%    100%    100%    100%    100%
#
# The planted topics' expected counts are ~4.8 and ~4.3 at 256 documents and twice that at
# 512; the other topics' chance misses are the noise. In the product (calibrated bands of
# 200 replicates, 500-document windows, `--planted 10`) both metrics left the band in 3/10
# and 5/10 planted windows at 256 and in 10/10 at 512, intact windows 0/5 in both. So the
# topic counts read up to 512 documents, the pairwise metrics 256: embedding a 500-document
# window then takes ~2.9 s on one thread instead of ~1.6 s (`--cost`).


def _metric(fn, reads: str = "semantic_sample"):
    """A registry metric over the first ``SuiteConfig.<reads>`` embedded documents."""
    def wrapped(sample, ctx) -> float | None:
        sem = getattr(ctx, "semantic", None)
        if sem is None:
            return None
        x = window_vectors(sample, sem)[: getattr(sem, reads)]
        value = fn(x, sem, sample)
        return None if value is None or not math.isfinite(value) else float(value)

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    wrapped.reads = reads  # the SuiteConfig field: how many documents (metrics.registry)
    return wrapped


def _topic_metric(fn):
    return _metric(fn, "topic_sample")


def _topics(x: np.ndarray, sem: SemanticContext, sample) -> np.ndarray:
    return sample.memo("topic_counts", lambda: topic_counts(x, sem.centroids))


@_metric
def semantic_similarity(x, sem, sample):
    return mean_pairwise_cosine(x)


@_metric
def semantic_vendi(x, sem, sample):
    return vendi_score(x)


@_metric
def semantic_recall(x, sem, sample):
    return knn_recall(sem.ref, x, sem.knn)


@_topic_metric
def topic_recall(x, sem, sample):
    return share_reached(_topics(x, sem, sample), sem.all_topics, sem.shares)


@_topic_metric
def rare_topic_recall(x, sem, sample):
    return share_reached(_topics(x, sem, sample), sem.rare_topics, sem.shares)


@_topic_metric
def topic_entropy(x, sem, sample):
    return entropy_bits(_topics(x, sem, sample))


@_metric
def semantic_mmd(x, sem, sample):
    return mmd2_unbiased(x, sem.ref, sem.gamma, sem.k_yy_mean)


# ------------------------------------------------------------------ evidence

# a topic is called vanished when the window has none of its documents although the
# expected count (share × documents embedded) is at least this: P(0 | Poisson(4)) = 1.8%,
# the rule the vanished words follow (metrics.evidence, min_surprise)
VANISHED_MIN_EXPECTED = 4.0


def vanished_topics(counts: np.ndarray, shares: np.ndarray, names: Sequence[str],
                    against: str) -> list[dict]:
    """Topics the window no longer reaches although they were common enough that their
    absence is unlikely by chance; largest expected count first."""
    n = int(counts.sum())
    out = []
    for j in np.argsort(-shares, kind="stable"):
        expected = float(shares[j] * n)
        if counts[j] == 0 and expected >= VANISHED_MIN_EXPECTED:
            out.append({"topic": names[j], f"{against}_share": round(float(shares[j]), 4),
                        "expected": round(expected, 1), "observed": 0})
    return out


def score_fields(sample, reference, baseline=None) -> dict:
    """The Score JSON's semantic fields for a scored window: ``"semantic":
    "unavailable (reason)"`` when windows cannot be embedded, and ``vanished_topics``
    (against the baseline's topic shares when it has them, else the reference's)."""
    ctx = reference.context()
    out: dict = {}
    if ctx.semantic_unavailable is not None:
        out["semantic"] = f"unavailable ({ctx.semantic_unavailable})"
    sem, ref = ctx.semantic, reference.semantic
    topics: list[dict] = []
    if sem is not None and sem.embedder is not None:
        counts = sample.memo("topic_counts", lambda: topic_counts(
            window_vectors(sample, sem)[: sem.topic_sample], sem.centroids))
        base = None if baseline is None else baseline.semantic
        if base is not None and base.identity == ref.identity:
            topics = vanished_topics(counts, base.shares, ref.names, "baseline")
        else:
            topics = vanished_topics(counts, ref.shares, ref.names, "reference")
    out["vanished_topics"] = topics
    return out


# ------------------------------------------------------------------ rare-topic probes

# a probe topic's "home": the fewest reference topics, most common first, that hold at least
# this share of the baseline's answers to it (one topic when the answers agree; a probe topic
# whose answers straddle two reference topics keeps both)
PROBE_HOME_SHARE = 0.5
PROBE_LANDED_SHOWN = 3


def probe_landing(vectors: Mapping[str, np.ndarray], centroids: np.ndarray, names: Sequence[str],
                  baseline: Mapping[str, np.ndarray] | None = None) -> list[dict]:
    """Per probe topic (a prober's ``attributes.topic``): where its answers land among the
    reference topics (nearest centroid by cosine, as :func:`topic_counts`), and how many
    still land in the topics the baseline's answers to the same probe topic landed in.

    ``vectors`` / ``baseline``: probe topic -> unit embeddings of its answers (window /
    baseline). Without baseline answers for a probe topic, ``home_topics`` and the on-topic
    counts are None: the landing alone is reported. Worst share on topic first.
    Cost: O((n + m)·k·d) for n window and m baseline answers, k topics."""
    out = []
    for probe in sorted(vectors):
        x = vectors[probe]
        if len(x) == 0:
            continue
        counts = topic_counts(x, centroids)
        entry: dict = {
            "probe_topic": probe,
            "answers": len(x),
            "landed": [{"topic": names[j], "answers": int(counts[j])}
                       for j in np.argsort(-counts, kind="stable")[:PROBE_LANDED_SHOWN]
                       if counts[j] > 0],
            "home_topics": None, "on_topic": None, "on_topic_share": None,
            "baseline_answers": 0, "baseline_on_topic": None, "baseline_on_topic_share": None,
        }
        base = None if baseline is None else baseline.get(probe)
        if base is not None and len(base) > 0:
            base_counts = topic_counts(base, centroids)
            order = np.argsort(-base_counts, kind="stable")
            cum = np.cumsum(base_counts[order]) / base_counts.sum()
            home = order[: int(np.searchsorted(cum, PROBE_HOME_SHARE - 1e-12)) + 1]
            on, base_on = int(counts[home].sum()), int(base_counts[home].sum())
            entry.update(
                home_topics=[names[j] for j in home], on_topic=on,
                on_topic_share=round(on / len(x), 4), baseline_answers=len(base),
                baseline_on_topic=base_on, baseline_on_topic_share=round(base_on / len(base), 4),
            )
        out.append(entry)
    out.sort(key=lambda e: (e["on_topic_share"] is None, e["on_topic_share"] or 0.0))
    return out


def describe_probe(entry: dict) -> str:
    """One line for the on-call: "linguistics probes: 2/10 answers still on topic
    (baseline 9/10)"."""
    if entry["on_topic"] is None:
        where = ", ".join(f"{t['topic']} ({t['answers']})" for t in entry["landed"])
        return (f"{entry['probe_topic']} probes: {entry['answers']} answers, landing in "
                f"{where or 'no topic'} (no baseline answers to compare)")
    return (f"{entry['probe_topic']} probes: {entry['on_topic']}/{entry['answers']} answers "
            f"still on topic (baseline {entry['baseline_on_topic']}/"
            f"{entry['baseline_answers']})")


def embed_probe_answers(answers: Sequence[tuple[str, str]], reference,
                        embedder: Embedder | None = None) -> dict[str, np.ndarray] | None:
    """(probe topic, answer text) pairs -> probe topic -> unit embeddings, tokenised and
    embedded exactly as window documents are (the reference's tokenizer, tokens joined by
    spaces). None when no model can embed them for this reference. Empty answers are left
    out (they land nowhere)."""
    if embedder is None:
        sem = reference.context().semantic
        embedder = None if sem is None else sem.embedder
    if embedder is None or not answers:
        return None if embedder is None else {}
    texts = [" ".join(t) for t in tokenize_documents(
        normalize_documents([text for _, text in answers]), reference.config.tokenizer)]
    keep = [i for i, t in enumerate(texts) if t]
    unique: dict[str, int] = {}
    for i in keep:
        unique.setdefault(texts[i], len(unique))
    vectors = embedder.embed(list(unique)) if unique else np.zeros((0, embedder.dim))
    out: dict[str, list[np.ndarray]] = {}
    for i in keep:
        out.setdefault(answers[i][0], []).append(vectors[unique[texts[i]]])
    return {topic: np.vstack(rows).astype(np.float32) for topic, rows in out.items()}


def probe_topics(reference, window: Sequence[tuple[str, str]],
                 baseline: Sequence[tuple[str, str]] = ()) -> list[dict] | None:
    """The evidence's ``probe_topics``: :func:`probe_landing` of a window's rare-topic probe
    answers against the baseline's answers to the same probes (``(probe topic, text)``
    pairs). None when the window has no such answers or they cannot be embedded."""
    if not window or reference.semantic is None or reference.semantic.centroids is None:
        return None
    vectors = embed_probe_answers(window, reference)
    if not vectors:
        return None
    base = embed_probe_answers(baseline, reference) if baseline else None
    sem = reference.semantic
    entries = probe_landing(vectors, sem.centroids, sem.names, base)
    for entry in entries:
        entry["summary"] = describe_probe(entry)
    return entries
