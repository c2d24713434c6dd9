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
