"""Evidence through the pipeline: stored with the evaluation, quoted text only when allowed."""

from __future__ import annotations

import pytest

from tests.service.api_fixtures import store_reference
from tests.service.pipeline_fixtures import (
    WINDOW,
    add_model,
    evaluation,
    ingest,
    plan_now,
    score_now,
)


@pytest.fixture
def planted_window(pipeline_env, reference_profile, reference_documents, window_documents):
    """One pending window of fresh human documents, one of them repeated five times."""
    ref = store_reference(reference_profile, reference_documents)
    add_model("bot", ref, size=WINDOW)
    docs = list(window_documents[:WINDOW])
    docs[1:6] = [docs[1]] * 5
    ingest("bot", docs)
    (evaluation_id,) = plan_now()
    return evaluation_id


def test_scored_window_stores_its_evidence(planted_window):
    assert score_now(planted_window).status == "done"
    evidence = evaluation(planted_window).result["evidence"]
    assert evidence["against"] == "reference"
    assert {"overrepresented", "vanished", "duplicates", "examples"} <= set(evidence)
    group = evidence["duplicates"][0]
    assert group["size"] == 5 and group["examples"]
    assert evidence["examples"]["most_typical"]


def test_evidence_text_off_stores_no_quoted_text(planted_window, monkeypatch):
    from service.settings import get_settings

    monkeypatch.setenv("COLLAPSEWATCH_EVIDENCE_TEXT", "off")
    get_settings.cache_clear()
    assert score_now(planted_window).status == "done"
    evidence = evaluation(planted_window).result["evidence"]
    assert evidence["duplicates"][0] == {"size": 5, "share": round(5 / WINDOW, 4),
                                         "examples": []}
    assert evidence["examples"] == {"most_typical": [], "least_typical": []}


def test_quoted_text_needs_a_read_key_even_where_reads_are_open(planted_window, client,
                                                                   make_key, monkeypatch):
    """service_env listens on loopback, where reads need no key: the evidence's quoted
    texts are still only shown to a key, and to nobody with EVIDENCE_TEXT=off."""
    from service.settings import get_settings

    assert score_now(planted_window).status == "done"
    read = {"Authorization": f"Bearer {make_key('read')}"}

    def groups(path: str, headers: dict) -> list[dict]:
        response = client.get(f"/api/v1/models/bot/{path}", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        score = body["evaluations"][0] if "evaluations" in body else body
        return score["evidence"]["duplicates"]

    for path in ("evaluations", "health"):
        assert groups(path, {})[0] == {"size": 5, "share": round(5 / WINDOW, 4),
                                       "examples": []}
        assert groups(path, read)[0]["examples"]
    monkeypatch.setenv("COLLAPSEWATCH_EVIDENCE_TEXT", "off")
    get_settings.cache_clear()
    assert groups("evaluations", read)[0]["examples"] == []


def test_one_evaluation_is_served_with_its_evidence(planted_window, client, make_key):
    assert score_now(planted_window).status == "done"
    read = {"Authorization": f"Bearer {make_key('read')}"}
    response = client.get(f"/api/v1/models/bot/evaluations/{planted_window}", headers=read)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == planted_window and body["evidence"]["duplicates"][0]["size"] == 5
    assert body["evidence"]["duplicates"][0]["examples"]
    anonymous = client.get(f"/api/v1/models/bot/evaluations/{planted_window}").json()
    assert anonymous["evidence"]["duplicates"][0]["examples"] == []
    missing = client.get(f"/api/v1/models/bot/evaluations/{planted_window + 999}", headers=read)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
