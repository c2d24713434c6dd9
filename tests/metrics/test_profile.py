"""Reference and baseline profiles: building, identity, serialisation, corruption."""

from __future__ import annotations

import numpy as np
import pytest

import metrics
from metrics.profile import FORMAT_VERSION, MAGIC


def test_reference_records_its_documents(small_reference, fortune_split):
    ref_docs = fortune_split[0]
    assert small_reference.kind == "reference"
    assert small_reference.document_count == len(ref_docs)
    assert small_reference.sha256 == metrics.documents_sha256(metrics.normalize_documents(ref_docs))
    tokens = sum(len(metrics.tokenize(d)) for d in metrics.normalize_documents(ref_docs))
    assert small_reference.token_count == tokens


def test_same_documents_in_another_order_give_the_same_profile(fortune_split):
    docs = fortune_split[0][:400]
    cfg = metrics.ReferenceConfig(replicates=5, band_sizes=(60,))
    a = metrics.build_reference(docs, "r", config=cfg)
    b = metrics.build_reference(list(reversed(docs)), "r", config=cfg)
    assert a.sha256 == b.sha256
    assert a.to_bytes() == b.to_bytes()


def test_too_few_documents_say_how_many_are_needed(fortune_split):
    with pytest.raises(metrics.ReferenceTooSmall, match="has 199 documents; at least 200"):
        metrics.build_reference(fortune_split[0][:199], "tiny")
    assert issubclass(metrics.ReferenceTooSmall, metrics.MetricsError)
    assert issubclass(metrics.MetricsError, ValueError)


def test_a_reference_without_words_is_refused():
    with pytest.raises(metrics.ReferenceTooSmall, match="too few words"):
        metrics.build_reference(["..."] * 300, "punctuation")


def test_round_trip_keeps_scores_identical(small_reference, fortune_split, fast_score_config):
    loaded = metrics.Profile.from_bytes(small_reference.to_bytes())
    window = fortune_split[1][:80]
    assert loaded.sha256 == small_reference.sha256
    assert metrics.score(window, loaded, config=fast_score_config) == metrics.score(
        window, small_reference, config=fast_score_config
    )


def test_save_and_load(tmp_path, small_reference):
    path = tmp_path / "ref.cwprofile"
    metrics.save_profile(small_reference, path)
    loaded = metrics.load_profile(path)
    assert (loaded.name, loaded.sha256, loaded.document_count) == (
        small_reference.name, small_reference.sha256, small_reference.document_count)
    assert not list(tmp_path.glob("*.tmp"))


def test_stored_bands_survive_serialisation(fortune_split):
    cfg = metrics.ReferenceConfig(replicates=8, band_sizes=(50, 120))
    ref = metrics.build_reference(fortune_split[0][:600], "banded", config=cfg)
    # each size at its pool-like budget, the smallest also at a lower one
    assert sorted(ref.stored_bands) == metrics.reference.band_grid(ref.pool, (50, 120))
    assert sorted({n for n, _ in ref.stored_bands}) == [50, 120]
    loaded = metrics.Profile.from_bytes(ref.to_bytes())
    for key, band in ref.stored_bands.items():
        np.testing.assert_array_equal(loaded.stored_bands[key], band)


def test_stored_and_cached_bands_of_an_older_metric_definition_are_not_read(
        fortune_split, monkeypatch):
    """topic_recall and rare_topic_recall changed definition under the same names (revision
    2: reference shares; revision 3, with topic_entropy's 2: counted over the topic sample):
    a file written when the metric list named them without revisions, or with an earlier
    one, drops its stored bands, and the band cache key changes, so no band of an old
    definition is read."""
    from metrics.band_cache_dir import band_key
    from metrics.registry import BY_NAME, METRIC_NAMES, METRIC_SUITE

    assert BY_NAME["topic_recall"].revision == 3 and "topic_recall@3" in METRIC_SUITE
    assert "topic_entropy@2" in METRIC_SUITE
    revision_2 = tuple(n.replace("topic_recall@3", "topic_recall@2")
                       .replace("topic_entropy@2", "topic_entropy") for n in METRIC_SUITE)
    cfg = metrics.ReferenceConfig(replicates=8, band_sizes=(50,))
    ref = metrics.build_reference(fortune_split[0][:600], "revised", config=cfg)
    current_key = band_key(b"p", "reference", "1")
    for suite in (METRIC_NAMES, revision_2):
        with monkeypatch.context() as m:
            m.setattr("metrics.profile.METRIC_SUITE", suite)
            m.setattr("metrics.registry.METRIC_SUITE", suite)
            older = ref.to_bytes()
            assert band_key(b"p", "reference", "1") != current_key
        assert metrics.Profile.from_bytes(older).stored_bands == {}
    # the size at its pool-like budget and the budgets below it
    assert sorted(metrics.Profile.from_bytes(ref.to_bytes()).stored_bands) == \
        metrics.reference.band_grid(ref.pool, (50,))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:10], "too short"),
        (lambda b: b"X" + b[1:], "bad magic"),
        (lambda b: b[: len(MAGIC)] + (FORMAT_VERSION + 1).to_bytes(4, "little") + b[len(MAGIC) + 4 :],
         "version"),
        (lambda b: b[:-100] + bytes(100), "checksum"),
        (lambda b: b[:-1], "checksum"),
        (lambda b: b + b"trailing", "checksum"),
    ],
)
def test_corrupt_or_incompatible_files_raise_profile_error(small_reference, damage, message):
    with pytest.raises(metrics.ProfileError, match=message):
        metrics.Profile.from_bytes(damage(small_reference.to_bytes()))


def test_a_file_that_is_not_a_profile_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(metrics.ProfileError):
        metrics.load_profile(path)


@pytest.mark.slow
def test_profile_file_stays_bounded_per_word(human_documents):
    # ~440k words -> the file must stay far below the 50 MB allowed for 1M words
    ref = metrics.build_reference(human_documents, "all", config=metrics.ReferenceConfig(replicates=2))
    size = len(ref.to_bytes())
    per_word = size / ref.token_count
    assert per_word * 1_000_000 < 50e6, f"{size / 1e6:.1f} MB for {ref.token_count} words"


def test_baseline_records_its_reference_and_ratios(small_reference, fortune_split):
    cfg = metrics.ReferenceConfig(replicates=20)
    base = metrics.build_baseline(fortune_split[1][:300], small_reference, "human-as-model", config=cfg)
    assert base.kind == "baseline"
    assert base.reference_sha256 == small_reference.sha256
    assert set(base.human_ratios) == set(metrics.SIGNALS)
    # human documents used as a "model" baseline sit close to human
    for value in base.human_ratios.values():
        assert 0.8 < value < 1.25
    loaded = metrics.Profile.from_bytes(base.to_bytes())
    assert loaded.human_ratios == base.human_ratios
    assert loaded.reference_sha256 == small_reference.sha256


def test_baseline_smaller_than_the_minimum_is_refused(small_reference, fortune_split):
    with pytest.raises(metrics.ReferenceTooSmall, match="baseline 'b' has 150 documents"):
        metrics.build_baseline(fortune_split[1][:150], small_reference, "b")


def test_baseline_needs_a_reference_profile(small_reference, fortune_split):
    base = metrics.build_baseline(fortune_split[1][:250], small_reference, "b",
                                  config=metrics.ReferenceConfig(replicates=5))
    with pytest.raises(metrics.ProfileError, match="pass a reference"):
        metrics.build_baseline(fortune_split[1][:250], base, "c")


def test_band_sizes_the_pool_cannot_serve_are_not_stored(fortune_split):
    """A stored band needs fewer documents than the calibration pool has (else it repeats
    documents and would be flagged too_small whenever used)."""
    cfg = metrics.ReferenceConfig(replicates=5, band_sizes=(50, 5000))
    ref = metrics.build_reference(fortune_split[0][:400], "small", config=cfg, embedder=None)
    assert ref.pool.n_docs < 5000
    assert {n for n, _ in ref.stored_bands} == {50}
