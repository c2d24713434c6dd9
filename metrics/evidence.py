"""Evidence for a scored window: what changed, not only how much.

Four bounded lists, computed from the same :class:`~metrics.sample.Sample` the metric suite
read (its n-gram groups, MinHash signatures are reused), against a *background*: the
baseline's documents when there is a baseline, else the reference's calibration documents.

* ``overrepresented`` — n-grams (1..4) whose share rose, by the log-odds ratio with an
  informative Dirichlet prior (Monroe, Colaresi & Quinn 2008, "Fightin' Words", eq. 16-22),
  with a document-level (cluster-robust) variance and Benjamini–Hochberg adjustment;
* ``vanished`` — less common words and bigrams the background used that the window no
  longer does, by how surprising their absence is at this window's size;
* ``duplicates`` — the largest near-duplicate groups (MinHash LSH, the suite's own
  signatures and threshold);
* ``examples`` — the most and least typical documents under the reference LM.

Documents, not tokens, are the independent units everywhere: a word repeated ten times in
one document is one piece of evidence, not ten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# scipy.special, not scipy.stats: importing scipy.stats costs ~0.55 s of CPU in every
# process, more than the rest of a repeated offline score; the two tail functions used
# here are special functions
from scipy.special import betaincc, log_ndtr, ndtri_exp

from metrics.kernels import doc_ngram_groups, near_duplicate_pairs
from metrics.lm import tail_band
from metrics.profile import Profile
from metrics.registry import Context, minhash_of
from metrics.sample import Corpus, Sample
from metrics.text import ngram_keys

QUOTING_LISTS = ("duplicates", "examples")  # the lists that quote sample text


@dataclass(frozen=True)
class EvidenceConfig:
    """Sizes and thresholds of the evidence lists.

    max_n: longest n-gram tested for ``overrepresented`` (4).
    top_overrepresented / min_z (20 / 3.0): at most 20 entries, each with an adjusted z of
      at least 3 (one-sided, Benjamini–Hochberg over every n-gram of the window).
    prior_weight (1.0): strength of the Dirichlet prior in windows' worth of tokens; the
      prior is the pooled (window + background) n-gram distribution, so an n-gram seen a
      handful of times in the window and never in the background is shrunk towards "no
      change" instead of getting an infinite log-odds ratio.
    head_mass (0.5): words and bigrams among the most frequent in the reference, together
      carrying this share of its tokens ("the", "of the"), are never listed as vanished:
      they cannot vanish without the whole text degenerating, which the metrics show. The
      suite's tail band (hapaxes of the reference) is too rare for absence in one window
      to mean anything, so "vanished" looks at everything below the head.
    min_surprise (4.0): a term is listed as vanished when observing this few documents
      with it has Poisson probability <= e^-4 (1.8%) at the background's rate, and at
      most a quarter of the expected documents still use it. For a term absent from the
      window the surprise is its expected document count.
    top_vanished (30), top_duplicates (5), typical_examples (3 of each side).
    quote_chars (200): quoted texts are cut to this many characters.
    min_example_tokens (5): shorter documents are not shown as (a)typical examples: the
      NLL per token of a two-word document says little about the stream.
    candidates (400): the most significant n-grams considered before sub-n-grams explained
      by a longer listed n-gram are dropped.
    min_documents (20) / min_document_frequency (3): ``overrepresented`` needs a window of
      at least 20 documents and an n-gram in at least 3 of them: the variance comes from
      the spread across documents, which a handful of documents cannot estimate.
    """

    max_n: int = 4
    top_overrepresented: int = 20
    min_z: float = 3.0
    prior_weight: float = 1.0
    head_mass: float = 0.5
    min_surprise: float = 4.0
    top_vanished: int = 30
    top_duplicates: int = 5
    typical_examples: int = 3
    quote_chars: int = 200
    min_example_tokens: int = 5
    candidates: int = 400
    min_documents: int = 20
    min_document_frequency: int = 3


# ------------------------------------------------------------------ n-gram tables


@dataclass(frozen=True)
class NgramTable:
    """Per distinct n-gram of a corpus: total count, sum of squared per-document counts, and
    number of documents containing it; keys sorted."""

    keys: np.ndarray
    count: np.ndarray
    sumsq: np.ndarray
    df: np.ndarray
    total: int  # n-gram occurrences of this order

    @classmethod
    def from_groups(cls, groups: tuple[np.ndarray, ...]) -> NgramTable:
        """From :func:`metrics.kernels.doc_ngram_groups` (key, document, count). O(G)."""
        g_key, _, c = groups
        if len(g_key) == 0:
            empty = np.empty(0, np.int64)
            return cls(np.empty(0, np.uint64), empty, empty, empty, 0)
        starts = np.flatnonzero(np.r_[True, g_key[1:] != g_key[:-1]])
        c = c.astype(np.int64)
        count = np.add.reduceat(c, starts)
        return cls(
            g_key[starts], count, np.add.reduceat(c * c, starts),
            np.diff(np.append(starts, len(g_key))), int(count.sum()),
        )

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(count, sumsq, df) of each key; zeros for keys not in the table. O(K log N)."""
        if len(self.keys) == 0:
            z = np.zeros(len(keys), np.int64)
            return z, z, z
        idx = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        found = self.keys[idx] == keys
        return tuple(np.where(found, a[idx], 0) for a in (self.count, self.sumsq, self.df))


@dataclass(frozen=True)
class Background:
    """What the window is compared with, derived once per profile (see Profile.derived)."""

    corpus: Corpus
    tokens: int
    tables: tuple[NgramTable, ...]  # orders 1..max_n
    # vanishing candidates: unigram and bigram keys below the reference head, with the
    # position of their first occurrence in ``corpus`` (to spell them)
    cand_keys: tuple[np.ndarray, np.ndarray]
    cand_df: tuple[np.ndarray, np.ndarray]
    cand_pos: tuple[np.ndarray, np.ndarray]


def _groups_of(ids: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    return doc_ngram_groups(*ngram_keys(ids, offsets, n))


def _positions(offsets: np.ndarray, n: int) -> np.ndarray:
    """Start position of every n-gram :func:`ngram_keys` returns, in the same order."""
    total = int(offsets[-1])
    if total < n:
        return np.empty(0, np.int64)
    lengths = np.diff(offsets)
    doc_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    m = total - n + 1
    return np.flatnonzero(doc_of[:m] == doc_of[n - 1:])


def _first_positions(keys: np.ndarray, positions: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Position of the first occurrence of each wanted key (all must occur). O(K log K)."""
    order = np.argsort(keys, kind="stable")  # stable: the first of equal keys is the earliest
    sk = keys[order]
    idx = np.searchsorted(sk, wanted)
    return positions[order[idx]]


def _head(keys: np.ndarray, counts: np.ndarray, head_mass: float) -> np.ndarray:
    """Sorted keys of the most frequent types carrying ``head_mass`` of the tokens."""
    if len(keys) == 0:
        return keys
    return np.sort(keys[~tail_band(counts, 1.0 - head_mass)])


def _isin_sorted(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    idx = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[idx] == keys


def build_background(profile: Profile, reference: Profile, config: EvidenceConfig) -> Background:
    """The background of a profile (its band pool). O(max_n·T log T) in the pool's tokens."""
    pool = profile.pool
    ids = pool.vocab_ids[pool.index]
    tables = tuple(
        NgramTable.from_groups(_groups_of(ids, pool.offsets, n))
        for n in range(1, config.max_n + 1)
    )
    model = reference.model
    assert model is not None
    heads = (
        _head(model.uni_ids, model.uni_counts, config.head_mass),
        _head(model.bi_keys, model.bi_counts, config.head_mass),
    )
    cand_keys, cand_df, cand_pos = [], [], []
    for n, head in zip((1, 2), heads):
        table = tables[n - 1]
        keep = ~_isin_sorted(head, table.keys)
        keys = table.keys[keep]
        all_keys, _ = ngram_keys(ids, pool.offsets, n)
        cand_keys.append(keys)
        cand_df.append(table.df[keep])
        cand_pos.append(_first_positions(all_keys, _positions(pool.offsets, n), keys))
    return Background(
        pool, int(pool.offsets[-1]), tables, tuple(cand_keys), tuple(cand_df), tuple(cand_pos)
    )


def background_of(profile: Profile, reference: Profile, config: EvidenceConfig) -> Background:
    """:func:`build_background`, memoised on the profile."""
    name = ("evidence-background", reference.sha256, config.max_n, config.head_mass)
    return profile.derived(name, lambda: build_background(profile, reference, config))


def _spell(corpus: Corpus, pos: int, n: int) -> str:
    return " ".join(corpus.words()[corpus.index[pos : pos + n]].tolist())


# ------------------------------------------------------------------ overrepresented


def log_odds_z(
    y_w: np.ndarray, s_w: np.ndarray, n_w: int,
    y_b: np.ndarray, s_b: np.ndarray, n_b: int,
    prior_weight: float = 1.0,
) -> np.ndarray:
    """z of the log-odds ratio of each n-gram, window against background. O(K).

    Monroe, Colaresi & Quinn (2008) eq. 16-22: δ = log((y_w+α)/(n_w+α0-y_w-α)) -
    log((y_b+α)/(n_b+α0-y_b-α)), α = α0·(pooled share), α0 = prior_weight·n_w. Their
    variance 1/(y_w+α) + 1/(y_b+α) treats every token as independent; here the count of
    each side is a sum over independent documents, so its variance is the cluster-robust
    Σ_d c_d² (Cameron & Miller 2015), and by the delta method var(log(y+α)) ≈
    (Σ_d c_d² + α)/(y+α)². Without repeats inside documents (Σ c² = y) this is exactly
    Monroe's variance; a word one document repeats ten times counts like one occurrence.
    y: counts, s: sums of squared per-document counts, n: totals of the order.
    """
    a0 = prior_weight * n_w
    alpha = a0 * (y_w + y_b) / max(n_w + n_b, 1)
    alpha = np.maximum(alpha, 1e-9)
    yw, yb = y_w + alpha, y_b + alpha
    delta = np.log(yw / np.maximum(n_w + a0 - yw, 1e-9)) - np.log(
        yb / np.maximum(n_b + a0 - yb, 1e-9)
    )
    var = (s_w + alpha) / yw**2 + (s_b + alpha) / yb**2
    return delta / np.sqrt(var)


def bh_adjusted_z(z: np.ndarray) -> np.ndarray:
    """One-sided z scores adjusted for testing them all (Benjamini & Hochberg 1995).

    p = P(Z >= z); q = BH adjusted p (step-up, monotone); returned as the z whose upper
    tail is q, so an adjusted z >= 3 means q <= 0.00135 whatever the number of tests.
    Log scale throughout: the p-values of a collapsed window underflow. O(m log m).
    """
    m = len(z)
    if m == 0:
        return z
    log_p = log_ndtr(-z)  # log P(Z >= z), as scipy.stats.norm.logsf computes it
    order = np.argsort(log_p)
    ranked = log_p[order] + np.log(m) - np.log(np.arange(1, m + 1))
    log_q = np.minimum.accumulate(ranked[::-1])[::-1]
    log_q = np.minimum(log_q, 0.0)
    out = np.empty(m)
    out[order] = -ndtri_exp(log_q)
    return np.clip(out, -40.0, 40.0)


def overrepresented(
    sample: Sample, background: Background, config: EvidenceConfig
) -> list[dict]:
    """Top n-grams whose share rose, each ``{ngram, window_per_10k, baseline_per_10k, z}``.

    Entries have adjusted z >= ``config.min_z``. A shorter n-gram inside a longer listed
    one is left out when the longer one accounts for at least half of its excess over the
    background rate ("as an ai" listed, "an ai" not). O(max_n·T log T).
    """
    w_tokens = int(sample.docs.offsets[-1])
    if w_tokens == 0 or background.tokens == 0 or sample.n_docs < config.min_documents:
        return []
    zs, orders, keys, y_ws, y_bs, dfs = [], [], [], [], [], []
    for n in range(1, config.max_n + 1):
        table = NgramTable.from_groups(
            sample.memo(("groups", n), lambda n=n: doc_ngram_groups(*sample.ngrams("docs", n)))
        )
        if table.total == 0:
            continue
        bg = background.tables[n - 1]
        y_b, s_b, _ = bg.lookup(table.keys)
        zs.append(log_odds_z(table.count, table.sumsq, table.total, y_b, s_b, bg.total,
                             config.prior_weight))
        orders.append(np.full(len(table.keys), n))
        keys.append(table.keys)
        y_ws.append(table.count)
        y_bs.append(y_b)
        dfs.append(table.df)
    if not zs:
        return []
    z_raw = np.concatenate(zs)
    z_adj = bh_adjusted_z(z_raw)  # every n-gram was tested, listed or not
    sig = np.flatnonzero((z_adj >= config.min_z)
                         & (np.concatenate(dfs) >= config.min_document_frequency))
    if len(sig) == 0:
        return []
    # strongest first; among equals the longer n-gram (the phrase, not its parts)
    order_all, key_all = np.concatenate(orders), np.concatenate(keys)
    y_w_all, y_b_all = np.concatenate(y_ws), np.concatenate(y_bs)
    sig = sig[np.lexsort((-order_all[sig], -z_raw[sig]))][: config.candidates]
    excess = y_w_all[sig] - (w_tokens / background.tokens) * y_b_all[sig]
    pos = np.empty(len(sig), np.int64)
    for n in np.unique(order_all[sig]):
        at = np.flatnonzero(order_all[sig] == n)
        keys_n, _ = sample.ngrams("docs", int(n))
        pos[at] = _first_positions(keys_n, _positions(sample.docs.offsets, int(n)),
                                   key_all[sig[at]])
    grams = [
        tuple(_spell(sample.docs, int(p), int(order_all[i])).split(" "))
        for p, i in zip(pos, sig)
    ]
    # how much of each n-gram's excess its longer significant super-n-grams explain
    explained: dict[tuple[str, ...], float] = {}
    for g, e in zip(grams, excess):
        for length in range(1, len(g)):
            for start in range(len(g) - length + 1):
                sub = g[start : start + length]
                explained[sub] = max(explained.get(sub, 0.0), float(e))
    out = []
    for g, e, i in zip(grams, excess, sig):
        if explained.get(g, 0.0) >= 0.5 * e:
            continue
        out.append({
            "ngram": " ".join(g),
            "window_per_10k": round(float(y_w_all[i]) / w_tokens * 1e4, 2),
            "baseline_per_10k": round(float(y_b_all[i]) / background.tokens * 1e4, 2),
            "z": round(float(z_adj[i]), 2),
        })
        if len(out) == config.top_overrepresented:
            break
    return out


# ------------------------------------------------------------------ vanished


def vanishing_candidates(background: Background, window_tokens: int) -> list[dict]:
    """Every candidate term with its expected document count in a window of this many
    tokens: ``{term, expected}`` (unigrams, then bigrams). For tests and inspection."""
    out = []
    scale = window_tokens / max(background.tokens, 1)
    for n in (1, 2):
        for pos, df in zip(background.cand_pos[n - 1], background.cand_df[n - 1]):
            out.append({"term": _spell(background.corpus, int(pos), n), "expected": df * scale})
    return out


def vanished(sample: Sample, background: Background, config: EvidenceConfig) -> list[dict]:
    """Terms the background used that the window (almost) no longer does:
    ``{term, expected, observed}``, most surprising absence first.

    ``expected``: documents expected to contain the term in a window of this many tokens
    written at the background's rate (its document frequency per token of background text
    times the window's tokens); ``observed``: window documents containing it. Document
    counts, not token counts: burstiness cannot make a single lost document look like a
    lost word. A bigram is not listed when one of its words already is. O(T log T + V).
    """
    w_tokens = int(sample.docs.offsets[-1])
    if w_tokens == 0 or background.tokens == 0:
        return []
    scale = w_tokens / background.tokens
    # conditional test of two Poisson rates (Przyborowski & Wilenski 1940): given k
    # documents with the term in window + background together, the window's share is
    # Binomial(k, p0) with p0 its share of the text. Unlike a Poisson test on the expected
    # count alone, this knows the background rate is itself estimated from few documents
    # (terms picked for a high background count are partly picked for luck).
    p0 = w_tokens / (w_tokens + background.tokens)
    least_k = config.min_surprise / -np.log1p(-p0)  # k at which even observed 0 qualifies
    rows = []  # (surprise, n, position, expected, observed)
    for n in (1, 2):
        keys = background.cand_keys[n - 1]
        df_b = background.cand_df[n - 1]
        check = np.flatnonzero(df_b >= least_k)  # absence is the most surprising case
        if len(check) == 0:
            continue
        window = NgramTable.from_groups(
            sample.memo(("groups", n), lambda n=n: doc_ngram_groups(*sample.ngrams("docs", n)))
        )
        _, _, observed = window.lookup(keys[check])
        lam = df_b[check] * scale
        # log P(X <= observed), X ~ Binomial(observed + df_b, p0): the binomial CDF is the
        # regularized incomplete beta, P(X <= k) = 1 - I_p(k + 1, n - k) (Abramowitz &
        # Stegun 26.5.24), the Boost function scipy.stats.binom uses; here n - k = df_b >= 1
        with np.errstate(divide="ignore"):
            surprise = -np.log(betaincc(observed + 1.0, df_b[check], p0))
        keep = (surprise >= config.min_surprise) & (observed <= 0.25 * lam)
        for j in np.flatnonzero(keep):
            i = check[j]
            rows.append((float(surprise[j]), n, int(background.cand_pos[n - 1][i]),
                         float(lam[j]), int(observed[j])))
    rows.sort(key=lambda r: (-r[0], r[1]))
    listed: set[str] = set()
    out = []
    for _, n, pos, lam, obs in rows:
        term = _spell(background.corpus, pos, n)
        if n == 2 and any(word in listed for word in term.split(" ")):
            continue
        listed.add(term)
        out.append({"term": term, "expected": round(lam, 1), "observed": obs})
        if len(out) == config.top_vanished:
            break
    return out


# ------------------------------------------------------------------ duplicates, examples


def _quote(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def duplicate_groups(sample: Sample, ctx: Context) -> np.ndarray:
    """Group label of every document (-1: no near-duplicate), largest group first (label 0).

    Connected components of the verified near-duplicate pairs (Jaccard of word shingles
    >= the suite's threshold, estimated on the suite's MinHash signatures, reused from the
    sample). Exact duplicates are joined first, so a window of one text repeated 2,000
    times costs one signature comparison. O(D·bands·neighbours·num_perm).
    """
    n = sample.n_docs
    labels = np.full(n, -1, dtype=np.int64)
    eligible = np.flatnonzero(sample.docs.lengths > 0)  # empty documents have no shingles
    if len(eligible) < 2:
        return labels
    sig = sample.memo("minhash", lambda: minhash_of(sample, ctx))
    _, first, inverse = np.unique(
        sample.doc_keys[eligible], return_index=True, return_inverse=True
    )
    reps = eligible[first]
    left, right = near_duplicate_pairs(sig[reps], ctx.suite.near_duplicate_threshold)
    if len(left):
        # imported here: scipy.sparse costs ~0.1 s of CPU to import, and most windows of
        # distinct documents have no pair at all
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(len(reps), len(reps)))
        _, comp = connected_components(graph, directed=False)
    else:
        comp = np.arange(len(reps))  # no pair: every document its own component
    doc_comp = comp[inverse.ravel()]
    sizes = np.bincount(doc_comp)
    grouped = sizes[doc_comp] >= 2
    # relabel by size (ties: earliest document) so label 0 is the largest group
    comps = np.flatnonzero(sizes >= 2)
    first_doc = np.full(len(sizes), n)
    np.minimum.at(first_doc, doc_comp, np.arange(len(doc_comp)))
    ranked = comps[np.lexsort((first_doc[comps], -sizes[comps]))]
    rank = np.full(len(sizes), -1)
    rank[ranked] = np.arange(len(ranked))
    labels[eligible[grouped]] = rank[doc_comp[grouped]]
    return labels


def duplicates(
    sample: Sample, ctx: Context, texts: Sequence[str], config: EvidenceConfig
) -> list[dict]:
    """The largest near-duplicate groups: ``{size, share, examples}``; examples are two of
    the group's texts (two different ones when it has them), cut to ``quote_chars``."""
    labels = duplicate_groups(sample, ctx)
    out = []
    for label in range(config.top_duplicates):
        members = np.flatnonzero(labels == label)
        if len(members) == 0:
            break
        quoted: list[str] = []
        for m in members:
            q = _quote(texts[m], config.quote_chars)
            if q not in quoted:
                quoted.append(q)
            if len(quoted) == 2:
                break
        if len(quoted) == 1:
            quoted.append(quoted[0])
        out.append({
            "size": len(members),
            "share": round(len(members) / sample.n_docs, 4),
            "examples": quoted,
        })
    return out


def typical_examples(
    sample: Sample, ctx: Context, texts: Sequence[str], config: EvidenceConfig
) -> dict:
    """``{most_typical, least_typical}``: lists of ``{text, nll, human_percentile}``.

    Typicality is the mean negative log-likelihood per token under the reference LM
    (the suite's Witten–Bell bigram model): lowest first for the most typical. Documents
    under ``min_example_tokens`` tokens, and repeats of a shown text, are skipped;
    ``human_percentile`` places the NLL among the reference's calibration documents.
    O(T log V).
    """
    nll = ctx.model.doc_nll(sample.ids(), sample.docs.offsets)
    ok = np.flatnonzero((sample.docs.lengths >= config.min_example_tokens) & ~np.isnan(nll))
    human = ctx.human_nll

    def pick(order: np.ndarray) -> list[dict]:
        shown, seen = [], set()
        for i in order:
            key = int(sample.doc_keys[i])
            if key in seen:
                continue
            seen.add(key)
            pct = np.searchsorted(human, nll[i]) / len(human) if len(human) else None
            shown.append({
                "text": _quote(texts[i], config.quote_chars),
                "nll": round(float(nll[i]), 3),
                "human_percentile": None if pct is None else round(float(pct), 3),
            })
            if len(shown) == config.typical_examples:
                break
        return shown

    order = ok[np.argsort(nll[ok], kind="stable")]
    return {"most_typical": pick(order), "least_typical": pick(order[::-1])}


# ------------------------------------------------------------------ the whole


def evidence(
    sample: Sample,
    reference: Profile,
    baseline: Profile | None = None,
    *,
    texts: Sequence[str] | None = None,
    quote_text: bool = True,
    config: EvidenceConfig | None = None,
) -> dict:
    """The evidence of one window (the Score JSON's ``"evidence"``).

    ``sample``: the window as the suite scored it (its memoised arrays are reused);
    ``texts``: the window's documents in the sample's order, for quoting (without them the
    tokens are quoted). ``quote_text=False`` leaves quoted text out: ``duplicates`` keep
    their sizes with no examples, ``examples`` lists are empty (see :func:`without_text`).
    ``against`` says which background the lists compare with.
    """
    cfg = config or EvidenceConfig()
    ctx = reference.context()
    bg_profile = baseline if baseline is not None else reference
    background = background_of(bg_profile, reference, cfg)
    if texts is None:
        words = sample.docs.words()
        off = sample.docs.offsets
        texts = [" ".join(words[sample.docs.index[off[i] : off[i + 1]]].tolist())
                 for i in range(sample.n_docs)]
    out = {
        "against": "baseline" if baseline is not None else "reference",
        "overrepresented": overrepresented(sample, background, cfg),
        "vanished": vanished(sample, background, cfg),
        "duplicates": duplicates(sample, ctx, texts, cfg),
        "examples": typical_examples(sample, ctx, texts, cfg),
    }
    return out if quote_text else without_text(out)


def without_text(evidence_json: dict | None) -> dict | None:
    """The evidence with every quoted sample text removed (n-grams and terms stay).

    Used wherever sample text must not be shown: duplicate groups keep ``size`` and
    ``share`` with ``examples: []``; both example lists become empty.
    """
    if evidence_json is None:
        return None
    out = dict(evidence_json)
    out["duplicates"] = [{**g, "examples": []} for g in evidence_json.get("duplicates", [])]
    out["examples"] = {"most_typical": [], "least_typical": []}
    return out
