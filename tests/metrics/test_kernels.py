"""Array kernels against brute-force definitions on small random inputs."""

from __future__ import annotations

import math
import random
import time
from collections import Counter

import numpy as np
import pytest

from metrics import functional as F
from metrics import kernels
from metrics.text import hash_tokens, ngram_keys


def _random_docs(seed: int, n_docs: int = 40, vocab: int = 30) -> list[list[str]]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    return [[rng.choice(words) for _ in range(rng.randint(0, 25))] for _ in range(n_docs)]


def _encode(docs):
    ids = np.concatenate([hash_tokens(d) for d in docs]) if docs else np.empty(0, np.uint64)
    return ids, np.cumsum([0] + [len(d) for d in docs]).astype(np.int64)


@pytest.mark.parametrize("seed", range(5))
def test_mattr_matches_the_sliding_window_definition(seed):
    tokens = [t for d in _random_docs(seed, vocab=60) for t in d]
    for window in (1, 7, 100):
        if len(tokens) < window:
            continue
        windows = [tokens[i : i + window] for i in range(len(tokens) - window + 1)]
        expected = sum(len(set(w)) / window for w in windows) / len(windows)
        assert F.mattr(tokens, window) == pytest.approx(expected, abs=1e-12)


def test_mattr_of_a_short_stream_is_its_type_token_ratio():
    assert F.mattr(["a", "b", "a"], window=100) == pytest.approx(2 / 3)
    assert F.mattr([], window=100) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_clipped_matches_equal_the_max_over_other_documents(seed):
    docs = _random_docs(seed, vocab=8)
    ids, offsets = _encode(docs)
    for n in (1, 2, 3):
        got = kernels.clipped_matches(kernels.doc_ngram_groups(*ngram_keys(ids, offsets, n)), len(docs))
        grams = [Counter(tuple(d[i : i + n]) for i in range(len(d) - n + 1)) for d in docs]
        for i, counts in enumerate(grams):
            expected = sum(
                min(c, max((grams[j][g] for j in range(len(docs)) if j != i), default=0))
                for g, c in counts.items()
            )
            assert got[i] == expected


def test_closest_other_length_prefers_the_shorter_on_ties():
    lengths = np.array([5, 3, 7, 5, 10])
    # 5 has another 5; 3 -> 5; 7 -> 5 (tie 5/9 absent: 5 is closer); 10 -> 7
    assert kernels._closest_other_length(lengths).tolist() == [5, 5, 5, 5, 7]
    assert kernels._closest_other_length(np.array([4, 6, 5])).tolist() == [5, 5, 4]


def test_self_bleu_of_identical_documents_is_one_and_of_disjoint_ones_is_zero():
    same = [["the", "cat", "sat", "on", "the", "mat"]] * 4
    assert F.self_bleu(same) == pytest.approx(1.0)
    disjoint = [[f"{k}{i}" for i in range(6)] for k in "abcd"]
    assert F.self_bleu(disjoint) == 0.0
    assert F.self_bleu([["only", "one"]]) == 0.0


def test_good_turing_and_chao1_follow_their_formulas():
    counts = np.array([1, 1, 1, 2, 2, 5])
    assert kernels.good_turing_missing_mass(counts) == pytest.approx(3 / 12)
    assert kernels.chao1(counts) == pytest.approx(6 + 3 * 2 / (2 * 3))
    assert kernels.chao1(np.array([1, 1])) == pytest.approx(2 + 2 * 1 / 2)
    assert kernels.chao1(np.empty(0, np.int64)) is None


def test_top_share_counts_the_k_most_common_types():
    counts = np.array([10, 1, 1, 5, 3])
    assert kernels.top_share(counts, 2) == pytest.approx(15 / 20)
    assert kernels.top_share(counts, 10) == 1.0


def test_entropy_in_bits():
    assert kernels.entropy_bits(np.array([1, 1, 1, 1])) == pytest.approx(2.0)
    assert kernels.entropy_bits(np.array([7])) == pytest.approx(0.0)


def test_self_repetition_counts_documents_not_occurrences():
    docs = [["a", "b", "c", "d", "a", "b", "c", "d"], ["a", "b", "c", "d"], ["x", "y"]]
    # doc0 has {abcd, bcda, cdab, dabc}: abcd is in one other document -> ln 2
    expected = (math.log(2) + math.log(2) + 0.0) / 3
    assert F.self_repetition(docs) == pytest.approx(expected)


def test_lsh_parameters_minimise_the_error_integrals():
    assert kernels.lsh_params(0.8, 128) == (9, 13)
    assert kernels.lsh_params(0.5, 128) == (25, 5)


def test_near_duplicates_of_a_degenerate_window_stay_linear():
    # every document identical: one LSH bucket holds the whole window
    docs = [["same", "words", "in", "every", "single", "output", "here"]] * 5000
    start = time.perf_counter()
    rate = F.near_duplicate_rate(docs)
    assert rate == 1.0
    assert time.perf_counter() - start < 30  # quadratic pair checks would take far longer


def test_near_duplicates_are_found_and_empty_documents_never_match():
    base = [f"t{i}" for i in range(100)]
    edited = list(base)
    edited[50] = "changed"  # 5 of 96 shingles change: Jaccard 91/101 = 0.90
    other = [f"u{i}" for i in range(100)]
    docs = [base, edited, other, [], []]
    flags = F.near_duplicate_rate(docs)
    assert flags == pytest.approx(2 / 5)


def test_compression_ratio_is_one_gzip_pass():
    import gzip

    docs = ["abc abc abc", "def"]
    text = b"abc abc abc def"
    assert F.compression_ratio(docs) == pytest.approx(len(text) / len(gzip.compress(text)))
    assert F.compression_ratio([["abc", "abc"], ["x"]]) == F.compression_ratio(["abc abc", "x"])
    assert F.compression_ratio([]) == 0.0


@pytest.mark.parametrize("chunk", [1, 7, 1 << 15])
def test_minhash_signatures_do_not_depend_on_the_chunk_size(monkeypatch, chunk):
    """Signatures are computed a chunk of whole documents at a time (bounded memory): any
    chunk size gives the signatures of the single product over all shingles."""
    rng = np.random.default_rng(chunk)
    n_docs = 40
    doc_of = np.sort(rng.integers(0, n_docs - 3, 500))  # some documents have no shingles
    hashes = rng.integers(0, 2**32, len(doc_of), dtype=np.uint64).astype(np.uint32)
    a, b = kernels.minhash_permutations(16, 9)
    with np.errstate(over="ignore"):
        permuted = a[:, None] * kernels._fmix32(hashes)[None, :] + b[:, None]
    expected = np.full((n_docs, 16), np.iinfo(np.uint32).max, dtype=np.uint32)
    for d in range(n_docs):
        if (doc_of == d).any():
            expected[d] = permuted[:, doc_of == d].min(axis=1)
    monkeypatch.setattr(kernels, "_MINHASH_CHUNK", chunk)
    np.testing.assert_array_equal(kernels.minhash_signatures(hashes, doc_of, n_docs, 16, 9),
                                  expected)


def test_near_duplicate_flags_with_given_lsh_keys_equal_computing_them():
    rng = np.random.default_rng(5)
    sig = rng.integers(0, 50, size=(300, 128)).astype(np.uint32)
    sig[150:] = sig[:150]  # half the documents duplicate the other half
    sig[10, :100] = 7
    eligible = np.ones(300, dtype=bool)
    eligible[[3, 153]] = False
    keys = kernels.lsh_keys(sig, 0.8)
    np.testing.assert_array_equal(
        kernels.near_duplicate_flags(sig, 0.8, eligible, band_keys=keys),
        kernels.near_duplicate_flags(sig, 0.8, eligible))
