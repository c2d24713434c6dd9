"""The local embedder: the real pinned model file, known-similarity pairs, the missing paths."""

from __future__ import annotations

import numpy as np
import pytest

from metrics.embedding import (
    DEFAULT_MODEL_SHA256,
    EmbedderUnavailable,
    _sha256,
    default_model_files,
    load_embedder,
    shared_embedder,
)


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


def test_default_model_files_are_the_pinned_ones():
    model, tokenizer = default_model_files()
    assert model.name == "model.onnx" and tokenizer.name == "tokenizer.json"
    assert _sha256(model) == DEFAULT_MODEL_SHA256


def test_vectors_are_unit_length_float32_in_input_order(embedder):
    texts = ["a much longer sentence about the weather in the mountains this week", "hi",
             "the cat"]
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, embedder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # batching sorts by length; each row must still belong to its own text
    for i, text in enumerate(texts):
        assert np.allclose(embedder.embed([text])[0], vectors[i], atol=1e-4)


def test_empty_input_gives_an_empty_matrix(embedder):
    assert embedder.embed([]).shape == (0, embedder.dim)


@pytest.mark.parametrize(
    "anchor,paraphrase,unrelated",
    [
        ("a cat is sitting on the mat", "a kitten sits on a rug",
         "the central bank raised interest rates"),
        ("how do i bake sourdough bread", "what is the recipe for sourdough loaves",
         "the spacecraft entered orbit around mars"),
        ("the team won the football match", "the soccer club won its game",
         "she wrote a poem about the sea at night"),
    ],
)
def test_paraphrases_are_closer_than_unrelated_sentences(embedder, anchor, paraphrase, unrelated):
    a, p, u = embedder.embed([anchor, paraphrase, unrelated])
    assert float(a @ p) > float(a @ u) + 0.2


def test_identical_texts_give_identical_vectors(embedder):
    a, b = embedder.embed(["same words here", "same words here"])
    assert float(a @ b) == pytest.approx(1.0, abs=1e-6)


def test_long_texts_are_truncated_not_refused(embedder):
    vector = embedder.embed(["word " * 5000])
    assert np.isfinite(vector).all()


def test_batches_are_capped_in_texts_and_in_padded_word_pieces(embedder):
    """One onnxruntime call's transient memory grows with its padded tokens: long texts go
    in smaller batches than short ones, every text once, in the given order."""
    from metrics.embedding import MAX_BATCH_TOKENS

    lengths = np.array([5] * 20 + [48] * 9 + [96] * 9 + [400])
    order = np.arange(len(lengths))
    batches = embedder._batches(order, lengths)
    np.testing.assert_array_equal(np.concatenate(batches), order)
    for batch in batches:
        assert len(batch) <= embedder.batch_size
        assert len(batch) == 1 or len(batch) * lengths[batch].max() <= MAX_BATCH_TOKENS
    sizes: dict[int, int] = {}
    for b in batches:
        width = int(lengths[b].max())
        sizes[width] = max(sizes.get(width, 0), len(b))
    assert sizes[5] == embedder.batch_size and sizes[96] == MAX_BATCH_TOKENS // 96
    assert sizes[400] == 1  # longer than the cap alone: still embedded


def test_vectors_do_not_depend_much_on_the_batch_a_text_lands_in(embedder):
    """A text's vector may move a little with its batch mates (padding, an int8 runtime that
    quantises a whole call's activations with one scale), never as far as a paraphrase moves
    it. The pinned model and runtime give bit-identical vectors, which the test processes'
    embedding memo relies on and checks itself (tests/support/embedding_memo.py)."""
    texts = ["a short one", "the cat sat on the mat " * 6, "rain again today",
             "markets fell sharply after the announcement " * 4]
    together = embedder.embed(texts)
    alone = np.vstack([embedder.embed([t]) for t in texts])
    assert (np.sum(together * alone, axis=1) > 0.99).all()


def test_missing_model_file_says_which(tmp_path):
    tokenizer = default_model_files()[1]
    with pytest.raises(EmbedderUnavailable, match="does not exist"):
        load_embedder(tmp_path / "nope.onnx", tokenizer)


def test_a_model_path_without_a_tokenizer_is_refused(tmp_path):
    with pytest.raises(EmbedderUnavailable, match="both"):
        load_embedder(tmp_path / "model.onnx")


def test_a_file_that_is_no_onnx_model_is_unavailable_with_the_reason(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(EmbedderUnavailable, match="cannot load embedding model"):
        load_embedder(bad, default_model_files()[1])


def test_shared_embedder_reports_the_reason_instead_of_raising(tmp_path):
    embedder, reason = shared_embedder(tmp_path / "gone.onnx", tmp_path / "gone.json")
    assert embedder is None and "does not exist" in reason


def test_a_configured_model_by_path_has_its_own_identity(tmp_path, embedder):
    model, tokenizer = default_model_files()
    copy = tmp_path / "other.onnx"
    copy.write_bytes(model.read_bytes())
    other = load_embedder(copy, tokenizer)
    # same weights: same vectors; the identity names the file hashes, not the path
    assert other.identity.split(":")[1:] == embedder.identity.split(":")[1:]
    assert np.allclose(other.embed(["hello world"]), embedder.embed(["hello world"]), atol=1e-6)


# ------------------------------------------------------------------ the embedding cache


def _cached(tmp_path, **kw):
    from metrics.embedding import cached_embedder

    embedder, reason = cached_embedder(None, None, tmp_path / "cache", **kw)
    assert reason is None, reason
    return embedder


TEXTS = ["the quick brown fox jumps over the lazy dog", "hi", "a third, longer text about rain"]


def test_a_cache_hit_gives_the_models_exact_vectors_without_loading_it(tmp_path, embedder):
    first = _cached(tmp_path)
    # a cache that never saw this model load loads it at once (a broken model is reported
    # before scoring, not in the middle of it)
    assert first.model_loads == 1
    vectors = first.embed(TEXTS)
    assert np.array_equal(vectors, embedder.embed(TEXTS))
    assert (first.cache.hits, first.cache.misses, first.cache.writes) == (0, 1, 1)
    # a new embedder on the same cache (a new process): dimension and vectors from the
    # cache, the model never loaded
    again = _cached(tmp_path)
    assert again.model_loads == 0 and again.dim == embedder.dim
    assert np.array_equal(again.embed(TEXTS), vectors)
    assert (again.cache.hits, again.cache.misses, again.model_loads) == (1, 0, 0)
    # other texts (or the same in another order) are a miss: the model is loaded for them
    again.embed(TEXTS[::-1])
    assert (again.cache.misses, again.model_loads) == (1, 1)
    assert len(list((tmp_path / "cache").rglob("*.vec"))) == 2


def test_a_corrupt_cache_entry_is_ignored_and_rewritten(tmp_path, embedder):
    first = _cached(tmp_path)
    vectors = first.embed(TEXTS)
    (entry,) = (tmp_path / "cache").rglob("*.vec")
    for damage in (lambda b: b[:-7], lambda b: b[:-4] + bytes(4 * [b[-1] ^ 0xFF]), lambda b: b""):
        entry.write_bytes(damage(entry.read_bytes()))
        again = _cached(tmp_path)
        assert np.array_equal(again.embed(TEXTS), vectors)
        assert (again.cache.hits, again.cache.misses, again.cache.writes) == (0, 1, 1)
        assert again.model_loads == 1
        # rewritten: the next one is a hit
        third = _cached(tmp_path)
        assert np.array_equal(third.embed(TEXTS), vectors) and third.model_loads == 0


def test_cache_keys_name_the_model_its_truncation_and_every_text(tmp_path):
    from metrics.embedding import EmbeddingCache

    cache = EmbeddingCache(tmp_path, "model-a:1234:5678")
    vectors = np.eye(3, 4, dtype=np.float32)
    cache.put(["a", "b", "c"], vectors)
    assert np.array_equal(cache.get(["a", "b", "c"]), vectors)
    for other in (EmbeddingCache(tmp_path, "model-b:1234:5678"),
                  EmbeddingCache(tmp_path, "model-a:1234:5678", max_tokens=64)):
        assert other.get(["a", "b", "c"]) is None
    for texts in (["a", "b"], ["ab", "c"], ["a", "bc"], ["c", "b", "a"], ["a", "b", "c", ""]):
        assert cache.get(texts) is None, texts


def test_the_cache_stays_under_its_size_dropping_the_least_recently_used(tmp_path):
    import os

    from metrics.embedding import EmbeddingCache

    vectors = np.ones((10, 100), dtype=np.float32)  # ~4 kB an entry
    size = 4_000 + 200
    cache = EmbeddingCache(tmp_path, "m:1:2", max_bytes=5 * size)
    for i in range(5):
        cache.put([f"text {i}"] * 10, vectors)
        path = cache._path([f"text {i}"] * 10)
        os.utime(path, ns=(i * 10**9, i * 10**9))  # distinct ages, oldest first
    assert cache.get(["text 0"] * 10) is not None  # used again: now the most recent
    cache.put(["text 5"] * 10, vectors)  # over the bound: prune
    kept = {p.name for p in tmp_path.rglob("*.vec")}
    assert sum(p.stat().st_size for p in tmp_path.rglob("*.vec")) <= 5 * size
    assert cache._path(["text 0"] * 10).name in kept
    assert cache._path(["text 5"] * 10).name in kept
    assert cache._path(["text 1"] * 10).name not in kept


def test_an_unwritable_cache_still_embeds(tmp_path, embedder):
    from metrics.embedding import cached_embedder

    (tmp_path / "file").write_text("")
    cached, reason = cached_embedder(None, None, tmp_path / "file" / "cache")
    assert reason is None
    assert np.array_equal(cached.embed(TEXTS), embedder.embed(TEXTS))
    assert cached.cache.writes == 0


def test_a_cached_embedder_reports_a_model_that_does_not_load(tmp_path):
    from metrics.embedding import cached_embedder

    model, tokenizer = default_model_files()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    embedder, reason = cached_embedder(bad, tokenizer, tmp_path / "cache")
    assert embedder is None and "bad.onnx" in reason
    embedder, reason = cached_embedder(tmp_path / "missing.onnx", tokenizer, tmp_path / "c")
    assert embedder is None and "does not exist" in reason
    embedder, reason = cached_embedder(model, None, tmp_path / "c")
    assert embedder is None and "tokenizer" in reason
