"""The "What changed" panel of a model card, in a real Chromium against a real API."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from service.domain.db import session_scope
from service.domain.tables import Evaluation, MonitoredModel
from tests.web import seeding

WINDOWS = 12
KEY_STORAGE = "collapsewatch.apiKey"


def _seed(human_documents: list[str], *, evidence=seeding.collapse_evidence) -> None:
    with session_scope() as session:
        ref = seeding.seed_reference(session, "evidence-ref", human_documents[:100])
        model = seeding.seed_model(session, "fading", ref)
        seeding.seed_evaluations(session, model, ref, WINDOWS, seeding.collapsing, seed=5,
                                 baseline_level=0.95, evidence=evidence)


def _open(page, url: str, key: str | None = None):
    if key:
        page.add_init_script(f"sessionStorage.setItem({KEY_STORAGE!r}, {key!r})")
    page.goto(url + "/")
    page.wait_for_selector("#model-fading section.evidence")
    return page.locator("#model-fading section.evidence")


def test_what_changed_panel_ranks_phrases_and_lists_vanished_words_and_duplicates(
        live_server, browser_page, human_documents, make_key, artifacts_dir, database_url):
    _seed(human_documents)
    page, problems = browser_page
    panel = _open(page, live_server.url, make_key("read"))
    latest = seeding.collapse_evidence(WINDOWS - 1, WINDOWS)
    assert panel.get_attribute("data-window-index") == str(WINDOWS - 1)
    assert "(latest)" in panel.locator(".ev-head").inner_text()

    # phrases: ranked as the evidence lists them, each with a "now" and a "before" bar
    phrases = panel.locator("li.phrase")
    assert phrases.count() == len(latest["overrepresented"])
    assert [p.inner_text() for p in panel.locator("li.phrase .ngram").all()] == \
        seeding.LOOP_PHRASES
    first = phrases.first
    now_width = first.locator(".bar.now").evaluate("e => e.getBoundingClientRect().width")
    before_width = first.locator(".bar.before").evaluate("e => e.getBoundingClientRect().width")
    assert now_width > 5 * before_width > 0  # 80 vs 4 per 10k tokens
    assert "80 vs 4.0" in first.locator(".rate").inner_text()

    # vanished words as chips: those gone for the last 3 windows first, said so
    gone = panel.locator("p.gone-for")
    assert "gone for 3 windows" in gone.inner_text()
    assert [c.inner_text() for c in gone.locator(".chip").all()] == seeding.VANISHING[2:]
    recent = [c.inner_text() for c in panel.locator(".ev-vanished .chips.recent .chip").all()]
    assert recent == seeding.VANISHING[:2]
    assert panel.locator(".ev-topics .chip").inner_text().startswith("sea · ships · sailors")

    # duplicate groups open on demand; quoted sample text stays text (no markup runs)
    group = panel.locator("details.dup-group")
    assert group.count() == 1
    assert group.get_attribute("data-size") == str(latest["duplicates"][0]["size"])
    assert not group.locator("blockquote").first.is_visible()
    group.locator("summary").click()
    quote = group.locator("blockquote").first
    assert quote.is_visible()
    assert quote.inner_text().startswith(seeding.MARKUP)
    assert panel.locator("img").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert panel.locator(".quoted-withheld").count() == 0
    name = "web-evidence-" + database_url.split(":")[0].split("+")[0] + ".png"
    panel.screenshot(path=str(artifacts_dir / name))

    # a refresh (every 10 s) keeps the panel, and the group the user opened, as it was
    lists = []
    page.on("request", lambda r: lists.append(r.url) if "/evaluations?" in r.url else None)
    page.wait_for_timeout(11_000)
    assert lists, "the page refreshed the card"
    assert panel.locator("details.dup-group").get_attribute("open") is not None
    assert problems.all() == []


def test_panel_says_why_quoted_text_is_missing_without_a_key(live_server, browser_page,
                                                             human_documents):
    _seed(human_documents)
    page, problems = browser_page
    panel = _open(page, live_server.url)
    # n-grams and terms are for everyone; quoted text only for a key holder
    assert panel.locator("li.phrase").count() == len(seeding.LOOP_PHRASES)
    assert "needs an API key" in panel.locator(".quoted-withheld").inner_text()
    panel.locator("details.dup-group summary").click()
    assert panel.locator("details.dup-group blockquote").count() == 0
    assert "examples not shown" in panel.locator("details.dup-group").inner_text()
    assert panel.locator("details.ev-examples").count() == 0
    assert problems.all() == []


def test_clicking_a_window_on_a_chart_opens_its_panel(live_server, browser_page,
                                                      human_documents):
    _seed(human_documents)
    page, problems = browser_page
    panel = _open(page, live_server.url)
    page.locator("#model-fading svg.chart-svg").first.locator("circle.pt").nth(3).click(
        force=True)
    page.wait_for_selector("#model-fading section.evidence[data-window-index='3']")
    panel = page.locator("#model-fading section.evidence")
    assert "(latest)" not in panel.locator(".ev-head").inner_text()
    # window 3 of 12 has lost only the two words that vanished first (words 9 and 8)
    # windows 2 and 1 list one word and none: no word is gone for 3 windows yet
    assert panel.locator("p.gone-for").count() == 0
    chips = [c.inner_text() for c in panel.locator(".ev-vanished .chips .chip").all()]
    assert chips == seeding.VANISHING[8:]
    panel.locator("button.ev-latest").click()
    page.wait_for_selector(f"#model-fading section.evidence[data-window-index='{WINDOWS - 1}']")
    assert problems.all() == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_window_without_evidence_says_so(live_server, browser_page, human_documents):
    _seed(human_documents, evidence=None)
    page, problems = browser_page
    panel = _open(page, live_server.url)
    assert "No evidence is stored" in panel.inner_text()
    assert panel.locator("li.phrase").count() == 0
    assert problems.all() == []


def _evaluation_ids(model: str) -> dict[int, int]:
    with session_scope() as session:
        rows = session.execute(
            select(Evaluation.window_index, Evaluation.id)
            .join(MonitoredModel, MonitoredModel.id == Evaluation.model_id)
            .where(MonitoredModel.name == model)).all()
        return dict(rows)


def test_alert_link_opens_the_panel_of_the_window_it_fired_on(live_server, browser_page,
                                                              human_documents):
    _seed(human_documents)
    ids = _evaluation_ids("fading")
    page, problems = browser_page
    # the link alerts carry (service/domain/alerts.py)
    page.goto(f"{live_server.url}/#model=fading&window=4&evaluation={ids[4]}")
    page.locator("#model-fading").scroll_into_view_if_needed()
    page.wait_for_selector("#model-fading section.evidence[data-window-index='4']")
    panel = page.locator("#model-fading section.evidence")
    assert panel.get_attribute("data-evaluation-id") == str(ids[4])
    assert "(latest)" not in panel.locator(".ev-head").inner_text()
    # another link in the same tab changes only the hash
    page.evaluate(f"location.hash = 'model=fading&window=6&evaluation={ids[6]}'")
    page.wait_for_selector("#model-fading section.evidence[data-window-index='6']")
    assert problems.all() == []
