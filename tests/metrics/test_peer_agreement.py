"""metrics.functional against peer implementations on shared inputs.

Expected values come from tests/fixtures/peer_values.json, written by
``python -m benchmarks.peers.make_fixture`` (each peer runs in its own venv; the fixture
records the peer versions). Documents are stored as token lists; the peers received
``" ".join(tokens)`` and split on whitespace, so both sides count the same tokens.

Where our definition is the peer's, values agree to 1e-9. Where it differs on purpose, the
test compares against the corrected value and also checks that the difference is exactly the
one described (so a change in either side is noticed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metrics import functional as F

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "peer_values.json"
EXACT = 1e-9
DATA = json.loads(FIXTURE.read_text(encoding="utf-8"))
SETS = sorted(DATA["sets"])
NS = [1, 2, 3, 4]


def _docs(name: str) -> list[list[str]]:
    return DATA["sets"][name]["documents"]


def _values(name: str, metric: str) -> dict:
    return DATA["sets"][name][metric]


def test_fixture_is_small_and_tokens_survive_whitespace_splitting() -> None:
    # The peers split " ".join(tokens) on whitespace: a token with whitespace inside (or an
    # empty token) would give the two sides different tokens.
    assert FIXTURE.stat().st_size < 1_000_000
    for name in SETS:
        for doc in _docs(name):
            assert all(tok and tok.split() == [tok] for tok in doc), (name, doc)


# --- distinct-n vs diversity.ngram_diversity_score ---------------------------------------
# Deliberate difference: diversity joins all documents into one string, so its n-grams also
# span the end of one document and the start of the next, and an empty document becomes an
# empty-string token (it splits on a single space). It also returns the SUM of the ratios for
# 1..num_n, rounded to 3 decimals. The fixture holds the peer's unrounded per-n value (the
# runner shadows `round` in the peer module and differences consecutive sums) and the
# per-document value computed with plain Counter code.


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("name", SETS)
def test_distinct_n_counts_ngrams_inside_documents(name: str, n: int) -> None:
    expected = _values(name, "distinct")["within_documents"][str(n)]
    assert F.distinct_n(_docs(name), n) == pytest.approx(expected, abs=EXACT)


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("name", SETS)
def test_distinct_n_on_the_peers_joined_stream_equals_diversity(name: str, n: int) -> None:
    # The peer's own stream, rebuilt exactly as it builds it, passed as ONE document: the only
    # difference between the definitions is where n-grams may start, so this must agree.
    stream = " ".join(" ".join(doc) for doc in _docs(name)).split(" ")
    expected = _values(name, "distinct")["peer_stream"][str(n)]
    assert F.distinct_n([stream], n) == pytest.approx(expected, abs=EXACT)


@pytest.mark.parametrize("name", SETS)
def test_diversity_public_score_is_the_rounded_cumulative_sum(name: str) -> None:
    # Guards the fixture's reading of the peer: its public value round(sum_{k<=n}, 3).
    stream = " ".join(" ".join(doc) for doc in _docs(name)).split(" ")
    values = _values(name, "distinct")
    total = 0.0
    for n in NS:
        total += F.distinct_n([stream], n)
        assert abs(total - values["peer_public_rounded_cumulative"][str(n)]) <= 0.0005 + EXACT


# --- self-repetition vs diversity.self_repetition_score: same definition ------------------


@pytest.mark.parametrize("name", SETS)
def test_self_repetition_matches_diversity(name: str) -> None:
    values = _values(name, "self_repetition")
    got = F.self_repetition(_docs(name), n=values["n"])
    assert got == pytest.approx(values["peer"], abs=EXACT)


# --- Self-BLEU-4 vs nltk sentence_bleu(method1): same definition --------------------------


@pytest.mark.parametrize("name", SETS)
def test_self_bleu_matches_nltk(name: str) -> None:
    values = _values(name, "self_bleu")
    got = F.self_bleu(_docs(name), max_n=values["max_n"])
    assert got == pytest.approx(values["peer_mean"], abs=EXACT)


# --- near-duplicate rate vs datasketch and vs exact Jaccard -------------------------------
# metrics.functional uses datasketch's own signature scheme (SHA-1 32-bit shingle hash,
# affine32 permutations from the same seed) and its LSH (bands, rows) for the threshold, and
# verifies candidates on the signature, as the fixture's datasketch run does: same definition,
# so the rates must be equal.
# Against the exact Jaccard rate (all pairs, same shingles) MinHash is an estimate: a document
# whose most similar partner has exact J in the fixture's gray zone [0.65, 0.95) may land on
# either side of 0.8 (the estimate's standard error is sqrt(J(1-J)/128) ~ 0.035 near 0.8;
# 0.65 is > 4 SE below, and at J >= 0.95 a pair is a (9, 13)-band candidate with p > 0.998).
# So the rates may differ by at most the share of gray-zone documents.


@pytest.mark.parametrize("name", SETS)
def test_near_duplicate_rate_matches_datasketch(name: str) -> None:
    values = _values(name, "near_duplicates")
    got = F.near_duplicate_rate(
        _docs(name),
        threshold=values["threshold"],
        num_perm=values["num_perm"],
        shingle=values["shingle"],
        seed=values["seed"],
    )
    assert got == pytest.approx(values["datasketch_verified_rate"], abs=EXACT)


@pytest.mark.parametrize("name", SETS)
def test_near_duplicate_rate_is_within_gray_zone_of_exact_jaccard(name: str) -> None:
    values = _values(name, "near_duplicates")
    docs = _docs(name)
    got = F.near_duplicate_rate(docs, threshold=values["threshold"], seed=values["seed"])
    tolerance = values["gray_documents"] / len(docs)
    assert abs(got - values["exact_rate"]) <= tolerance + EXACT


def test_near_duplicate_fixture_has_duplicates_to_find() -> None:
    # Without them the two tests above would pass for a function that always returns 0.
    assert _values("duplicated", "near_duplicates")["exact_rate"] >= 0.4
    assert _values("edge", "near_duplicates")["gray_documents"] == 0


# --- MATTR vs lexicalrichness: same definition ---------------------------------------------


@pytest.mark.parametrize("name", SETS)
def test_mattr_matches_lexicalrichness(name: str) -> None:
    values = _values(name, "mattr")
    tokens = [tok for doc in _docs(name) for tok in doc]
    assert F.mattr(tokens, window=values["window"]) == pytest.approx(values["peer"], abs=EXACT)


def test_mattr_shorter_than_window_is_type_token_ratio() -> None:
    # Deliberate difference: lexicalrichness raises ValueError when the text is shorter than
    # the window; a score must not crash on a short window, so we return the plain TTR, which
    # is also what one window covering the whole text gives.
    tokens = [tok for doc in _docs("edge") for tok in doc]
    ttr = len(set(tokens)) / len(tokens)
    assert F.mattr(tokens, window=len(tokens) + 1) == pytest.approx(ttr, abs=EXACT)
    assert F.mattr(tokens, window=len(tokens)) == pytest.approx(ttr, abs=EXACT)


# --- compression ratio vs diversity.compression_ratio ---------------------------------------
# Deliberate difference: diversity compresses twice (gzip.compress(text) written into a
# GzipFile), so its denominator carries a second header, trailer and deflate framing. We
# compare against one gzip pass (compresslevel 9) of the same bytes, computed in the peer
# process. gzip output depends on the zlib build; the fixture and the tests run on the same
# interpreter build here, so equality to 1e-9 is expected (regenerate the fixture if not).


@pytest.mark.parametrize("name", SETS)
def test_compression_ratio_is_one_gzip_pass(name: str) -> None:
    values = _values(name, "compression")
    got = F.compression_ratio(_docs(name))
    assert got == pytest.approx(values["single_gzip_ratio"], abs=EXACT)
    assert got > values["peer_double_gzip_ratio"]
    assert values["original_bytes"] / got == pytest.approx(values["single_gzip_bytes"])
    assert round(values["peer_double_gzip_ratio"], 3) == values["peer_public_rounded"]


def test_distinct_ns_equals_distinct_n_for_each_n():
    docs = [["a", "b", "a", "b"], ["c", "a", "b"], [], ["a"]]
    assert F.distinct_ns(docs, 3) == [F.distinct_n(docs, n) for n in (1, 2, 3)]
