"""The "What changed" panel on evidence the real scoring pipeline stored (not seeded JSON)."""

from __future__ import annotations

import httpx
import pytest

from tests.service.api_fixtures import store_reference
from tests.service.pipeline_fixtures import add_model, ingest, plan_now, score_now

PLANTED = "purple elephants juggle marmalade"
# a phrase in a fifth of the documents is listed from about 150 documents on against this
# 240-document reference; at 60 its adjusted z stays below 3
WINDOW = 150
KEY_STORAGE = "collapsewatch.apiKey"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_panel_shows_a_planted_phrase_and_duplicates_from_a_scored_window(
        pipeline_env, live_server, browser_page, reference_profile, reference_documents,
        window_documents, make_key):
    ref = store_reference(reference_profile, reference_documents)
    add_model("bot", ref, size=WINDOW)
    docs = list(window_documents[:WINDOW])
    # a phrase planted into 20% of the documents, and one document repeated five times
    for i in range(0, WINDOW, 5):
        docs[i] = f"{docs[i]} {PLANTED}."
    docs[1:6] = [docs[1]] * 5
    ingest("bot", docs)
    (evaluation_id,) = plan_now()
    assert score_now(evaluation_id).status == "done"

    key = make_key("read")
    stored = httpx.get(f"{live_server.url}/api/v1/models/bot/evaluations/{evaluation_id}",
                       headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
    evidence = stored["evidence"]
    assert evidence["overrepresented"], "the planted phrase is over-represented"

    page, problems = browser_page
    page.add_init_script(f"sessionStorage.setItem({KEY_STORAGE!r}, {key!r})")
    page.goto(live_server.url + "/")
    panel = page.locator("#model-bot section.evidence")
    panel.wait_for()
    assert panel.get_attribute("data-evaluation-id") == str(evaluation_id)
    phrases = [p.inner_text() for p in panel.locator("li.phrase .ngram").all()]
    assert phrases == [p["ngram"] for p in evidence["overrepresented"]]
    assert PLANTED in phrases, phrases
    sizes = [g.get_attribute("data-size") for g in panel.locator("details.dup-group").all()]
    assert sizes == [str(g["size"]) for g in evidence["duplicates"]]
    assert "5" in sizes
    panel.locator("details.dup-group[data-size='5'] summary").click()
    quotes = panel.locator("details.dup-group[data-size='5'] blockquote")
    (group,) = [g for g in evidence["duplicates"] if g["size"] == 5]
    assert group["examples"] and [q.inner_text() for q in quotes.all()] == group["examples"]
    # one window: nothing can have been gone for three
    assert stored["vanished_for_windows"]["terms"] == []
    assert panel.locator("p.gone-for").count() == 0
    assert problems.all() == []
