"""REST: alerts (list, ack), alert rules, channels."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from service.domain import alerts as engine
from service.domain.db import session_scope
from service.domain.tables import AlertRule, Channel, Notification
from tests.service.alert_fixtures import add_evaluation, make_channel, make_model


def fire(model_id: int, health: str = "collapse") -> None:
    for _ in range(2):
        add_evaluation(model_id, health)
    with session_scope() as s:
        engine.evaluate_model(s, model_id)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()


def test_list_alerts_filters_by_state_and_model(client, database_url):
    bot, other = make_model("bot"), make_model("other")
    fire(bot)
    fire(other, "early_collapse")
    r = client.get("/api/v1/alerts")
    assert r.status_code == 200
    # bot's collapse inhibits its warning (one incident per model)
    assert sorted((a["model"], a["kind"]) for a in r.json()["alerts"]) == [
        ("bot", "collapse"), ("other", "early_collapse")]
    r = client.get("/api/v1/alerts", params={"model": "other", "state": "firing"})
    (alert,) = r.json()["alerts"]
    assert alert["severity"] == "warning"
    assert alert["dedup_key"] == "collapsewatch/other/early_collapse"
    assert alert["started_at"].endswith("+00:00") or alert["started_at"].endswith("Z")
    assert client.get("/api/v1/alerts", params={"state": "resolved"}).json()["alerts"] == []
    assert client.get(f"/api/v1/alerts/{alert['id']}").json()["id"] == alert["id"]


@pytest.mark.parametrize("params,status,needle", [
    ({"state": "open"}, 422, "state"),
    ({"model": "ghost"}, 404, "ghost"),
    ({"limit": 0}, 422, "limit"),
])
def test_list_alerts_bad_input(client, database_url, params, status, needle):
    make_model("bot")
    assert needle in problem(client.get("/api/v1/alerts", params=params), status)["detail"]


def test_unknown_alert_is_404(client, database_url):
    problem(client.get("/api/v1/alerts/999"), 404)
    problem(client.post("/api/v1/alerts/999/ack", headers=bearer("x")), 401)


def test_ack_needs_a_key_and_is_idempotent(client, database_url, make_key):
    fire(make_model("bot"))
    alert_id = client.get("/api/v1/alerts", params={"model": "bot"}).json()["alerts"][0]["id"]
    problem(client.post(f"/api/v1/alerts/{alert_id}/ack"), 401)
    problem(client.post(f"/api/v1/alerts/{alert_id}/ack", headers=bearer("cw_wrong")), 401)
    problem(client.post(f"/api/v1/alerts/{alert_id}/ack", headers=bearer(make_key("read"))), 403)
    key = make_key("operator")
    r = client.post(f"/api/v1/alerts/{alert_id}/ack", headers=bearer(key))
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["acknowledged_at"] and first["acknowledged_by"].startswith("key:")
    again = client.post(f"/api/v1/alerts/{alert_id}/ack", headers=bearer(make_key("admin")))
    assert again.json()["acknowledged_at"] == first["acknowledged_at"]
    assert again.json()["acknowledged_by"] == first["acknowledged_by"]


def test_ack_is_queued_for_the_channels_that_were_paged(client, database_url, make_key):
    make_channel("pd", "pagerduty", {"routing_key": "R" * 32})
    fire(make_model("bot"))
    alert_id = client.get("/api/v1/alerts", params={"model": "bot"}).json()["alerts"][0]["id"]
    for _ in range(2):
        r = client.post(f"/api/v1/alerts/{alert_id}/ack",
                        headers=bearer(make_key("operator")))
        assert r.status_code == 200, r.text
    with session_scope() as s:
        rows = s.execute(select(Notification.event, Notification.payload)
                         .where(Notification.alert_id == alert_id)
                         .order_by(Notification.id)).all()
    assert [event for event, _ in rows] == ["trigger", "acknowledge"]
    assert rows[1].payload["acknowledged_by"] == r.json()["acknowledged_by"]


def test_ack_names_the_key_by_its_description(client, database_url, make_key):
    from service.domain.keys import create_key

    fire(make_model("bot"))
    alert_id = client.get("/api/v1/alerts", params={"model": "bot"}).json()["alerts"][0]["id"]
    with session_scope() as s:
        key = create_key(s, "operator", None, "on-call  rotation:\nAda")
    r = client.post(f"/api/v1/alerts/{alert_id}/ack", headers=bearer(key))
    assert r.status_code == 200, r.text
    # whitespace folded: the name goes into one-line messages
    assert r.json()["acknowledged_by"] == "on-call rotation: Ada"
    with session_scope() as s:
        payload = s.scalar(select(Notification.payload)
                           .where(Notification.event == "acknowledge"))
    assert payload is None  # no channel was paged, so nobody is told


def test_ack_with_a_key_for_another_model_is_not_found(client, database_url, make_key):
    fire(make_model("bot"))
    make_model("other")
    alert_id = client.get("/api/v1/alerts").json()["alerts"][0]["id"]
    problem(client.post(f"/api/v1/alerts/{alert_id}/ack",
                        headers=bearer(make_key("operator", "other"))), 404)
    r = client.post(f"/api/v1/alerts/{alert_id}/ack",
                    headers=bearer(make_key("operator", "bot")))
    assert r.status_code == 200


def test_resolved_alert_cannot_be_acknowledged(client, database_url, make_key):
    model_id = make_model("bot")
    fire(model_id)
    fire(model_id, "healthy")
    alert = client.get("/api/v1/alerts", params={"state": "resolved"}).json()["alerts"][0]
    assert "resolved" in problem(client.post(f"/api/v1/alerts/{alert['id']}/ack",
                                             headers=bearer(make_key("operator"))),
                                 409)["detail"]


def test_acknowledging_a_superseded_alert_names_the_one_that_took_over(client, database_url,
                                                                       make_key):
    model_id = make_model("bot")
    fire(model_id, "early_collapse")
    fire(model_id, "collapse")
    alerts = {a["kind"]: a for a in client.get("/api/v1/alerts").json()["alerts"]}
    warning, critical = alerts["early_collapse"], alerts["collapse"]
    assert warning["state"] == "resolved" and critical["state"] == "firing"
    detail = problem(client.post(f"/api/v1/alerts/{warning['id']}/ack",
                                 headers=bearer(make_key("operator"))), 409)["detail"]
    assert f"superseded by alert {critical['id']}" in detail


def test_rules_list_shows_defaults(client, database_url):
    make_model("bot")
    r = client.get("/api/v1/models/bot/alert-rules")
    assert r.status_code == 200
    rules = {x["kind"]: x for x in r.json()["rules"]}
    assert list(rules) == list(engine.RULE_KINDS)
    assert rules["collapse"]["severity"] == "critical"
    assert rules["early_collapse"]["fire_after_windows"] == 2
    assert rules["no_samples"]["threshold_seconds"] > 0
    problem(client.get("/api/v1/models/ghost/alert-rules"), 404)


def test_edit_rule(client, database_url, admin_headers):
    make_model("bot")
    url = "/api/v1/models/bot/alert-rules/early_collapse"
    body = {"fire_after_windows": 3, "resolve_after_windows": 4, "severity": "critical",
            "params": {"thresholds": {"tail_coverage": 0.8}}}
    r = client.patch(url, json=body, headers=admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["fire_after_windows"] == 3 and r.json()["severity"] == "critical"
    assert r.json()["params"] == {"thresholds": {"tail_coverage": 0.8}, "against": "baseline"}
    r = client.patch("/api/v1/models/bot/alert-rules/no_samples",
                     json={"threshold_seconds": 600, "enabled": False}, headers=admin_headers)
    assert r.json()["threshold_seconds"] == 600 and r.json()["enabled"] is False
    listed = {x["kind"]: x for x in client.get("/api/v1/models/bot/alert-rules").json()["rules"]}
    assert listed["early_collapse"]["resolve_after_windows"] == 4
    assert listed["no_samples"]["enabled"] is False


@pytest.mark.parametrize("kind,body,status,needle", [
    ("collapse", {"fire_after_windows": 0}, 422, "fire_after_windows"),
    ("collapse", {"threshold_seconds": 60}, 422, "threshold_seconds"),
    ("collapse", {"params": {"thresholds": {"vibes": 0.5}}}, 422, "vibes"),
    ("collapse", {"params": {"limit": 1}}, 422, "limit"),
    ("collapse", {"severity": "fatal"}, 422, "severity"),
    ("collapse", {"enabled": None}, 422, "enabled"),
    ("collapse", {"surprise": 1}, 422, "surprise"),
    ("no_samples", {"params": {"thresholds": {}}}, 422, "params"),
    ("nonsense", {"enabled": False}, 404, "nonsense"),
])
def test_bad_rule_edits_change_nothing(client, database_url, admin_headers, kind, body, status,
                                       needle):
    make_model("bot")
    before = client.get("/api/v1/models/bot/alert-rules").json()
    r = client.patch(f"/api/v1/models/bot/alert-rules/{kind}", json=body, headers=admin_headers)
    assert needle in problem(r, status)["detail"]
    assert client.get("/api/v1/models/bot/alert-rules").json() == before


def test_rule_edits_need_an_admin_key(client, database_url, make_key):
    make_model("bot")
    url = "/api/v1/models/bot/alert-rules/collapse"
    problem(client.patch(url, json={"enabled": False}), 401)
    problem(client.patch(url, json={"enabled": False},
                         headers=bearer(make_key("ingest", "bot"))), 403)


def test_disabling_a_firing_rule_resolves_its_alert(client, database_url, admin_headers):
    model_id = make_model("bot")
    make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/x"})
    fire(model_id)
    r = client.patch("/api/v1/models/bot/alert-rules/collapse", json={"enabled": False},
                     headers=admin_headers)
    assert r.status_code == 200
    states = {a["kind"]: a["state"] for a in client.get("/api/v1/alerts").json()["alerts"]}
    assert states == {"collapse": "resolved"}
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Notification)
                        .where(Notification.event == "resolve")) == 1


CHANNEL = {"name": "oncall", "kind": "pagerduty", "min_severity": "critical",
           "config": {"routing_key": "R" * 32}}


def test_channels_crud_redacts_secrets(client, database_url, admin_headers):
    r = client.post("/api/v1/channels", json=CHANNEL, headers=admin_headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["config"] == {"routing_key": "***",
                                 "url": "https://events.pagerduty.com/v2/enqueue"}
    assert "R" * 32 not in r.text
    listed = client.get("/api/v1/channels", headers=admin_headers).json()["channels"]
    assert [c["name"] for c in listed] == ["oncall"] and "R" * 32 not in str(listed)
    assert client.get(f"/api/v1/channels/{created['id']}", headers=admin_headers).json()[
        "min_severity"] == "critical"
    with session_scope() as s:  # the secret itself is stored for delivery
        assert s.scalar(select(Channel.config))["routing_key"] == "R" * 32
    assert client.delete(f"/api/v1/channels/{created['id']}", headers=admin_headers
                         ).status_code == 204
    problem(client.delete(f"/api/v1/channels/{created['id']}", headers=admin_headers), 404)
    assert client.get("/api/v1/channels", headers=admin_headers).json()["channels"] == []


@pytest.mark.parametrize("change,status,needle", [
    ({"kind": "carrier-pigeon"}, 422, "carrier-pigeon"),
    ({"config": {}}, 422, "routing_key"),
    ({"config": {"routing_key": "k", "url": "gopher://x"}}, 422, "url"),
    ({"min_severity": "page"}, 422, "min_severity"),
    ({"name": ""}, 422, "name"),
])
def test_bad_channels_are_rejected(client, database_url, admin_headers, change, status, needle):
    r = client.post("/api/v1/channels", json={**CHANNEL, **change}, headers=admin_headers)
    assert needle in problem(r, status)["detail"]
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Channel)) == 0


def test_duplicate_channel_name_conflicts(client, database_url, admin_headers):
    assert client.post("/api/v1/channels", json=CHANNEL, headers=admin_headers).status_code == 201
    problem(client.post("/api/v1/channels", json=CHANNEL, headers=admin_headers), 409)


def test_channels_need_an_admin_key(client, database_url, make_key):
    problem(client.get("/api/v1/channels"), 401)
    problem(client.post("/api/v1/channels", json=CHANNEL, headers=bearer(make_key("read"))), 403)
    problem(client.delete("/api/v1/channels/1", headers=bearer(make_key("ingest"))), 403)


def test_deleting_a_channel_drops_its_outbox_rows(client, database_url, admin_headers):
    cid = make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/x"})
    fire(make_model("bot"))
    listed = client.get(f"/api/v1/channels/{cid}", headers=admin_headers).json()
    assert listed["notifications"] == {"pending": 1}
    client.delete(f"/api/v1/channels/{cid}", headers=admin_headers)
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Notification)) == 0
        assert s.scalar(select(func.count()).select_from(AlertRule)) == len(engine.RULE_KINDS)


def test_alert_detail_shows_delivery_and_dead_letters_can_be_retried(client, database_url,
                                                                     admin_headers, make_key):
    cid = make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/x"})
    fire(make_model("bot"))
    alert_id = client.get("/api/v1/alerts", params={"model": "bot"}).json()["alerts"][0]["id"]
    detail = client.get(f"/api/v1/alerts/{alert_id}").json()
    (note,) = detail["notifications"]
    assert (note["channel"], note["event"], note["status"], note["attempts"]) == (
        "hook", "trigger", "pending", 0)
    with session_scope() as s:
        for row in s.scalars(select(Notification)):
            row.status, row.attempts, row.last_error = "dead", 8, "webhook answered HTTP 410"
    assert client.get(f"/api/v1/alerts/{alert_id}").json()["notifications"][0][
        "last_error"] == "webhook answered HTTP 410"
    problem(client.post(f"/api/v1/channels/{cid}/retry", headers=bearer(make_key("read"))), 403)
    problem(client.post("/api/v1/channels/999/retry", headers=admin_headers), 404)
    r = client.post(f"/api/v1/channels/{cid}/retry", headers=admin_headers)
    assert r.status_code == 200 and r.json() == {"requeued": 1}
    with session_scope() as s:
        assert {(n.status, n.attempts) for n in s.scalars(select(Notification))} == {
            ("pending", 0)}
    assert client.post(f"/api/v1/channels/{cid}/retry", headers=admin_headers).json() == {
        "requeued": 0}
