"""Peer-comparable metric functions on plain token lists.

These take already-tokenised documents (``Sequence[Sequence[str]]``) so they can be checked
against the peer packages on exactly the same tokens: ``diversity`` (distinct-n,
self-repetition, compression ratio), nltk (Self-BLEU), datasketch (near-duplicates) and
lexicalrichness (MATTR). The window scorer uses the same kernels on hashed arrays.

Deliberate differences from the peers are stated per function.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from metrics import kernels
from metrics.text import ngram_keys

Docs = Sequence[Sequence[str]]


def _encode(docs: Docs) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated integer token ids and document offsets.

    Within one call a token's id is its index in a vocabulary built on the fly: equal
    strings get equal ids, which is all the n-gram counting needs (no hashing of strings).
    """
    for doc in docs:
        if isinstance(doc, str):
            raise TypeError("pass tokenised documents (lists of tokens), not strings")
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    flat = [t for doc in docs for t in doc]
    index = {t: i for i, t in enumerate(dict.fromkeys(flat))}
    ids = np.fromiter(map(index.__getitem__, flat), dtype=np.uint64, count=len(flat))
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return ids, offsets


def distinct_n(docs: Docs, n: int) -> float:
    """Distinct n-grams / all n-grams over the documents (Li et al. 2016). O(n·T log T).

    N-grams do not cross document boundaries. ``diversity.ngram_diversity_score`` joins all
    documents into one string first, so its n-grams also span the end of one document and
    the start of the next; those are not n-grams of any text the model produced. Its
    score is the *sum* of this ratio over n = 1..num_n. Returns 0.0 when there is no n-gram.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ids, offsets = _encode(docs)
    keys, _ = ngram_keys(ids, offsets, n)
    value = kernels.distinct_ratio(keys)
    return 0.0 if value is None else value


def distinct_ns(docs: Docs, max_n: int = 3) -> list[float]:
    """``[distinct_n(docs, n) for n in 1..max_n]``, tokens encoded once. O(max_n·T log T)."""
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    ids, offsets = _encode(docs)
    out = []
    for n in range(1, max_n + 1):
        value = kernels.distinct_ratio(ngram_keys(ids, offsets, n)[0])
        out.append(0.0 if value is None else value)
    return out


def self_repetition(docs: Docs, n: int = 4) -> float:
    """Self-repetition score (Salkar et al. 2022), as ``diversity.self_repetition_score``.

    Mean over documents of log(1 + sum over the document's distinct n-grams of the number
    of other documents that contain it). O(T log T). 0.0 for no documents.
    """
    ids, offsets = _encode(docs)
    keys, doc_of = ngram_keys(ids, offsets, n)
    value = kernels.self_repetition_keys(keys, doc_of, len(docs))
    return 0.0 if value is None else value


def self_bleu(docs: Docs, max_n: int = 4) -> float:
    """Mean over documents of BLEU-``max_n`` against all other documents as references.

    Each term equals nltk ``sentence_bleu(others, doc, weights=(1/max_n,)*max_n,
    smoothing_function=SmoothingFunction().method1)`` (Zhu et al. 2018, Texygen). Computed
    from (document, n-gram) count matrices in O(max_n·T log T) instead of D nltk calls of
    O(T) each. Fewer than two documents: 0.0 (nltk has no reference to compare with).
    """
    ids, offsets = _encode(docs)
    per_doc = kernels.self_bleu_per_doc(ids, offsets, max_n=max_n)
    return float(per_doc.mean()) if len(docs) >= 2 else 0.0


def _sha1_hash32(data: bytes) -> int:
    # datasketch's default shingle hash: the first 4 bytes of SHA-1, little-endian
    return int.from_bytes(hashlib.sha1(data).digest()[:4], "little")


def shingle_hashes(docs: Docs, shingle: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of each document's distinct word shingles and the document of each.

    A shingle is ``" ".join`` of ``shingle`` consecutive tokens, UTF-8 encoded. A document
    shorter than ``shingle`` tokens is one shingle of all its tokens; an empty document
    has none.
    """
    hashes: list[int] = []
    owners: list[int] = []
    for d, doc in enumerate(docs):
        toks = list(doc)
        if not toks:
            continue
        if len(toks) < shingle:
            grams = {" ".join(toks)}
        else:
            grams = {" ".join(toks[i : i + shingle]) for i in range(len(toks) - shingle + 1)}
        for g in grams:
            hashes.append(_sha1_hash32(g.encode("utf-8")))
            owners.append(d)
    return np.asarray(hashes, dtype=np.uint32), np.asarray(owners, dtype=np.int64)


def near_duplicate_rate(
    docs: Docs, threshold: float = 0.8, num_perm: int = 128, shingle: int = 5, seed: int = 1
) -> float:
    """Share of documents with at least one other document at Jaccard >= threshold.

    Jaccard over word ``shingle``-gram sets, estimated with ``num_perm`` MinHash
    permutations (datasketch's default affine32 scheme and SHA-1 shingle hash, so
    signatures equal datasketch's for the same seed) and found through LSH bands with
    datasketch's optimal (bands, rows) for the threshold. Candidates are verified on the
    signature (estimated Jaccard >= threshold); datasketch's ``MinHashLSH.query`` returns
    unverified band collisions. An empty document has no shingles and is never a
    near-duplicate (it still counts in the denominator). O(D·num_perm) plus the shingles.
    """
    if not docs:
        return 0.0
    hashes, owners = shingle_hashes(docs, shingle)
    sig = kernels.minhash_signatures(hashes, owners, len(docs), num_perm, seed)
    eligible = np.bincount(owners, minlength=len(docs)) > 0
    return float(kernels.near_duplicate_flags(sig, threshold, eligible).mean())


def mattr(tokens: Sequence[str], window: int = 100) -> float:
    """Moving-average type-token ratio over windows of ``window`` tokens (Covington 2010).

    As lexicalrichness ``LexicalRichness.mattr`` on the same tokens, in O(T log T). Where
    lexicalrichness raises for a text shorter than the window, this returns the plain
    type-token ratio (0.0 for no tokens), so small windows never crash a score.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if isinstance(tokens, str):
        raise TypeError("pass a list of tokens, not a string")
    if not tokens:
        return 0.0
    stream, _ = _encode([tokens])
    value = kernels.mattr_ids(stream, window)
    return 0.0 if value is None else value


def compression_ratio(docs: Sequence[str] | Docs) -> float:
    """Size of the documents joined by spaces / size of one gzip compression of it.

    Documents may be strings or token lists (tokens are joined by spaces). This is the
    intended definition of ``diversity.compression_ratio(data, "gzip")``; that function
    compresses the text twice (it writes ``gzip.compress(text)`` into a ``GzipFile``), so
    its denominator is a little larger. 0.0 for empty input.
    """
    text = " ".join(doc if isinstance(doc, str) else " ".join(doc) for doc in docs)
    value = kernels.gzip_ratio(text.encode("utf-8"))
    return 0.0 if value is None else value
