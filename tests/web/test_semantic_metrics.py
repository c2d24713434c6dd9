"""Semantic metrics on the page: a group of the metric table, or why they are unavailable."""

from __future__ import annotations

import functools

import pytest

from service.domain.db import session_scope
from tests.web import seeding

WINDOWS = 10


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_semantic_metrics_are_listed_with_band_and_ratio_or_said_unavailable(
        live_server, browser_page, human_documents):
    with session_scope() as session:
        ref = seeding.seed_reference(session, "semantic-ref", human_documents[:100])
        meaning = seeding.seed_model(session, "meaning", ref)
        seeding.seed_evaluations(session, meaning, ref, WINDOWS, seeding.collapsing, seed=7,
                                 extra=seeding.add_semantic)
        lexical = seeding.seed_model(session, "lexical-only", ref)
        seeding.seed_evaluations(session, lexical, ref, WINDOWS, seeding.stable, seed=8,
                                 extra=functools.partial(seeding.add_semantic, available=False))
    page, problems = browser_page
    page.goto(live_server.url + "/")

    page.wait_for_selector("#model-meaning table.metrics tbody.semantic tr[data-metric]")
    card = page.locator("#model-meaning")
    rows = card.locator("table.metrics tbody.semantic tr[data-metric]")
    assert {r.get_attribute("data-metric") for r in rows.all()} == set(seeding.SEMANTIC_METRICS)
    # the lexical group keeps the lexical metrics only
    assert {r.get_attribute("data-metric") for r in card.locator(
        "table.metrics tbody.lexical tr[data-metric]").all()} == set(seeding.METRICS)
    # each with its value, human band and ratio, marked when outside its band
    recall = card.locator("tbody.semantic tr[data-metric='semantic_recall']").locator("td")
    assert recall.nth(1).inner_text() == "tail coverage"
    assert recall.nth(3).inner_text() == "0.941 – 0.979"  # 0.96 ± 2%
    ratio = float(recall.nth(4).inner_text())
    assert ratio < 0.6  # the seeded collapse: tail coverage at 0.4× by the last window
    assert "outside" in recall.nth(5).inner_text()
    assert card.locator("tr.semantic-unavailable").count() == 0

    page.locator("#model-lexical-only").scroll_into_view_if_needed()
    page.wait_for_selector("#model-lexical-only tr.semantic-unavailable")
    other = page.locator("#model-lexical-only table.metrics")
    assert other.locator("tr.semantic-unavailable").inner_text().strip() == \
        f"semantic: {seeding.SEMANTIC_UNAVAILABLE}"
    assert other.locator("tbody.semantic tr[data-metric]").count() == 0
    assert other.locator("tbody.lexical tr[data-metric]").count() == len(seeding.METRICS)
    assert problems.all() == []
