"""Fixtures for the metrics tests: small references built once per session."""

from __future__ import annotations

import random

import pytest

import metrics


@pytest.fixture(scope="session")
def fortune_split(human_documents) -> tuple[list[str], list[str]]:
    """(reference documents, held-out documents): a seeded split of the shipped fortunes."""
    order = list(range(len(human_documents)))
    random.Random(7).shuffle(order)
    ref = [human_documents[i] for i in order[:3000]]
    held = [human_documents[i] for i in order[3000:6000]]
    return ref, held


@pytest.fixture(scope="session")
def small_reference(fortune_split) -> metrics.Profile:
    """A 3,000-document reference with 60-replicate bands (fast, still meaningful)."""
    cfg = metrics.ReferenceConfig(replicates=60)
    return metrics.build_reference(fortune_split[0], "fortunes-small", config=cfg)


@pytest.fixture(scope="session")
def fast_score_config() -> metrics.ScoreConfig:
    """A token budget below the tokens of the test windows: every window of one size
    shares one band, so the tests compute few bands."""
    return metrics.ScoreConfig(token_budget=1500)
