"""Invariance tests driven by the registry: every metric, no metric named by hand."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

import metrics
from metrics.registry import DOWN, REGISTRY, UP
from metrics.sample import Corpus, Sample
from metrics.scoring import encode_window

ALL = [pytest.param(spec, id=spec.name) for spec in REGISTRY]


def _sample(docs, reference, budget=1500) -> Sample:
    corpus, keys = encode_window(docs, reference)
    return Sample(corpus, min(budget, int(corpus.offsets[-1])), keys)


def _calibration_documents(reference: metrics.Profile) -> list[str]:
    """The reference's calibration documents, as text (tokens joined by spaces)."""
    pool = reference.pool
    words = np.asarray(pool.vocab, dtype=object)
    return [" ".join(words[pool.index[a:b]].tolist())
            for a, b in zip(pool.offsets[:-1], pool.offsets[1:])]


def test_registry_is_well_formed():
    names = [spec.name for spec in REGISTRY]
    assert len(names) == len(set(names))
    for spec in REGISTRY:
        assert spec.signal in (*metrics.SIGNALS, "typicality")
        assert spec.direction in (UP, DOWN)
        assert spec.cost.startswith("O(") and spec.description
    for signal in metrics.SIGNALS:
        assert any(s.signal == signal and s.weight > 0 for s in REGISTRY)


@pytest.mark.parametrize("spec", ALL)
def test_document_order_does_not_change_any_metric(spec, small_reference, fortune_split):
    docs = fortune_split[1][:150]
    shuffled = list(docs)
    random.Random(3).shuffle(shuffled)
    ctx = small_reference.context()
    a = spec.fn(_sample(docs, small_reference), ctx)
    b = spec.fn(_sample(shuffled, small_reference), ctx)
    assert a == b


def test_document_order_does_not_change_the_score(small_reference, fortune_split, fast_score_config):
    docs = fortune_split[1][:120]
    assert metrics.score(docs, small_reference, config=fast_score_config) == metrics.score(
        list(reversed(docs)), small_reference, config=fast_score_config)


@pytest.fixture(scope="module")
def calibration_scores(small_reference, fast_score_config):
    docs = _calibration_documents(small_reference)
    rng = random.Random(11)
    return [metrics.score(rng.sample(docs, 100), small_reference, config=fast_score_config)
            for _ in range(20)]


@pytest.mark.parametrize("spec", ALL)
def test_calibration_samples_land_inside_their_band(spec, calibration_scores):
    inside = [not r["metrics"][spec.name]["outside_band"] for r in calibration_scores]
    # the band holds 98% of calibration samples by construction (1%-99% quantiles of
    # 60 replicates); 20 fresh draws should nearly all fall inside
    assert sum(inside) >= 17, f"{spec.name}: {sum(inside)}/20 calibration windows inside"


def test_calibration_samples_are_healthy_and_near_one(calibration_scores):
    assert sum(r["health"] == "healthy" for r in calibration_scores) >= 19
    for signal in metrics.SIGNALS:
        ratios = [r["signals"][signal]["ratio"] for r in calibration_scores]
        assert abs(float(np.median(ratios)) - 1.0) < 0.05, (signal, ratios)


@pytest.fixture(scope="module")
def duplicated_pair(small_reference, fortune_split):
    """(distinct window, window of the same size made of duplicated documents)."""
    docs = fortune_split[1][:200]
    duplicated = docs[:100] + docs[:100]
    return _sample(docs, small_reference), _sample(duplicated, small_reference)


@pytest.mark.parametrize(
    "spec", [p for p in ALL if p.values[0].signal in ("diversity", "sameness")]
)
def test_duplicating_documents_lowers_diversity_and_raises_sameness(spec, duplicated_pair,
                                                                    small_reference):
    distinct, duplicated = duplicated_pair
    ctx = small_reference.context()
    a, b = spec.fn(distinct, ctx), spec.fn(duplicated, ctx)
    if spec.direction == UP:
        assert b > a, f"{spec.name}: {a} -> {b}"
    else:
        assert b < a, f"{spec.name}: {a} -> {b}"


def test_duplicating_documents_moves_the_signals(small_reference, fortune_split, fast_score_config):
    docs = fortune_split[1][:200]
    before = metrics.score(docs, small_reference, config=fast_score_config)["signals"]
    after = metrics.score(docs[:100] * 2, small_reference, config=fast_score_config)["signals"]
    assert after["diversity"]["ratio"] < before["diversity"]["ratio"]
    assert after["sameness"]["ratio"] > before["sameness"]["ratio"]


@pytest.mark.parametrize("spec", ALL)
@pytest.mark.parametrize(
    "docs",
    [[], [""], ["word"], ["one two"], ["", "", ""], ["same same", "same same"], ["🎉 👍", "我爱"]],
    ids=["none", "empty", "one-token", "one-doc", "all-empty", "two-equal", "emoji-cjk"],
)
def test_tiny_windows_give_a_number_or_none_never_nan(spec, docs, small_reference):
    value = spec.fn(_sample(docs, small_reference), small_reference.context())
    assert value is None or (isinstance(value, float) and math.isfinite(value))


def test_band_replicates_match_documents_and_tokens(small_reference):
    # a band replicate has the window's document count, and its budget view the
    # window's token budget, whatever the lengths of the calibration documents
    from metrics.bands import _draw

    pool: Corpus = small_reference.pool
    rng = np.random.default_rng(0)
    for n_docs, budget in [(50, 3000), (50, 200), (400, 5000)]:
        order = _draw(rng, pool.lengths, n_docs, budget)
        sample = Sample(pool.take(order[:n_docs]), budget, small_reference.pool_doc_keys[order[:n_docs]],
                        budget_source=pool.take(order))
        assert sample.n_docs == n_docs
        assert len(sample.budget_ids()) == budget
