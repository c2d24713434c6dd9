"""The test processes' embedding memo gives the model's exact vectors and spares the model
only texts it has already embedded."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.embedding_memo import BYPASS, MEMO, install


@pytest.fixture
def model():
    from metrics.embedding import shared_embedder

    embedder, reason = shared_embedder()
    assert embedder is not None, reason
    assert install(), "the memo did not install: the model's vectors depend on their batch"
    return embedder


def _direct(model, texts):
    """The model's own vectors, the memo bypassed."""
    MEMO.active = False
    try:
        return model.embed(texts)
    finally:
        MEMO.active = True


def test_remembered_and_new_texts_get_the_models_exact_vectors_in_order(model):
    assert "test_embedding_memo.py" not in BYPASS
    seen = [f"memo probe {i}: a line seen before" for i in range(5)]
    model.embed(seen)
    texts = [seen[3], "memo probe: an unseen line", seen[0], "memo probe: an unseen line",
             "memo probe: another unseen line " * 30, seen[3]]
    before = MEMO.misses, MEMO.hits
    got = model.embed(texts)
    # three remembered texts, two distinct new ones (the repeat is embedded once)
    assert (MEMO.misses - before[0], MEMO.hits - before[1]) == (2, 4)
    assert got.dtype == np.float32 and got.shape == (6, model.dim)
    assert np.array_equal(got, _direct(model, texts))
    got[0] = 0  # the caller's copy: the memo keeps its own
    assert np.array_equal(model.embed([seen[3]]), _direct(model, [seen[3]]))


def test_an_empty_call_and_a_bypassed_call_reach_the_model(model):
    assert model.embed([]).shape == (0, model.dim)
    before = MEMO.misses, MEMO.hits
    _direct(model, ["memo probe: bypassed"])
    assert (MEMO.misses, MEMO.hits) == before
