"""The link in a notification opens the page at the model's card, showing the window that
fired (real Chromium, real API process)."""

from __future__ import annotations

from sqlalchemy import select

from service.domain import alerts as engine
from service.domain.db import session_scope
from service.domain.tables import Evaluation
from service.settings import Settings
from tests.web import seeding

WINDOWS = 12
FIRED = 7  # the window that fired, not the latest one
KEY_STORAGE = "collapsewatch.apiKey"


def _seed_and_link(human_documents: list[str], base_url: str) -> str:
    """Ten models above the one that fires (so its card starts below the fold); the link
    is the one alert_payload puts into the notification."""
    with session_scope() as session:
        ref = seeding.seed_reference(session, "deeplink-ref", human_documents[:100])
        for i in range(10):
            model = seeding.seed_model(session, f"a-steady-{i:02d}", ref)
            seeding.seed_evaluations(session, model, ref, 3, seeding.stable, seed=i)
        fading = seeding.seed_model(session, "z-fading", ref)
        seeding.seed_evaluations(session, fading, ref, WINDOWS, seeding.collapsing, seed=5,
                                 baseline_level=0.95, evidence=seeding.collapse_evidence)
        alert = seeding.seed_alert(session, fading)
        alert.last_evaluation_id = session.scalar(select(Evaluation.id).where(
            Evaluation.model_id == fading.id, Evaluation.window_index == FIRED))
        payload = engine.alert_payload(alert, fading.name, "trigger",
                                       Settings(public_url=base_url))
    return payload["url"]


def test_the_notification_link_scrolls_to_the_model_and_shows_the_window_that_fired(
        live_server, browser_page, human_documents, make_key):
    url = _seed_and_link(human_documents, live_server.url)
    assert url.startswith(live_server.url + "/#model=z-fading&window=7&evaluation=")
    page, problems = browser_page
    page.set_viewport_size({"width": 1200, "height": 800})
    page.add_init_script(f"sessionStorage.setItem({KEY_STORAGE!r}, {make_key('read')!r})")
    page.goto(url)
    card = page.locator('article.card[data-model="z-fading"]')
    panel = card.locator("section.evidence")
    page.wait_for_function(
        "() => document.querySelector('article.card.deep-linked section.evidence')"
        "?.dataset.windowIndex === '7'", timeout=30_000)
    assert panel.get_attribute("data-window-index") == str(FIRED)
    assert "(latest)" not in panel.locator(".ev-head").inner_text()
    # the card is on screen (it starts below ten other cards)
    top = card.evaluate("e => e.getBoundingClientRect().top")
    assert 0 <= top < 800 and page.evaluate("window.scrollY") > 0
    assert problems.all() == []


def test_a_page_without_a_link_stays_at_the_top(live_server, browser_page, human_documents):
    _seed_and_link(human_documents, live_server.url)
    page, problems = browser_page
    page.goto(live_server.url + "/")
    page.wait_for_selector("article.card")
    page.wait_for_timeout(500)
    assert page.evaluate("window.scrollY") == 0
    assert page.locator("article.card.deep-linked").count() == 0
    assert problems.all() == []
