"""Channels and outbox delivery against a real loopback HTTP server that records requests."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from service.channels import (
    CHANNEL_KINDS,
    ChannelConfigError,
    DeliveryError,
    DestinationRefused,
    Message,
    build_channel,
)
from service.channels.base import parse_retry_after
from service.channels.webhook import SIGNATURE_HEADER, verify
from service.delivery import outbox
from service.domain import alerts as engine
from service.domain.db import session_scope
from service.domain.tables import Alert, Channel, Notification
from service.settings import get_settings
from tests.service.alert_fixtures import (
    add_evaluation,
    allow_loopback_channels,
    make_channel,
    make_model,
)
from tests.support import recording_server

SECRET = "s3cret-s3cret-s3cret"


@pytest.fixture(autouse=True)
def _loopback_receivers(monkeypatch):
    # the receivers below are loopback stand-ins; tests of the refusal pass their own list
    allow_loopback_channels(monkeypatch)


def message(event: str = "trigger", nid: int = 7) -> Message:
    return Message(notification_id=nid, event=event, payload={
        "alert_id": 3, "dedup_key": "collapsewatch/bot/collapse", "model": "bot",
        "kind": "collapse", "severity": "critical", "state": "firing",
        "title": "bot: collapse", "summary": "model 'bot' is in collapse for 2 windows",
        "details": {"health": "collapse"}, "started_at": "2026-01-01T00:00:00+00:00",
        "url": "http://127.0.0.1:8000/api/v1/alerts?model=bot"})


# ---------------------------------------------------------------------------- channel formats


def test_every_channel_kind_is_discovered():
    assert set(CHANNEL_KINDS) == {"webhook", "slack", "pagerduty"}


def test_webhook_posts_signed_json():
    with recording_server() as srv:
        build_channel("webhook", {"url": srv.url + "/hook", "secret": SECRET}).send(message())
        (req,) = srv.received("/hook")
    body = req.json()
    assert body["event"] == "trigger" and body["model"] == "bot" and body["notification_id"] == 7
    assert req.headers["X-Collapsewatch-Event"] == "trigger"
    assert req.headers["Idempotency-Key"] == "collapsewatch-notification-7"
    signature = req.headers[SIGNATURE_HEADER]
    assert verify(SECRET, signature, req.body)
    assert not verify("another-secret-xxxxxxx", signature, req.body)
    assert not verify(SECRET, signature, req.body + b" ")
    # a replayed request outside the tolerance is rejected
    assert not verify(SECRET, signature, req.body, now=time.time() + 3600)


def test_webhook_without_secret_sends_no_signature():
    with recording_server() as srv:
        build_channel("webhook", {"url": srv.url}).send(message())
        (req,) = srv.received()
    assert SIGNATURE_HEADER not in req.headers


def test_slack_incoming_webhook_message():
    with recording_server() as srv:
        ch = build_channel("slack", {"webhook_url": srv.url + "/services/T/B/X"})
        ch.send(message())
        ack = message("acknowledge", nid=9)
        ack.payload["acknowledged_by"] = "key:cw_abcd"
        ch.send(ack)
        ch.send(message("resolve"))
        trigger, acknowledged, resolve = srv.received("/services/T/B/X")
    assert "FIRING [critical] bot: collapse" in trigger.json()["text"]
    assert trigger.json()["blocks"][0]["text"]["type"] == "mrkdwn"
    assert "ACKNOWLEDGED by key:cw_abcd [critical] bot: collapse" in acknowledged.json()["text"]
    assert "RESOLVED" in resolve.json()["text"]


def test_pagerduty_trigger_then_resolve_with_the_same_dedup_key():
    def accept(_req):
        return 202, {"content-type": "application/json"}, b'{"status":"success"}'

    with recording_server(accept) as srv:
        ch = build_channel("pagerduty", {"routing_key": "R" * 32, "url": srv.url + "/v2/enqueue"})
        ch.send(message("trigger"))
        ch.send(message("acknowledge", nid=9))
        ch.send(message("resolve", nid=8))
        trigger, ack, resolve = (r.json() for r in srv.received("/v2/enqueue"))
    assert [e["event_action"] for e in (trigger, ack, resolve)] == [
        "trigger", "acknowledge", "resolve"]
    assert trigger["dedup_key"] == ack["dedup_key"] == resolve["dedup_key"] == \
        "collapsewatch/bot/collapse"
    assert set(ack) == {"routing_key", "event_action", "dedup_key"}
    assert trigger["routing_key"] == resolve["routing_key"] == "R" * 32
    p = trigger["payload"]
    assert p["severity"] == "critical" and p["source"] == "collapsewatch/bot"
    assert p["summary"] == "bot: collapse" and p["class"] == "collapse"
    assert set(resolve) == {"routing_key", "event_action", "dedup_key"}


@pytest.mark.parametrize("status,retryable", [(429, True), (500, True), (503, True),
                                               (400, False), (404, False)])
def test_http_failures_are_classified(status, retryable):
    with recording_server() as srv:
        srv.fail_next(status)
        ch = build_channel("pagerduty", {"routing_key": "R" * 32, "url": srv.url})
        with pytest.raises(DeliveryError) as info:
            ch.send(message())
    assert info.value.retryable is retryable and info.value.status == status


def test_connection_refused_is_retryable():
    with recording_server() as srv:
        url = srv.url
    with pytest.raises(DeliveryError) as info:
        build_channel("webhook", {"url": url}, timeout=2).send(message())
    assert info.value.retryable


@pytest.mark.parametrize("kind,config,field", [
    ("webhook", {}, "url"),
    ("webhook", {"url": "ftp://x"}, "url"),
    ("webhook", {"url": "http://x", "secret": "short"}, "secret"),
    ("webhook", {"url": "http://x", "colour": "red"}, "colour"),
    ("slack", {"webhook_url": ""}, "webhook_url"),
    ("pagerduty", {}, "routing_key"),
    ("pagerduty", {"routing_key": "k", "url": "nope"}, "url"),
])
def test_bad_config_names_the_field(kind, config, field):
    with pytest.raises(ChannelConfigError, match=field):
        build_channel(kind, config)


def test_secrets_are_redacted():
    assert CHANNEL_KINDS["pagerduty"].redact({"routing_key": "abc", "url": "u"}) == {
        "routing_key": "***", "url": "u"}
    assert CHANNEL_KINDS["webhook"].redact({"url": "u", "secret": "x" * 20})["secret"] == "***"


def test_retry_after_header_forms():
    assert parse_retry_after("30") == 30.0
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", now) == 60.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


def test_backoff_is_exponential_and_capped():
    delays = [outbox.backoff_seconds(n, 5, 60) for n in range(1, 7)]
    assert delays == [5, 10, 20, 40, 60, 60]


# ---------------------------------------------------------------------------- outbox delivery


def fire_collapse(model_id: int) -> list[int]:
    for _ in range(2):
        add_evaluation(model_id, "collapse")
    with session_scope() as s:
        return engine.evaluate_model(s, model_id).notification_ids


def resolve_collapse(model_id: int) -> list[int]:
    ids = []
    for _ in range(2):
        add_evaluation(model_id, "healthy")
        with session_scope() as s:
            ids += engine.evaluate_model(s, model_id).notification_ids
    return ids


def row(nid: int) -> Notification:
    with session_scope() as s:
        return s.get(Notification, nid)


def drain(now: datetime, rounds: int = 50, step: timedelta = timedelta(minutes=30)) -> datetime:
    """What the sweeper does over time: deliver every due row, then let time pass."""
    for _ in range(rounds):
        with session_scope() as s:
            due = outbox.due_ids(s, now)
        with session_scope() as s:
            open_rows = s.scalars(select(Notification.id).where(
                Notification.status.in_(("pending", "sending")))).all()
        if not open_rows:
            return now
        for nid in due:
            outbox.deliver(nid, now=now)
        now += step
    raise AssertionError("outbox did not drain")


def test_delivery_marks_sent_and_never_sends_twice(database_url, service_env):
    with recording_server() as srv:
        make_channel("hook", "webhook", {"url": srv.url + "/h", "secret": SECRET})
        model_id = make_model()
        ids = fire_collapse(model_id)
        assert ids
        for nid in ids:
            assert outbox.deliver(nid).status == "sent"
            assert outbox.deliver(nid).status == "skipped"
        assert len(srv.received("/h")) == len(ids)
        for nid in ids:
            r = row(nid)
            assert (r.status, r.attempts, r.last_error) == ("sent", 1, None)
            assert r.sent_at is not None


@pytest.mark.parametrize("status", [429, 500])
def test_retryable_failures_back_off_then_succeed(database_url, service_env, status):
    with recording_server() as srv:
        make_channel("pd", "pagerduty", {"routing_key": "R" * 32, "url": srv.url},
                     min_severity="critical")
        (nid,) = fire_collapse(make_model())
        srv.fail_next(status, 2)
        now = datetime.now(UTC)
        first = outbox.deliver(nid, now=now)
        s = get_settings()
        # the base delay, shortened by up to NOTIFY_BACKOFF_JITTER
        base = s.notify_backoff_base_seconds
        assert first.status == "retry"
        assert (1 - s.notify_backoff_jitter) * base <= first.delay <= base
        r = row(nid)
        assert r.status == "pending" and r.attempts == 1 and str(status) in r.last_error
        # not due yet: the backoff holds it back
        assert outbox.deliver(nid, now=now).status == "skipped"
        second = outbox.deliver(nid, now=now + timedelta(seconds=first.delay + 0.1))
        assert second.status == "retry"
        assert (1 - s.notify_backoff_jitter) * 2 * base <= second.delay <= 2 * base
        later = now + timedelta(seconds=first.delay + second.delay + 1)
        assert outbox.deliver(nid, now=later).status == "sent"
        assert len(srv.received()) == 1
        assert row(nid).attempts == 3


def test_bad_request_is_dead_lettered_without_retry(database_url, service_env):
    with recording_server() as srv:
        make_channel("pd", "pagerduty", {"routing_key": "R" * 32, "url": srv.url},
                     min_severity="critical")
        (nid,) = fire_collapse(make_model())
        srv.fail_next(400)
        result = outbox.deliver(nid)
        assert result.status == "dead"
        r = row(nid)
        assert r.status == "dead" and r.attempts == 1 and "HTTP 400" in r.last_error
        assert outbox.deliver(nid, now=datetime.now(UTC) + timedelta(days=1)).status == "skipped"
        with session_scope() as s:
            assert outbox.due_ids(s, datetime.now(UTC) + timedelta(days=1)) == []


def test_attempts_are_capped(database_url, service_env, monkeypatch):
    monkeypatch.setenv("COLLAPSEWATCH_NOTIFY_MAX_ATTEMPTS", "3")
    get_settings.cache_clear()
    with recording_server() as srv:
        make_channel("hook", "webhook", {"url": srv.url})
        nid = fire_collapse(make_model())[0]
        srv.fail_next(503, 10)
        now = datetime.now(UTC)
        statuses = []
        for _ in range(5):
            statuses.append(outbox.deliver(nid, now=now).status)
            now += timedelta(hours=1)
        assert statuses == ["retry", "retry", "dead", "skipped", "skipped"]
        assert row(nid).attempts == 3 and "503" in row(nid).last_error


def test_down_then_up_loses_nothing_and_sends_nothing_twice(database_url, service_env):
    with recording_server() as srv:
        make_channel("pd", "pagerduty", {"routing_key": "R" * 32, "url": srv.url + "/pd"},
                     min_severity="critical")
        make_channel("hook", "webhook", {"url": srv.url + "/hook"})
        model_id = make_model()
        srv.fail_next(503, 9)  # the far end is down for a while
        fired = fire_collapse(model_id)
        resolved = resolve_collapse(model_id)
        # PagerDuty (critical only) gets one trigger and one resolve; the webhook the rest
        assert len(fired) == len(resolved) >= 2
        drain(datetime.now(UTC))
        pd = [r.json() for r in srv.received("/pd")]
        hooks = [r.json() for r in srv.received("/hook")]
    # every event exactly once, and each resolve after its trigger
    assert [e["event_action"] for e in pd] == ["trigger", "resolve"]
    assert pd[0]["dedup_key"] == pd[1]["dedup_key"]
    expected = len(fired) + len(resolved) - 2
    assert len(hooks) == expected and len({h["notification_id"] for h in hooks}) == expected
    for alert_id in {h["alert_id"] for h in hooks}:
        events = [h["event"] for h in hooks if h["alert_id"] == alert_id]
        assert events == ["trigger", "resolve"]
    with session_scope() as s:
        assert set(s.scalars(select(Notification.status))) == {"sent"}


def test_resolve_waits_for_its_trigger(database_url, service_env):
    with recording_server() as srv:
        make_channel("pd", "pagerduty", {"routing_key": "R" * 32, "url": srv.url},
                     min_severity="critical")
        model_id = make_model()
        (trigger,) = fire_collapse(model_id)
        srv.fail_next(500)
        now = datetime.now(UTC)
        assert outbox.deliver(trigger, now=now).status == "retry"
        (resolve,) = resolve_collapse(model_id)
        waiting = outbox.deliver(resolve, now=now)
        assert waiting.status == "waiting" and row(resolve).attempts == 0
        later = now + timedelta(minutes=5)
        assert outbox.deliver(resolve, now=later).status == "waiting"
        assert outbox.deliver(trigger, now=later).status == "sent"
        assert outbox.deliver(resolve, now=later + timedelta(minutes=1)).status == "sent"
        assert [r.json()["event_action"] for r in srv.received()] == ["trigger", "resolve"]


def test_an_acknowledgement_goes_where_the_trigger_went_and_waits_for_it(database_url,
                                                                         service_env):
    with recording_server() as srv:
        make_channel("pd", "pagerduty", {"routing_key": "R" * 32, "url": srv.url},
                     min_severity="critical")
        make_channel("warnings-only", "webhook", {"url": srv.url + "/w"},
                     min_severity="warning", models=["nobody"])
        model_id = make_model()
        (trigger,) = fire_collapse(model_id)
        srv.fail_next(500)
        now = datetime.now(UTC)
        assert outbox.deliver(trigger, now=now).status == "retry"
        with session_scope() as s:
            alert = s.scalar(select(Alert).where(Alert.model_id == model_id,
                                                 Alert.kind == "collapse"))
            (ack,) = engine.acknowledge(s, alert, "bot", "key:cw_test")
            assert engine.acknowledge(s, alert, "bot", "key:cw_other") == []  # only once
        assert row(ack).event == "acknowledge" and row(ack).channel_id == row(trigger).channel_id
        assert outbox.deliver(ack, now=now).status == "waiting"
        later = now + timedelta(minutes=5)
        assert outbox.deliver(trigger, now=later).status == "sent"
        assert outbox.deliver(ack, now=later + timedelta(minutes=1)).status == "sent"
        sent = [r.json() for r in srv.received()]
    assert [e["event_action"] for e in sent] == ["trigger", "acknowledge"]
    assert sent[0]["dedup_key"] == sent[1]["dedup_key"]


def evaluate_windows(model_id: int, *healths: str) -> list[int]:
    """Score windows one at a time as the pipeline would; the outbox ids they wrote."""
    ids = []
    for health in healths:
        add_evaluation(model_id, health)
        with session_scope() as s:
            ids += engine.evaluate_model(s, model_id).notification_ids
    return ids


def test_an_escalation_and_a_downgrade_read_as_updates_on_every_channel(database_url,
                                                                        service_env):
    with recording_server() as srv:
        make_channel("hook", "webhook", {"url": srv.url + "/hook"})
        make_channel("slack", "slack", {"webhook_url": srv.url + "/slack"})
        make_channel("pd", "pagerduty", {"routing_key": "R" * 32, "url": srv.url + "/pd"})
        model_id = make_model()
        evaluate_windows(model_id, "early_collapse", "early_collapse", "collapse", "collapse",
                         "early_collapse", "early_collapse")
        drain(datetime.now(UTC))
        hooks = [r.json() for r in srv.received("/hook")]
        slack = [r.json()["text"] for r in srv.received("/slack")]
        pd = [r.json() for r in srv.received("/pd")]
    with session_scope() as s:
        warning, critical, _ = s.scalars(select(Alert.id).order_by(Alert.id)).all()
    # the webhook says what happened, under one incident key
    assert [h["event"] for h in hooks] == ["trigger", "update", "update"]
    assert len({h["dedup_key"] for h in hooks}) == 1
    assert [h["severity"] for h in hooks] == ["warning", "critical", "warning"]
    # Slack: one page, then two updates, never a second FIRING
    assert slack[0].startswith(":warning: FIRING [warning] bot: early collapse")
    assert slack[1].startswith(
        f":arrow_up: UPDATED [critical] escalated to collapse from early collapse (tails "
        f"thinning) (alert {warning}) — now bot: collapse — ")
    assert slack[2].startswith(
        f":arrow_down: UPDATED [warning] downgraded to early collapse (tails thinning) from "
        f"collapse (alert {critical}) — now bot: early collapse (tails thinning) — ")
    assert all("FIRING" not in text for text in slack[1:])
    # the change is said once, in the head, not again as the first line of the summary
    assert all(text.count("escalated to") + text.count("downgraded to") == 1
               for text in slack[1:])
    # PagerDuty: an update is a trigger with the same dedup_key (folded into the incident)
    assert [e["event_action"] for e in pd] == ["trigger", "trigger", "trigger"]
    assert len({e["dedup_key"] for e in pd}) == 1
    assert pd[1]["payload"]["severity"] == "critical"
    assert pd[1]["payload"]["summary"].startswith("bot: collapse — ")


def test_an_update_and_a_resolve_wait_for_the_incidents_earlier_events(database_url,
                                                                       service_env):
    with recording_server() as srv:
        make_channel("hook", "webhook", {"url": srv.url})
        model_id = make_model()
        srv.fail_next(503, 3)  # the receiver is down while the incident runs its course
        (trigger,) = evaluate_windows(model_id, "early_collapse", "early_collapse")
        assert outbox.deliver(trigger).status == "retry"
        (update,) = evaluate_windows(model_id, "collapse", "collapse")
        (resolve,) = evaluate_windows(model_id, "healthy", "healthy")
        # the update belongs to another alert (the critical) but to the same incident: it
        # waits for the warning's trigger, and the critical's resolve waits for the update
        assert outbox.deliver(update).status == "waiting"
        assert outbox.deliver(resolve).status == "waiting"
        assert row(update).attempts == row(resolve).attempts == 0
        drain(datetime.now(UTC), step=timedelta(seconds=30))
        sent = [r.json() for r in srv.received()]
    assert [(e["event"], e["notification_id"]) for e in sent] == [
        ("trigger", trigger), ("update", update), ("resolve", resolve)]
    assert len({e["dedup_key"] for e in sent}) == 1


def test_a_new_page_waits_for_the_resolve_that_closed_the_incident_before_it(database_url,
                                                                             service_env):
    with recording_server() as srv:
        make_channel("pd", "pagerduty", {"routing_key": "R" * 32, "url": srv.url},
                     min_severity="critical")
        model_id = make_model()
        (first,) = evaluate_windows(model_id, "collapse", "collapse")
        assert outbox.deliver(first).status == "sent"
        # a downgrade resolves the critical-only pager's incident ...
        (cleared,) = evaluate_windows(model_id, "early_collapse", "early_collapse")
        srv.fail_next(502)
        assert outbox.deliver(cleared).status == "retry"
        # ... and collapse again pages it with the same key: that page must come after the
        # resolve, or the late resolve would close the new incident
        (again,) = evaluate_windows(model_id, "collapse", "collapse")
        assert outbox.deliver(again).status == "waiting"
        drain(datetime.now(UTC), step=timedelta(seconds=30))
        sent = [r.json() for r in srv.received()]
    assert [e["event_action"] for e in sent] == ["trigger", "resolve", "trigger"]
    assert len({e["dedup_key"] for e in sent}) == 1


def test_two_workers_with_the_same_id_send_once(database_url, service_env):
    def slow(_req):
        time.sleep(0.5)
        return 202, {}, b"{}"

    with recording_server(slow) as srv:
        make_channel("hook", "webhook", {"url": srv.url})
        nid = fire_collapse(make_model())[0]
        results: list[str] = []
        barrier = threading.Barrier(3)

        def worker():
            barrier.wait()
            results.append(outbox.deliver(nid).status)

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == ["sent", "skipped", "skipped"]
        assert len(srv.received()) == 1


def test_a_worker_that_died_mid_send_is_retried_after_its_lease(database_url, service_env):
    with recording_server() as srv:
        make_channel("hook", "webhook", {"url": srv.url})
        nid = fire_collapse(make_model())[0]
        now = datetime.now(UTC)
        # claim as a worker would, then "die" before sending
        early, _msg, _channel, attempt, _created = outbox._claim(nid, get_settings(), now)
        assert early is None and attempt == 1 and row(nid).status == "sending"
        with session_scope() as s:
            assert nid not in outbox.due_ids(s, now)
            lease = timedelta(seconds=get_settings().notify_lease_seconds + 1)
            assert nid in outbox.due_ids(s, now + lease)
        assert outbox.deliver(nid, now=now + lease).status == "sent"
        # the dead worker's late result cannot overwrite the newer attempt
        assert not outbox._finish(nid, attempt, {"status": "pending"})
        assert row(nid).status == "sent" and len(srv.received()) == 1


def test_disabled_or_deleted_channel_dead_letters(database_url, service_env):
    with recording_server() as srv:
        cid = make_channel("hook", "webhook", {"url": srv.url})
        nid = fire_collapse(make_model())[0]
        from service.domain.tables import Channel

        with session_scope() as s:
            s.get(Channel, cid).enabled = False
        assert outbox.deliver(nid).status == "dead"
        assert "disabled" in row(nid).last_error
        assert srv.received() == []


# ---------------------------------------------------------------------------- outbound safety

NOBODY: frozenset[str] = frozenset()


@pytest.mark.parametrize("host,address_class", [
    ("127.0.0.1", "loopback"), ("[::1]", "loopback"), ("localhost", "loopback"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("169.254.169.254", "link-local"), ("[fe80::1]", "link-local"),
    ("10.1.2.3", "private"), ("192.168.1.1", "private"), ("172.16.0.1", "private"),
    ("[fd00::1]", "private"),
    ("224.0.0.1", "multicast"), ("[ff02::1]", "multicast"),
    ("0.0.0.0", "unspecified"), ("[::]", "unspecified"),
    ("240.0.0.1", "reserved"), ("100.64.0.1", "non-public"),
])
def test_internal_addresses_are_refused_by_class(host, address_class):
    for kind, config in (("webhook", {"url": f"http://{host}:8080/hook"}),
                         ("slack", {"webhook_url": f"https://{host}/services/T/B/X"}),
                         ("pagerduty", {"routing_key": "R" * 32,
                                        "url": f"http://{host}/v2/enqueue"})):
        cls = CHANNEL_KINDS[kind]
        with pytest.raises(DestinationRefused) as info:
            cls.check_destinations(cls.validate_config(config), NOBODY)
        assert info.value.address_class == address_class
        assert f"a {address_class} address" in str(info.value)


def test_public_addresses_and_allowed_hosts_pass():
    webhook = CHANNEL_KINDS["webhook"]
    webhook.check_destinations({"url": "http://93.184.215.14/hook"}, NOBODY)
    webhook.check_destinations({"url": "http://[2606:4700::1111]/hook"}, NOBODY)
    webhook.check_destinations({"url": "http://127.0.0.1:9/hook"}, frozenset({"127.0.0.1"}))
    # an allow-listed name does not allow the address it happens to resolve to
    with pytest.raises(DestinationRefused):
        webhook.check_destinations({"url": "http://127.0.0.1:9/hook"}, frozenset({"localhost"}))


def test_send_to_a_loopback_receiver_needs_the_allow_list():
    with recording_server() as srv:
        for kind, config in (("webhook", {"url": srv.url + "/h"}),
                             ("slack", {"webhook_url": srv.url + "/h"}),
                             ("pagerduty", {"routing_key": "R" * 32, "url": srv.url + "/h"})):
            with pytest.raises(DeliveryError) as info:
                build_channel(kind, config, allowed_hosts=NOBODY).send(message())
            assert not info.value.retryable and "loopback" in str(info.value)
        assert srv.received() == []
        build_channel("webhook", {"url": srv.url + "/h"},
                      allowed_hosts=frozenset({"127.0.0.1"})).send(message())
        assert len(srv.received("/h")) == 1


def test_channel_creation_refuses_internal_urls_with_422(client, database_url, admin_headers,
                                                         monkeypatch):
    monkeypatch.setenv("COLLAPSEWATCH_CHANNEL_ALLOWED_HOSTS", "")
    get_settings.cache_clear()
    for url, address_class in (("http://169.254.169.254/latest/meta-data/", "link-local"),
                               ("http://127.0.0.1:5432/", "loopback"),
                               ("http://localhost:6379/", "loopback"),
                               ("http://10.0.0.7/hook", "private")):
        r = client.post("/api/v1/channels", headers=admin_headers, json={
            "name": "hook", "kind": "webhook", "config": {"url": url}})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert address_class in r.json()["detail"] and r.json()["address_class"] == address_class
    r = client.post("/api/v1/channels", headers=admin_headers, json={
        "name": "pd", "kind": "pagerduty",
        "config": {"routing_key": "R" * 32, "url": "http://[::1]:9/v2/enqueue"}})
    assert r.status_code == 422 and "config.url" in r.json()["detail"]
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Channel)) == 0
    monkeypatch.setenv("COLLAPSEWATCH_CHANNEL_ALLOWED_HOSTS", "127.0.0.1")
    get_settings.cache_clear()
    r = client.post("/api/v1/channels", headers=admin_headers, json={
        "name": "hook", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/hook"}})
    assert r.status_code == 201, r.text


def test_a_host_that_turned_internal_is_refused_at_send_time(database_url, service_env,
                                                             monkeypatch):
    """Checked at creation is not enough: DNS answers change. Dropping the host from the
    allow-list stands in for a name that now resolves to an internal address."""
    with recording_server() as srv:
        make_channel("hook", "webhook", {"url": f"http://localhost:{srv.port}/h"})
        (nid,) = fire_collapse(make_model())[:1]
        monkeypatch.setenv("COLLAPSEWATCH_CHANNEL_ALLOWED_HOSTS", "")
        get_settings.cache_clear()
        assert outbox.deliver(nid).status == "dead"
        assert "loopback" in row(nid).last_error
        assert srv.received() == []


@contextmanager
def raw_server(handle):
    """A loopback TCP server whose connections are handled by ``handle(conn)`` (a thread
    each); for receivers no well-behaved HTTP server would imitate."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=_handle_quietly, args=(handle, conn, stop),
                             daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _handle_quietly(handle, conn, stop):
    with conn:
        conn.settimeout(30)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(65536)
            if not chunk:
                return
            request += chunk
        try:
            handle(conn, stop)
        except OSError:  # the client hung up: what the cap and the deadline are for
            pass


def test_a_slow_drip_reply_hits_the_one_total_deadline():
    def drip(conn, stop):
        # a byte every 0.2 s never trips a per-read timeout; gives up after 20 s
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        for _ in range(100):
            if stop.is_set():
                return
            conn.sendall(b"x")
            time.sleep(0.2)

    with raw_server(drip) as url:
        started = time.monotonic()
        with pytest.raises(DeliveryError) as info:
            build_channel("webhook", {"url": url}, timeout=1.5).send(message())
        elapsed = time.monotonic() - started
    assert info.value.retryable and "within 1.5 s" in str(info.value)
    assert elapsed < 5, f"the send took {elapsed:.1f} s with a 1.5 s deadline"


@pytest.mark.parametrize("status", [200, 500])
def test_a_huge_reply_is_read_only_up_to_64_kib(status):
    total = 32 * 1024 * 1024
    written: list[int] = []

    def flood(conn, stop):
        conn.sendall(f"HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\n"
                     f"content-length: {total}\r\n\r\n".encode())
        block, sent = b"internal-detail " * 4096, 0
        try:
            while sent < total and not stop.is_set():
                sent += conn.send(block)
        finally:
            written.append(sent)

    with raw_server(flood) as url:
        channel = build_channel("webhook", {"url": url}, timeout=20)
        if status == 200:
            channel.send(message())
        else:
            with pytest.raises(DeliveryError) as info:
                channel.send(message())
            assert info.value.status == 500 and "internal-detail" not in str(info.value)
        deadline = time.monotonic() + 10
        while not written and time.monotonic() < deadline:
            time.sleep(0.05)
    # what the server got into the socket before the client hung up: the 64 KiB read plus
    # whatever the kernel buffers on both ends held, far below the 32 MiB on offer
    assert written and written[0] < 8 * 1024 * 1024, written


def test_last_error_keeps_the_status_and_not_the_reply_body(database_url, service_env,
                                                            caplog):
    def leak(_req):
        return 500, {"content-type": "text/plain"}, b"db password is hunter2"

    with recording_server(leak) as srv:
        make_channel("hook", "webhook", {"url": srv.url + "/h"})
        (nid,) = fire_collapse(make_model())[:1]
        with caplog.at_level("WARNING", logger="collapsewatch.channels"):
            assert outbox.deliver(nid).status == "retry"
    assert row(nid).last_error == "webhook answered HTTP 500 (reply body in the server log)"
    assert any("hunter2" in str(getattr(r, "reply_body", "")) for r in caplog.records)
