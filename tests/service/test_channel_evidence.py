"""What a page carries: the evidence of the window that fired and a link to it on the page.

Real pipeline: windows are ingested, planned and scored with the metrics library (evidence
included), the alert engine fires on them, and the outbox delivers to loopback servers that
stand in for a webhook receiver, Slack and PagerDuty.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest
from sqlalchemy import select

from service.delivery import outbox
from service.domain import alerts as engine
from service.domain.db import session_scope
from service.domain.tables import Alert, Evaluation
from service.settings import get_settings
from tests.service.alert_fixtures import allow_loopback_channels, make_channel
from tests.service.api_fixtures import store_reference
from tests.service.pipeline_fixtures import add_model, ingest, plan_now, score_now
from tests.support import recording_server

PHRASE = "the quarterly synergy report"
# large enough that a lost mid-frequency word is a surprising absence (vanished needs an
# expected count of a few documents)
SIZE = 200


@pytest.fixture(autouse=True)
def _loopback_receivers(monkeypatch):
    allow_loopback_channels(monkeypatch)


def collapsed_windows(documents: list[str], windows: int = 2) -> list[str]:
    """Windows of a collapsed stream: eight human documents, each repeated, every one
    ending in the same phrase (duplicates, lost vocabulary and one overused phrase)."""
    few = [f"{d} {PHRASE}" for d in documents[:8]]
    return [few[i % len(few)] for i in range(windows * SIZE)]


@pytest.fixture
def fired(pipeline_env, reference_profile, reference_documents, window_documents):
    """A collapse alert fired by two scored windows; yields (alert, evaluation) rows."""
    ref = store_reference(reference_profile, reference_documents)
    model_id = add_model("bot", ref, size=SIZE)
    ingest("bot", collapsed_windows(window_documents))
    ids = plan_now()
    assert len(ids) == 2
    for evaluation_id in ids:
        assert score_now(evaluation_id).status == "done"

    def fire() -> tuple[Alert, Evaluation, list[int]]:
        with session_scope() as s:
            notification_ids = engine.evaluate_model(s, model_id).notification_ids
        with session_scope() as s:
            alert = s.scalar(select(Alert).where(Alert.kind == "collapse"))
            assert alert is not None, "the collapsed windows fired no collapse alert"
            ev = s.get(Evaluation, alert.last_evaluation_id)
            s.expunge_all()
        return alert, ev, notification_ids
    return fire


def test_every_channel_gets_the_top_phrases_and_vanished_terms_of_the_window_that_fired(fired):
    with recording_server() as srv:
        make_channel("hook", "webhook", {"url": srv.url + "/hook"}, min_severity="critical")
        make_channel("slack", "slack", {"webhook_url": srv.url + "/slack"},
                     min_severity="critical")
        make_channel("pd", "pagerduty", {"routing_key": "R" * 32, "url": srv.url + "/pd"},
                     min_severity="critical")
        _alert, ev, ids = fired()
        assert len(ids) == 3
        for nid in ids:
            assert outbox.deliver(nid).status == "sent"
        hook = srv.received("/hook")[0].json()
        slack = srv.received("/slack")[0].json()
        pd = srv.received("/pd")[0].json()

    stored = ev.result["evidence"]
    assert stored["overrepresented"] and stored["vanished"]
    # the planted phrase is what took over
    assert any(PHRASE in row["ngram"] or row["ngram"] in PHRASE
               for row in stored["overrepresented"][:5])

    evidence = hook["evidence"]
    assert evidence["window"] == ev.window_index
    assert [r["ngram"] for r in evidence["overrepresented"]] == \
        [r["ngram"] for r in stored["overrepresented"][:5]]
    assert [r["term"] for r in evidence["vanished"]] == \
        [r["term"] for r in stored["vanished"][:5]]
    assert set(evidence["overrepresented"][0]) == {"ngram", "window_per_10k",
                                                   "baseline_per_10k", "z"}
    assert set(evidence["vanished"][0]) == {"term", "expected", "observed"}

    slack_text = "\n".join(b["text"]["text"] for b in slack["blocks"])
    assert "Phrases that took over" in slack_text and "Vanished terms" in slack_text
    top = stored["overrepresented"][0]
    assert f"\"{top['ngram']}\"" in slack_text and "per 10k" in slack_text
    assert stored["vanished"][0]["term"] in slack_text

    details = pd["payload"]["custom_details"]
    assert len(details["phrases_that_took_over"]) == min(5, len(stored["overrepresented"]))
    assert top["ngram"] in details["phrases_that_took_over"][0]
    assert stored["vanished"][0]["term"] in details["vanished_terms"][0]

    # quoted sample text (duplicate groups, typical documents) never goes to a channel
    quoted = [t for g in stored["duplicates"] for t in g["examples"]]
    quoted += [e["text"] for side in stored["examples"].values() for e in side]
    assert quoted
    for body in (hook, slack, pd):
        raw = json.dumps(body)
        assert not [t for t in quoted if t[:60] in raw]
    # bounded: a page is a few KiB whatever the evidence holds
    assert all(len(json.dumps(b)) < 8_000 for b in (hook, slack, pd))


def test_an_acknowledgement_carries_no_evidence(fired):
    with recording_server() as srv:
        make_channel("hook", "webhook", {"url": srv.url + "/hook"}, min_severity="critical")
        alert, _ev, ids = fired()
        with session_scope() as s:
            ids += engine.acknowledge(s, s.get(Alert, alert.id), "bot", "on-call")
        for nid in ids:
            assert outbox.deliver(nid).status == "sent"
        bodies = {b["event"]: b for b in (r.json() for r in srv.received("/hook"))}
    assert bodies["trigger"]["evidence"]["overrepresented"]
    assert bodies["acknowledge"]["evidence"] is None
    assert bodies["acknowledge"]["url"] == bodies["trigger"]["url"]


def test_the_link_opens_the_page_at_the_model_and_window(fired, monkeypatch):
    monkeypatch.setenv("COLLAPSEWATCH_PUBLIC_URL", "https://watch.example/")
    get_settings.cache_clear()
    with recording_server() as srv:
        make_channel("hook", "webhook", {"url": srv.url + "/hook"})
        _alert, ev, ids = fired()
        for nid in ids:
            outbox.deliver(nid)
        url = srv.received("/hook")[0].json()["url"]
    base, fragment = url.split("#", 1)
    assert base == "https://watch.example/"
    assert parse_qs(fragment) == {"model": ["bot"], "window": [str(ev.window_index)],
                                  "evaluation": [str(ev.id)]}


def test_without_public_url_links_use_the_address_the_api_listens_on(monkeypatch):
    from service.settings import Settings

    monkeypatch.delenv("COLLAPSEWATCH_PUBLIC_URL", raising=False)
    monkeypatch.setenv("COLLAPSEWATCH_LISTEN_HOST", "127.0.0.1")
    monkeypatch.setenv("COLLAPSEWATCH_LISTEN_PORT", "8765")
    assert Settings().link_base_url == "http://127.0.0.1:8765"
    monkeypatch.setenv("COLLAPSEWATCH_LISTEN_HOST", "::1")
    assert Settings().link_base_url == "http://[::1]:8765"
    # a wildcard address is no place to link to: the machine's name is
    monkeypatch.setenv("COLLAPSEWATCH_LISTEN_HOST", "0.0.0.0")
    assert "0.0.0.0" not in Settings().link_base_url
    # an explicit PUBLIC_URL wins (behind a proxy the listening address is not reachable)
    monkeypatch.setenv("COLLAPSEWATCH_PUBLIC_URL", "https://watch.example")
    assert Settings().link_base_url == "https://watch.example"


def test_the_api_and_serve_commands_announce_their_port(monkeypatch):
    import os

    from service.cli.server import _announce_listen_host

    monkeypatch.delenv("COLLAPSEWATCH_LISTEN_PORT", raising=False)
    monkeypatch.setenv("COLLAPSEWATCH_LISTEN_HOST", "x")  # restored after the test
    _announce_listen_host("127.0.0.1", 9123)
    try:
        assert os.environ["COLLAPSEWATCH_LISTEN_PORT"] == "9123"
        assert get_settings().link_base_url == "http://127.0.0.1:9123"
    finally:
        monkeypatch.delenv("COLLAPSEWATCH_LISTEN_PORT")
        get_settings.cache_clear()


def test_a_resolve_carries_no_evidence_of_the_collapse():
    from service.channels import Message
    from service.channels.pagerduty import PagerDutyChannel
    from service.channels.slack import SlackChannel

    payload = {"dedup_key": "k", "model": "bot", "title": "bot: collapse", "evidence": None,
               "summary": "healthy again"}
    slack = SlackChannel({"webhook_url": "https://hooks.example/x"})
    body = json.loads(slack.build_request(Message(1, "resolve", payload)).body)
    assert len(body["blocks"]) == 1
    pd = PagerDutyChannel({"routing_key": "R" * 32})
    trigger = pd.event_body(Message(1, "trigger", payload))
    assert "phrases_that_took_over" not in trigger["payload"]["custom_details"]


def test_slack_escapes_control_characters_in_phrases():
    from service.channels import Message
    from service.channels.slack import evidence_block

    payload = {"evidence": {"against": "baseline", "overrepresented": [
        {"ngram": "<!channel> & co", "window_per_10k": 9.0, "baseline_per_10k": 0.1, "z": 5}],
        "vanished": []}}
    text = evidence_block(Message(1, "trigger", payload))["text"]["text"]
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp; co" in text


@pytest.fixture
def evidence_text_off(pipeline_env, monkeypatch):
    monkeypatch.setenv("COLLAPSEWATCH_EVIDENCE_TEXT", "off")
    get_settings.cache_clear()


def test_with_evidence_text_off_the_phrases_and_terms_still_go_out(evidence_text_off, fired):
    with recording_server() as srv:
        make_channel("hook", "webhook", {"url": srv.url + "/hook"}, min_severity="critical")
        _alert, ev, ids = fired()
        for nid in ids:
            assert outbox.deliver(nid).status == "sent"
        evidence = srv.received("/hook")[0].json()["evidence"]
    stored = ev.result["evidence"]
    assert stored["examples"] == {"most_typical": [], "least_typical": []}
    assert evidence["overrepresented"] and evidence["vanished"]
    assert evidence["overrepresented"][0]["ngram"] == stored["overrepresented"][0]["ngram"]
