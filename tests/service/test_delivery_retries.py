"""Delivery over a long receiver outage, dead letters as their own alert, and the log lines
delivery writes (read back as JSON)."""

from __future__ import annotations

import io
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from service.delivery import outbox
from service.domain import alerts as engine
from service.domain.clock import as_utc_or_none
from service.domain.db import session_scope
from service.domain.tables import Notification
from service.logging import JsonFormatter
from service.settings import get_settings
from tests.service.alert_fixtures import (
    add_evaluation,
    allow_loopback_channels,
    make_channel,
    make_model,
)
from tests.support import recording_server


@pytest.fixture(autouse=True)
def _loopback_receivers(monkeypatch):
    allow_loopback_channels(monkeypatch)


def fire_collapse(model_id: int) -> list[int]:
    for _ in range(2):
        add_evaluation(model_id, "collapse")
    with session_scope() as s:
        return engine.evaluate_model(s, model_id).notification_ids


def row(nid: int) -> Notification:
    with session_scope() as s:
        return s.get(Notification, nid)


class Outage:
    """A receiver that answers 503 until ``up_at`` (a time on the test's clock)."""

    def __init__(self, up_at: datetime | None) -> None:
        self.up_at = up_at
        self.now = datetime.now(UTC)

    def __call__(self, _request):
        if self.up_at is None or self.now < self.up_at:
            return 503, {"content-type": "application/json"}, b'{"error":"down"}'
        return 202, {"content-type": "application/json"}, b'{"status":"success"}'


def follow(nid: int, outage: Outage, limit: int = 200) -> list[tuple[datetime, str]]:
    """Deliver the row every time it falls due, as the sweeper would, until it is final."""
    attempts = []
    for _ in range(limit):
        r = row(nid)
        if r.status in ("sent", "dead"):
            return attempts
        outage.now = max(outage.now, as_utc_or_none(r.next_attempt_at))
        attempts.append((outage.now, outbox.deliver(nid, now=outage.now).status))
    raise AssertionError("delivery did not finish")


@pytest.fixture
def json_log():
    """The outbox's log lines as the JSON formatter writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("collapsewatch.alerting.outbox")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_a_page_survives_a_three_hour_receiver_outage(database_url, service_env):
    """Eight doubling attempts gave up after ~10.5 minutes; the page now waits for the
    receiver, with retries spread by jitter and never further apart than the cap."""
    s = get_settings()
    with recording_server() as srv:
        make_channel("pd", "pagerduty", {"routing_key": "R" * 32, "url": srv.url},
                     min_severity="critical")
        (nid,) = fire_collapse(make_model())
        created = as_utc_or_none(row(nid).created_at)
        outage = Outage(up_at=created + timedelta(hours=3))
        srv.responder = outage
        attempts = follow(nid, outage)
        assert len(srv.received()) == len(attempts)
    assert [status for _, status in attempts].count("sent") == 1
    assert row(nid).status == "sent"
    times = [t for t, _ in attempts]
    assert attempts[-1][1] == "sent" and times[-1] >= outage.up_at
    # sent within one backoff cap of the receiver coming back
    assert times[-1] - outage.up_at <= timedelta(seconds=s.notify_backoff_max_seconds)
    assert len(attempts) > 8
    gaps = [(b - a).total_seconds() for a, b in pairwise(times)]
    assert max(gaps) <= s.notify_backoff_max_seconds
    # jitter: the delays are not the bare doubling sequence
    bare = [outbox.backoff_seconds(n, s.notify_backoff_base_seconds,
                                   s.notify_backoff_max_seconds) for n in range(1, len(gaps) + 1)]
    assert gaps != bare
    assert all((1 - s.notify_backoff_jitter) * b - 1e-6 <= g <= b + 1e-6
               for g, b in zip(gaps, bare))


def test_a_receiver_down_for_the_whole_horizon_dead_letters_the_page(database_url, service_env,
                                                                     monkeypatch, json_log):
    monkeypatch.setenv("COLLAPSEWATCH_NOTIFY_RETRY_HOURS", "1")
    get_settings.cache_clear()
    outage = Outage(up_at=None)
    with recording_server(outage) as srv:
        make_channel("pd", "pagerduty", {"routing_key": "R" * 32, "url": srv.url},
                     min_severity="critical")
        (nid,) = fire_collapse(make_model())
        created = as_utc_or_none(row(nid).created_at)
        attempts = follow(nid, outage)
    assert row(nid).status == "dead" and "503" in row(nid).last_error
    assert attempts[-1][1] == "dead"
    # the last attempt is at the horizon, not a backoff step short of it
    assert attempts[-1][0] == created + timedelta(hours=1)
    dead = [line for line in json_log() if line["event"] == "notification dead-lettered"]
    assert len(dead) == 1 and dead[0]["reason"] == "retry horizon passed"


def test_delivery_log_lines_say_what_happened_and_keep_the_notification_type(
        database_url, service_env, json_log):
    with recording_server() as srv:
        make_channel("hook", "webhook", {"url": srv.url})
        (nid,) = fire_collapse(make_model())
        srv.fail_next(503)
        now = datetime.now(UTC)
        assert outbox.deliver(nid, now=now).status == "retry"
        assert outbox.deliver(nid, now=now + timedelta(minutes=5)).status == "sent"
    lines = json_log()
    assert [line["event"] for line in lines] == ["notification failed; will retry",
                                                 "notification sent"]
    for line in lines:
        assert line["notification_event"] == "trigger"
        assert line["notification_id"] == nid and line["channel"] == "hook"
    assert lines[0]["retry_in_seconds"] > 0 and "503" in lines[0]["error"]


def test_an_extra_field_cannot_replace_the_base_fields_of_a_log_line():
    record = logging.makeLogRecord({"name": "x", "levelname": "INFO", "msg": "notification sent",
                                    "event": "trigger", "level": "loud", "ts": 1, "logger": "y"})
    line = json.loads(JsonFormatter().format(record))
    assert (line["event"], line["level"], line["logger"]) == ("notification sent", "info", "x")
    assert line["extra_event"] == "trigger" and line["extra_level"] == "loud"
    assert line["extra_ts"] == 1 and line["extra_logger"] == "y"
    assert line["ts"] != 1


def test_dead_letters_are_exported_per_channel(database_url, service_env, client):
    with recording_server() as srv:
        make_channel("pager", "pagerduty", {"routing_key": "R" * 32, "url": srv.url + "/pd"},
                     min_severity="critical")
        make_channel("hook", "webhook", {"url": srv.url + "/hook"})
        ids = fire_collapse(make_model())
        text = client.get("/metrics").text
        assert ('collapsewatch_channel_notifications_dead{channel="pager",kind="pagerduty",'
                'severity="critical"} 0.0') in text
        srv.fail_next(400, len(ids))  # a bad event: not retried
        for nid in ids:
            assert outbox.deliver(nid).status == "dead"
    # /metrics is cached for METRICS_CACHE_SECONDS
    deadline = time.monotonic() + get_settings().metrics_cache_seconds + 5
    while time.monotonic() < deadline:
        text = client.get("/metrics").text
        if 'channel="pager",kind="pagerduty",severity="critical"} 1.0' in text:
            break
        time.sleep(0.5)
    assert 'channel="pager",kind="pagerduty",severity="critical"} 1.0' in text
    assert 'channel="hook",kind="webhook",severity="critical"} 1.0' in text


def test_a_requeued_dead_letter_gets_a_whole_horizon_again(database_url, service_env,
                                                           monkeypatch):
    """POST /channels/{id}/retry gives dead rows a fresh set of attempts: hours after the row
    was written, one more failure is a retry, not an instant second dead letter."""
    from service.domain.alert_config import requeue_dead

    monkeypatch.setenv("COLLAPSEWATCH_NOTIFY_RETRY_HOURS", "1")
    get_settings.cache_clear()
    outage = Outage(up_at=None)
    with recording_server(outage) as srv:
        make_channel("pd", "pagerduty", {"routing_key": "R" * 32, "url": srv.url},
                     min_severity="critical")
        (nid,) = fire_collapse(make_model())
        follow(nid, outage)
        assert row(nid).status == "dead"
        outage.now += timedelta(hours=5)  # the operator fixes things much later
        with session_scope() as s:
            assert requeue_dead(s, [nid]) == 1
        assert outbox.deliver(nid, now=outage.now).status == "retry"
        outage.up_at = outage.now + timedelta(minutes=30)
        attempts = follow(nid, outage)
    assert attempts[-1][1] == "sent" and row(nid).status == "sent"
