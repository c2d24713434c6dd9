"""Array kernels shared by the metric suite and the functional API.

Inputs are integer arrays: ``ids`` (uint64 token ids of all documents concatenated),
``offsets`` (int64, documents + 1) and n-gram keys from :func:`metrics.text.ngram_keys`.
Every kernel is a small pure function; its cost is in its docstring (T = tokens, D = documents).
"""

from __future__ import annotations

import gzip
import itertools
from functools import lru_cache

import numpy as np

from metrics.text import mix64, ngram_keys

# ---------------------------------------------------------------- counting


def unique_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct keys sorted, their counts). O(T log T).

    A plain sort and run lengths: for random 64-bit keys this is several times faster than
    ``np.unique`` in numpy 2.x.
    """
    if len(keys) == 0:
        return keys[:0], np.empty(0, np.int64)
    srt = np.sort(keys)
    starts = np.flatnonzero(np.r_[True, srt[1:] != srt[:-1]])
    return srt[starts], np.diff(np.append(starts, len(srt)))


def distinct_ratio(keys: np.ndarray) -> float | None:
    """Distinct keys / all keys (Li et al. 2016, distinct-n). None without keys. O(T log T)."""
    if len(keys) == 0:
        return None
    return float(len(unique_counts(keys)[0]) / len(keys))


def entropy_bits(counts: np.ndarray) -> float | None:
    """Shannon entropy (bits) of the empirical distribution given by counts. O(V)."""
    total = counts.sum()
    if total <= 0:
        return None
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def good_turing_missing_mass(counts: np.ndarray) -> float | None:
    """Good (1953) estimate of the probability mass of unseen types: N1 / N. O(V)."""
    total = counts.sum()
    if total <= 0:
        return None
    return float((counts == 1).sum() / total)


def chao1(counts: np.ndarray) -> float | None:
    """Bias-corrected Chao1 richness (Chao 1987): S_obs + F1(F1-1) / (2(F2+1)).

    The bias-corrected form stays finite when there are no doubletons. O(V).
    """
    if len(counts) == 0:
        return None
    f1 = float((counts == 1).sum())
    f2 = float((counts == 2).sum())
    return float(len(counts) + f1 * (f1 - 1.0) / (2.0 * (f2 + 1.0)))


def top_share(counts: np.ndarray, k: int) -> float | None:
    """Share of all occurrences carried by the k most common types. O(V)."""
    total = counts.sum()
    if total <= 0:
        return None
    if len(counts) <= k:
        return 1.0
    top = np.partition(counts, len(counts) - k)[len(counts) - k :]
    return float(top.sum() / total)


# ---------------------------------------------------------------- MATTR


def mattr_ids(ids: np.ndarray, window: int = 100) -> float | None:
    """Moving-average type-token ratio (Covington & McFall 2010) of one token stream. O(T log T).

    Mean over all windows of ``window`` consecutive tokens of (distinct / window). The
    distinct count is updated incrementally: moving the window one step drops token s
    (a type is lost when its next occurrence is outside the new window) and adds token
    s+window (a type is new when its previous occurrence is before the new window).
    A stream shorter than the window gives its plain type-token ratio.
    """
    total = len(ids)
    if total == 0:
        return None
    if total <= window:
        return float(len(unique_counts(ids)[0]) / total)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    same_as_next = sorted_ids[1:] == sorted_ids[:-1]
    nxt = np.full(total, total, dtype=np.int64)
    prv = np.full(total, -1, dtype=np.int64)
    nxt[order[:-1][same_as_next]] = order[1:][same_as_next]
    prv[order[1:][same_as_next]] = order[:-1][same_as_next]
    first = int((prv[:window] < 0).sum())
    steps = total - window
    s = np.arange(steps)
    lost = nxt[s] >= s + window
    gained = prv[s + window] <= s
    distinct = first + np.concatenate(([0], np.cumsum(gained.astype(np.int64) - lost)))
    return float(distinct.mean() / window)


# ---------------------------------------------------------------- compression


def gzip_ratio(data: bytes) -> float | None:
    """Original bytes / gzip-compressed bytes, one gzip pass (level 9, fixed mtime). O(bytes).

    The ``diversity`` package writes ``gzip.compress(text)`` through a ``GzipFile``, so its
    file is compressed twice (and carries two gzip headers); the intended definition —
    original size over the size of *one* gzip compression — is what is computed here.
    """
    if not data:
        return None
    return len(data) / len(gzip.compress(data, compresslevel=9, mtime=0))


# ---------------------------------------------------------------- per-document n-gram counts


def doc_ngram_groups(keys: np.ndarray, doc_of: np.ndarray) -> tuple[np.ndarray, ...]:
    """(key, document, count) of every distinct (n-gram, document) pair, sorted by key
    then document. ``doc_of`` must be non-decreasing (as :func:`ngram_keys` returns it):
    a stable sort by key then keeps documents in order within a key. O(T log T).
    """
    if len(keys) == 0:
        empty = np.empty(0, np.int64)
        return np.empty(0, np.uint64), empty, empty
    order = np.argsort(keys, kind="stable")
    k, d = keys[order], doc_of[order]
    start = np.flatnonzero(np.r_[True, (k[1:] != k[:-1]) | (d[1:] != d[:-1])])
    count = np.diff(np.append(start, len(k)))
    return k[start], d[start], count


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start of each run of equal keys, run id of every element)."""
    flag = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    return np.flatnonzero(flag), np.cumsum(flag) - 1


# ---------------------------------------------------------------- self-repetition


def self_repetition_groups(groups: tuple[np.ndarray, ...], n_docs: int) -> float | None:
    """Self-repetition score (Salkar et al. 2022) from :func:`doc_ngram_groups`.

    For each document: log(1 + sum over its distinct n-grams of the number of *other*
    documents containing that n-gram); averaged over documents. O(G).
    """
    if n_docs == 0:
        return None
    g_key, g_doc, _ = groups
    if len(g_key) == 0:
        return 0.0
    starts, run_id = _runs(g_key)
    doc_freq = np.diff(np.append(starts, len(g_key)))
    others = (doc_freq[run_id] - 1).astype(np.float64)
    per_doc = np.bincount(g_doc, weights=others, minlength=n_docs)
    return float(np.log1p(per_doc).mean())


def self_repetition_keys(keys: np.ndarray, doc_of: np.ndarray, n_docs: int) -> float | None:
    """Self-repetition score from n-gram keys and their (non-decreasing) documents."""
    return self_repetition_groups(doc_ngram_groups(keys, doc_of), n_docs)


# ---------------------------------------------------------------- Self-BLEU


def _closest_other_length(lengths: np.ndarray) -> np.ndarray:
    """For each document, the length of the closest *other* document (ties: the shorter).

    Mirrors nltk ``closest_ref_length`` with all other documents as references. O(D log D).
    """
    srt = np.sort(lengths)
    left = np.searchsorted(srt, lengths, side="left")
    right = np.searchsorted(srt, lengths, side="right")
    same_elsewhere = (right - left) >= 2
    below = np.where(left > 0, srt[np.maximum(left - 1, 0)], -(10**12))
    above = np.where(right < len(srt), srt[np.minimum(right, len(srt) - 1)], 10**12)
    pick_below = (lengths - below) <= (above - lengths)
    closest = np.where(pick_below, below, above)
    return np.where(same_elsewhere, lengths, closest)


def clipped_matches(groups: tuple[np.ndarray, ...], n_docs: int) -> np.ndarray:
    """Per document: sum over its n-grams of min(count here, max count in any other doc).

    BLEU's modified precision numerator with every other document as a reference
    (Papineni et al. 2002), from (document, n-gram) counts: the max over the others is
    the n-gram's largest count across documents, or its second largest for the document
    that holds the (first) largest. O(G), no loop over document pairs.
    """
    g_key, g_doc, c = groups
    if len(g_key) == 0:
        return np.zeros(n_docs)
    starts, run_id = _runs(g_key)
    run_max = np.maximum.reduceat(c, starts)
    pos = np.arange(len(c))
    big = len(c) + 1
    # position of the first maximum of each run; the others' max excludes only that one
    first_max = np.minimum.reduceat(np.where(c == run_max[run_id], pos, big), starts)
    masked = np.where(pos == first_max[run_id], 0, c)
    second = np.maximum.reduceat(masked, starts)
    other_max = np.where(pos == first_max[run_id], second[run_id], run_max[run_id])
    return np.bincount(g_doc, weights=np.minimum(c, other_max), minlength=n_docs)


def self_bleu_per_doc(
    ids: np.ndarray,
    offsets: np.ndarray,
    max_n: int = 4,
    epsilon: float = 0.1,
    groups_of=None,
) -> np.ndarray:
    """BLEU of each document against all the others, as nltk ``sentence_bleu`` computes it.

    Uniform weights 1/max_n, smoothing method1 (Chen & Cherry 2014: epsilon added to a
    zero numerator), brevity penalty against the closest other length, 0 when no
    unigram matches (Papineni et al. 2002). ``groups_of(n)`` may supply memoised
    :func:`doc_ngram_groups`. Needs two documents. O(max_n·T log T).
    """
    lengths = np.diff(offsets).astype(np.int64)
    n_docs = len(lengths)
    if n_docs < 2:
        return np.zeros(n_docs)
    if groups_of is None:
        def groups_of(n: int) -> tuple[np.ndarray, ...]:
            return doc_ngram_groups(*ngram_keys(ids, offsets, n))
    log_sum = np.zeros(n_docs)
    unigram_matches = np.zeros(n_docs)
    for n in range(1, max_n + 1):
        num = clipped_matches(groups_of(n), n_docs)
        den = np.maximum(1, lengths - n + 1)
        p = np.where(num > 0, num / den, epsilon / den)
        log_sum += (1.0 / max_n) * np.log(p)
        if n == 1:
            unigram_matches = num
    ref = _closest_other_length(lengths)
    bp = np.where(
        lengths > ref, 1.0, np.where(lengths == 0, 0.0, np.exp(1.0 - ref / np.maximum(lengths, 1)))
    )
    return np.where(unigram_matches > 0, bp * np.exp(log_sum), 0.0)


# ---------------------------------------------------------------- MinHash LSH

_MAX32 = np.uint64(0xFFFFFFFF)


@lru_cache(maxsize=16)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising false positives + false negatives around the threshold.

    The candidate probability of a pair at Jaccard s is 1 - (1 - s^r)^b (Leskovec,
    Rajaraman & Ullman, *Mining of Massive Datasets*, ch. 3); the error integrates it
    below the threshold (false positives) and its complement above (false negatives),
    equally weighted, as datasketch's ``MinHashLSH`` does. Integrals by Simpson's rule.
    """
    pairs = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]
    b = np.array([p[0] for p in pairs], dtype=np.float64)[:, None]
    r = np.array([p[1] for p in pairs], dtype=np.float64)[:, None]
    lo = np.linspace(0.0, threshold, 2001)
    hi = np.linspace(threshold, 1.0, 2001)
    fp = _simpson(1 - (1 - lo[None, :] ** r) ** b, lo)
    fn = _simpson((1 - hi[None, :] ** r) ** b, hi)
    return pairs[int(np.argmin(fp + fn))]


def _simpson(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Composite Simpson's rule along the last axis on an evenly spaced grid of an odd
    number of points: h/3 (y0 + 4 y1 + 2 y2 + ... + 4 y(n-1) + yn). Here rather than
    scipy.integrate.simpson (the same rule on such a grid, and the same (b, r) chosen for
    thresholds 0.3-0.95 and 16-256 permutations), whose import costs ~0.25 s of CPU in
    every process that scores."""
    if len(x) % 2 == 0:
        raise ValueError("Simpson's rule here needs an odd number of grid points")
    h = (x[-1] - x[0]) / (len(x) - 1)
    return h / 3 * (y[..., 0] + y[..., -1] + 4 * y[..., 1:-1:2].sum(axis=-1)
                    + 2 * y[..., 2:-1:2].sum(axis=-1))


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3 32-bit finaliser on uint32 values (pre-mix before the affine maps)."""
    h = h.astype(np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


@lru_cache(maxsize=8)
def minhash_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Affine maps h -> a·h + b (mod 2^32), odd a, drawn from ``RandomState(seed)``."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def minhash_signatures(
    shingle_hash32: np.ndarray, doc_of: np.ndarray, n_docs: int, num_perm: int, seed: int
) -> np.ndarray:
    """(n_docs, num_perm) uint32 MinHash signatures (Broder 1997). O(S·num_perm).

    shingle_hash32: 32-bit hash of every shingle; doc_of: its document, non-decreasing.
    A document without shingles gets the all-max signature (like an empty MinHash).
    """
    sig = np.full((n_docs, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    if len(shingle_hash32) == 0:
        return sig
    a, b = minhash_permutations(num_perm, seed)
    hv = _fmix32(shingle_hash32)
    starts = np.flatnonzero(np.r_[True, doc_of[1:] != doc_of[:-1]])
    # whole documents at a time, about _MINHASH_CHUNK shingles each: the (num_perm, S)
    # product of a 32,000-document window at once is ~460 MB and slower (memory-bound)
    ends = np.r_[starts[1:], len(hv)]
    cut = np.searchsorted(starts, np.arange(0, len(hv), _MINHASH_CHUNK), side="right") - 1
    cut = np.unique(np.r_[cut, len(starts)])
    for i, j in itertools.pairwise(cut):
        lo, hi = starts[i], ends[j - 1]
        with np.errstate(over="ignore"):
            permuted = np.multiply(a[:, None], hv[None, lo:hi])  # (num_perm, chunk)
            permuted += b[:, None]
        sig[doc_of[starts[i:j]]] = np.minimum.reduceat(permuted, starts[i:j] - lo, axis=1).T
    return sig


_MINHASH_CHUNK = 1 << 15


def lsh_band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(documents, bands) uint64 keys: a random linear hash of each band's rows. O(D·bands·rows)."""
    n_docs = signatures.shape[0]
    multipliers = np.random.default_rng(0x15B).integers(
        1, 2**63, size=rows, dtype=np.uint64
    ) * np.uint64(2) + np.uint64(1)
    banded = signatures[:, : bands * rows].astype(np.uint64).reshape(n_docs, bands, rows)
    with np.errstate(over="ignore"):  # wrapping is intended
        return mix64((banded * multipliers).sum(axis=2, dtype=np.uint64))


def lsh_keys(signatures: np.ndarray, threshold: float) -> np.ndarray:
    """(documents, bands) LSH band keys of MinHash signatures for a Jaccard threshold: a
    row depends only on its own document."""
    bands, rows = lsh_params(float(threshold), int(signatures.shape[1]))
    return lsh_band_keys(signatures, bands, rows)


def near_duplicate_flags(
    signatures: np.ndarray,
    threshold: float,
    eligible: np.ndarray | None = None,
    neighbours: int = 8,
    band_keys: np.ndarray | None = None,
) -> np.ndarray:
    """True for each document with another whose estimated Jaccard is >= threshold.

    ``eligible`` marks documents that have shingles; the others (empty documents) are
    never near-duplicates: the Jaccard similarity of two empty sets is undefined, and
    their all-max signatures would otherwise match each other. Exact duplicates of empty
    documents are counted by the exact-duplicate rate.

    LSH banding (Indyk & Motwani 1998; MMDS ch. 3) finds candidates: documents that agree
    on all rows of some band. Within each band's buckets, members are ordered by a
    band-specific hash and each is compared with its next ``neighbours`` members, so the
    work stays O(D·bands·neighbours) even when one bucket holds most of the window
    (a collapsed model). Candidates are verified on the full signature (share of equal
    MinHash values, the unbiased Jaccard estimate). ``band_keys``: the signatures'
    :func:`lsh_keys`, when already known (a band replicate takes its pool's rows).
    """
    n_docs = signatures.shape[0]
    flags = np.zeros(n_docs, dtype=bool)
    if eligible is not None and not eligible.all():
        keep = np.flatnonzero(eligible)
        flags[keep] = near_duplicate_flags(signatures[keep], threshold, None, neighbours,
                                           None if band_keys is None else band_keys[keep])
        return flags
    if n_docs < 2:
        return flags
    if band_keys is None:
        band_keys = lsh_keys(signatures, threshold)
    bands = band_keys.shape[1]
    doc_idx = np.arange(n_docs, dtype=np.uint64)
    for band in range(bands):
        key = band_keys[:, band]
        tiebreak = mix64(doc_idx ^ np.uint64((band + 1) * 0x9E3779B1))
        order = np.lexsort((tiebreak, key))
        sk = key[order]
        for step in range(1, min(neighbours, n_docs - 1) + 1):
            same = sk[step:] == sk[:-step]
            if not same.any():
                break
            left = order[:-step][same]
            right = order[step:][same]
            todo = ~(flags[left] & flags[right])
            left, right = left[todo], right[todo]
            if len(left) == 0:
                continue
            agree = (signatures[left] == signatures[right]).mean(axis=1)
            hit = agree >= threshold
            flags[left[hit]] = True
            flags[right[hit]] = True
    return flags


def near_duplicate_pairs(
    signatures: np.ndarray, threshold: float, neighbours: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Verified near-duplicate pairs (left, right), left < right, each pair once.

    The candidates of :func:`near_duplicate_flags` (LSH banding, each bucket member against
    its next ``neighbours`` members in a band-specific order), verified on the full
    signature. Unlike the flags, no pair is skipped because both documents are already
    flagged: grouping needs the edges, not only the endpoints. Pass signatures of
    documents with shingles only (see ``eligible`` there). O(D·bands·neighbours·num_perm).
    """
    n_docs, num_perm = signatures.shape
    empty = np.empty(0, np.int64)
    if n_docs < 2:
        return empty, empty
    bands, rows = lsh_params(float(threshold), int(num_perm))
    band_keys = lsh_band_keys(signatures, bands, rows)
    doc_idx = np.arange(n_docs, dtype=np.uint64)
    lefts, rights = [], []
    for band in range(bands):
        key = band_keys[:, band]
        order = np.lexsort((mix64(doc_idx ^ np.uint64((band + 1) * 0x9E3779B1)), key))
        sk = key[order]
        for step in range(1, min(neighbours, n_docs - 1) + 1):
            same = sk[step:] == sk[:-step]
            if not same.any():
                break
            a, b = order[:-step][same], order[step:][same]
            lefts.append(np.minimum(a, b))
            rights.append(np.maximum(a, b))
    if not lefts:
        return empty, empty
    pair = np.unique(np.stack([np.concatenate(lefts), np.concatenate(rights)]), axis=1)
    agree = (signatures[pair[0]] == signatures[pair[1]]).mean(axis=1)
    hit = agree >= threshold
    return pair[0][hit].astype(np.int64), pair[1][hit].astype(np.int64)
