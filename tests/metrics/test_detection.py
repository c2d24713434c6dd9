"""Detection on the development fixtures, at a modest size (benchmarks/detection.py prints
the full-size table).

A word trigram model trained on fortunes is retrained on its own samples; windows of its
outputs are scored against a fortunes reference it never saw, and against its own
generation-0 baseline. Human windows come from held-out fortunes.
"""

from __future__ import annotations

import pytest

from benchmarks.detection import SEVERE, Harness, Setup

pytestmark = pytest.mark.slow

SETUP = Setup(window=300, windows=20, replicates=100, reference_docs=6000, train_docs=3000,
              tiny_budget=300, baseline_docs=1200)


@pytest.fixture(scope="module")
def harness() -> Harness:
    return Harness(SETUP)


@pytest.fixture(scope="module")
def replace(harness):
    return harness.generations("replace")


@pytest.fixture(scope="module")
def accumulate(harness):
    return harness.generations("accumulate")


@pytest.fixture(scope="module")
def gen0_baseline(harness, replace):
    _, gens = replace
    return harness.baseline(gens[0].model.sample(SETUP.baseline_docs, seed=50_000), "gen0")


def _health(scenario) -> list[str]:
    return [row.result["health"] for row in scenario.rows]


def test_held_out_human_windows_are_healthy(harness):
    sc = harness.human_windows()
    healthy = _health(sc).count("healthy")
    assert healthy >= 0.95 * len(sc.rows), sc.render()


def test_replace_is_flagged_by_generation_two_and_stays_flagged(replace):
    sc, _ = replace
    health = _health(sc)
    assert health[0] == "healthy", sc.render()
    assert all(h in SEVERE for h in health[2:]), sc.render()


def test_replace_loses_tails_before_diversity(replace):
    # realistic budget: tails erode generation after generation while diversity holds
    sc, _ = replace
    tails = [row.result["signals"]["tail_coverage"]["ratio"] for row in sc.rows]
    div = [row.result["signals"]["diversity"]["ratio"] for row in sc.rows]
    assert tails[-1] < tails[0] - 0.15, sc.render()
    assert abs(div[-1] - div[0]) < 0.1, sc.render()


def test_replace_at_a_tiny_budget_collapses_by_generation_three(harness):
    sc, _ = harness.generations("replace", budget=SETUP.tiny_budget)
    assert "collapse" in _health(sc)[1:4], sc.render()


def test_accumulate_never_collapses(accumulate):
    sc, _ = accumulate
    assert "collapse" not in _health(sc), sc.render()


def test_baseline_flags_later_replace_generations(harness, replace, gen0_baseline):
    _, gens = replace
    sc = harness.with_baseline("replace vs gen 0", gens, gen0_baseline)
    assert all(h in SEVERE for h in _health(sc)[2:]), sc.render()


def test_baseline_does_not_call_accumulate_collapse(harness, accumulate, gen0_baseline):
    _, gens = accumulate
    sc = harness.with_baseline("accumulate vs gen 0", gens, gen0_baseline)
    assert "collapse" not in _health(sc), sc.render()


def test_fresh_windows_from_the_baseline_source_are_healthy(harness, replace, gen0_baseline):
    _, gens = replace
    sc = harness.fresh_baseline_windows(gens[0].model, gen0_baseline)
    assert _health(sc).count("healthy") >= 0.95 * len(sc.rows), sc.render()


def test_decoding_regression_is_flagged(harness, replace):
    _, gens = replace
    sc = harness.decoding_regression(gens[0].model)
    assert all(ok for _, ok in sc.checks), sc.render()
