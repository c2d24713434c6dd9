"""A stream's synthetic share on the page: estimate, 95% interval, guard and sources."""

from __future__ import annotations

import pytest

from service.domain.db import session_scope
from tests.web import seeding

WINDOWS = 10
GUARD = 0.1
UNAVAILABLE = "source baseline 12345 does not exist"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_stream_card_plots_the_share_with_its_interval_and_guard(
        live_server, browser_page, human_documents, artifacts_dir):
    with session_scope() as session:
        ref = seeding.seed_reference(session, "stream-ref", human_documents[:100])
        stream = seeding.seed_model(session, "crawl", ref)
        stream.kind, stream.sources, stream.max_synthetic_share = "stream", [], GUARD
        seeding.seed_evaluations(session, stream, ref, WINDOWS, seeding.stable, seed=9,
                                 extra=seeding.add_share)
        feed = seeding.seed_model(session, "feed", ref)
        feed.kind, feed.sources = "stream", [12345]
        seeding.seed_evaluations(
            session, feed, ref, 3, seeding.stable, seed=11,
            extra=lambda i, n, r: r.update(synthetic_share_unavailable=UNAVAILABLE))
        model = seeding.seed_model(session, "chatbot", ref)
        seeding.seed_evaluations(session, model, ref, WINDOWS, seeding.stable, seed=10)
    page, problems = browser_page
    page.goto(live_server.url + "/")
    page.wait_for_selector("#model-crawl svg.share-svg circle.share-pt")
    card = page.locator("#model-crawl")
    assert card.locator(".tag.stream").count() == 1

    # one point per window at its estimate, the interval as an area, the guard as a line
    points = card.locator("svg.share-svg circle.share-pt")
    assert points.count() == WINDOWS
    shares = [float(p.get_attribute("data-share")) for p in points.all()]
    assert shares[0] == pytest.approx(0.02) and shares[-1] == pytest.approx(0.40)
    assert card.locator("svg.share-svg .share-band").count() == 1
    assert card.locator("svg.share-svg line.share-guard").count() == 1
    # windows whose lower bound is above the guard are marked
    over = [(s - 0.04) > GUARD for s in shares]
    assert [("over" in (p.get_attribute("class") or "")) for p in points.all()] == over
    assert any(over) and not all(over)

    caption = card.locator("figure.share figcaption").inner_text()
    assert "40%" in caption and "95% 36%–44%" in caption and "guard 10%" in caption
    sources = [c.inner_text() for c in card.locator(".share-sources .chip").all()]
    assert sources == ["vendor-a 30% (26%–34%)", "vendor-b 10% (6.0%–14%)", "unexplained 1.0%"]
    # a joined share shows its two estimators
    assert card.locator(".share-parts").inner_text() == \
        "LM ratio 38% (34%–42%), 2000 documents · with embeddings 42% (38%–46%), 512 documents"

    card.locator("figure.share").screenshot(path=str(artifacts_dir / "web-synthetic-share.png"))

    # a stream whose share cannot be estimated says why
    page.locator("#model-feed").scroll_into_view_if_needed()
    page.wait_for_selector("#model-feed .share-unavailable")
    assert page.locator("#model-feed .share-unavailable").inner_text() == \
        f"synthetic share: unavailable ({UNAVAILABLE})"
    assert page.locator("#model-feed svg.share-svg").count() == 0

    # a deployed model has no share chart
    page.locator("#model-chatbot").scroll_into_view_if_needed()
    page.wait_for_selector("#model-chatbot svg.chart-svg circle.pt")
    assert page.locator("#model-chatbot figure.share").count() == 0
    assert problems.all() == []
