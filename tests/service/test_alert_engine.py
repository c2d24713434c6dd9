"""Alert engine: hysteresis, idempotence per evaluation, outbox rows, time rules."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from service.domain import alerts as engine
from service.domain.alerts import BAD, GOOD, Counters, classify, dedup_key, step
from service.domain.db import session_scope
from service.domain.tables import Alert, AlertRule, AlertState, MonitoredModel, Notification
from tests.service.alert_fixtures import (
    add_evaluation,
    add_samples,
    make_channel,
    make_model,
    score_json,
    set_status,
)

# ---------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize("health,early,collapse", [
    ("healthy", GOOD, GOOD),
    ("early_collapse", BAD, GOOD),
    ("collapse", BAD, BAD),
    ("insufficient_data", None, None),
    (None, None, None),
])
def test_classify_orders_the_two_window_rules(health, early, collapse):
    result = score_json(health) if health else None
    assert classify("early_collapse", health, result) == early
    assert classify("collapse", health, result) == collapse


def test_ratio_thresholds_make_a_healthy_window_bad():
    result = score_json("healthy", ratios=(1.0, 0.7, 1.0))
    params = {"thresholds": {"tail_coverage": 0.8}}
    assert classify("early_collapse", "healthy", result, params) == BAD
    # sameness thresholds are ceilings: 1.0 is below 1.5, so nothing crosses
    assert classify("early_collapse", "healthy", result, {"thresholds": {"sameness": 1.5}}) == GOOD
    assert engine.crossed_thresholds(score_json("healthy", ratios=(1, 1, 1.6)),
                                     {"thresholds": {"sameness": 1.5}}) == ["sameness"]


def test_thresholds_use_the_human_ratio_when_asked_or_without_baseline():
    result = score_json("healthy", ratios=(1.0, 0.7, 1.0))
    result["signals"]["tail_coverage"]["baseline_ratio"] = 0.95
    assert engine.crossed_thresholds(result, {"thresholds": {"tail_coverage": 0.8}}) == []
    assert engine.crossed_thresholds(
        result, {"thresholds": {"tail_coverage": 0.8}, "against": "human"}) == ["tail_coverage"]
    no_base = score_json("healthy", ratios=(1.0, 0.7, 1.0), baseline=False)
    assert engine.crossed_thresholds(no_base, {"thresholds": {"tail_coverage": 0.8}}) == [
        "tail_coverage"]


def _run(verdicts, fire_after=2, resolve_after=2):
    counters, firing, actions = Counters(), False, []
    for v in verdicts:
        counters, action = step(counters, v, firing, fire_after, resolve_after)
        if action == "fire":
            firing = True
        elif action == "resolve":
            firing = False
        actions.append(action)
    return actions


def test_one_bad_window_does_not_fire():
    assert _run([BAD, GOOD, BAD, GOOD]) == [None] * 4


def test_fires_after_k_bad_and_resolves_after_k_good():
    assert _run([BAD, BAD, GOOD, BAD, GOOD, GOOD]) == [None, "fire", None, None, None, "resolve"]


def test_uninformative_windows_neither_count_nor_reset():
    assert _run([BAD, None, BAD]) == [None, None, "fire"]
    assert _run([BAD, BAD, GOOD, None, GOOD]) == [None, "fire", None, None, "resolve"]


def test_k_is_configurable():
    assert _run([BAD] * 3, fire_after=3)[-1] == "fire"
    assert _run([BAD, GOOD], fire_after=1, resolve_after=1) == ["fire", "resolve"]


def test_dedup_key_is_deterministic_and_bounded():
    assert dedup_key("bot", "collapse") == dedup_key("bot", "collapse")
    assert dedup_key("bot", "collapse") != dedup_key("bot", "early_collapse")
    assert dedup_key("bot", "collapse") != dedup_key("bot2", "collapse")
    long = "m" * 200
    assert len(dedup_key(long, "evaluations_stale")) <= 128
    assert dedup_key(long, "collapse") != dedup_key(long + "x", "collapse")


# ---------------------------------------------------------------------------- with a database


def evaluate(model_id: int) -> engine.Outcome:
    with session_scope() as s:
        return engine.evaluate_model(s, model_id)


def liveness(model_id: int, now: datetime | None = None) -> engine.Outcome:
    with session_scope() as s:
        return engine.check_model_liveness(s, s.get(MonitoredModel, model_id), now)


def alerts(model_id: int) -> list[tuple[str, str, str]]:
    with session_scope() as s:
        rows = s.scalars(select(Alert).where(Alert.model_id == model_id).order_by(Alert.id))
        return [(a.kind, a.severity, a.state) for a in rows]


def notifications() -> list[tuple[int, int, str]]:
    with session_scope() as s:
        rows = s.scalars(select(Notification).order_by(Notification.id))
        return [(n.alert_id, n.channel_id, n.event) for n in rows]


def test_rules_are_created_with_defaults(service_env):
    model_id = make_model()
    with session_scope() as s:
        rules = engine.ensure_rules(s, s.get(MonitoredModel, model_id))
        again = engine.ensure_rules(s, s.get(MonitoredModel, model_id))
        assert {k: (r.severity, r.fire_after_windows, r.resolve_after_windows)
                for k, r in rules.items()} == {
            "early_collapse": ("warning", 2, 2), "collapse": ("critical", 2, 2),
            "no_samples": ("warning", 2, 2), "evaluations_stale": ("warning", 2, 2),
            "synthetic_share": ("warning", 2, 2)}
        # a stream's guard: enabled only for a stream with max_synthetic_share
        assert rules["synthetic_share"].enabled is False
        assert rules["no_samples"].threshold_seconds == 3600
        assert {r.id for r in again.values()} == {r.id for r in rules.values()}


def test_collapse_fires_after_two_windows_with_outbox_rows(database_url, service_env):
    model_id = make_model()
    pd = make_channel("pd", "pagerduty", {"routing_key": "k" * 32}, min_severity="critical")
    hook = make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/x"})
    add_evaluation(model_id, "collapse")
    first = evaluate(model_id)
    assert first.fired == [] and alerts(model_id) == []
    add_evaluation(model_id, "collapse")
    second = evaluate(model_id)
    # the critical inhibits the warning: one alert, one trigger per channel
    assert alerts(model_id) == [("collapse", "critical", "firing")]
    sent = notifications()
    assert len(second.notification_ids) == len(sent) == 2
    by_channel = sorted((c, e) for _, c, e in sent)
    assert by_channel == [(pd, "trigger"), (hook, "trigger")]
    with session_scope() as s:
        a = s.scalar(select(Alert).where(Alert.kind == "collapse"))
        assert a.dedup_key == dedup_key("bot", "collapse")
        assert "2 consecutive" in a.summary and a.details["health"] == "collapse"
        payload = s.scalar(select(Notification.payload).where(Notification.channel_id == pd))
        assert payload["dedup_key"] == a.dedup_key and payload["severity"] == "critical"


def test_each_evaluation_is_counted_once(database_url, service_env):
    model_id = make_model()
    add_evaluation(model_id, "collapse")
    for _ in range(3):
        assert evaluate(model_id).fired == []
    with session_scope() as s:
        bad = s.scalar(select(AlertState.consecutive_bad)
                       .where(AlertState.model_id == model_id, AlertState.kind == "collapse"))
    assert bad == 1
    add_evaluation(model_id, "collapse")
    assert len(evaluate(model_id).fired) == 1
    assert evaluate(model_id).fired == []
    assert len(alerts(model_id)) == 1


def test_resolves_after_two_healthy_windows_to_the_channels_that_got_the_trigger(
        database_url, service_env):
    model_id = make_model()
    hook = make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/x"})
    for _ in range(2):
        add_evaluation(model_id, "collapse")
    evaluate(model_id)
    # a channel added while the alert fires gets no resolve for a trigger it never saw
    make_channel("late", "webhook", {"url": "http://127.0.0.1:9/y"})
    add_evaluation(model_id, "healthy")
    assert evaluate(model_id).resolved == []
    add_evaluation(model_id, "healthy")
    out = evaluate(model_id)
    assert len(out.resolved) == 1
    assert alerts(model_id) == [("collapse", "critical", "resolved")]
    resolves = [(c, e) for _, c, e in notifications() if e == "resolve"]
    assert resolves == [(hook, "resolve")]


def test_collapse_resolves_to_early_collapse_while_the_warning_stays(database_url, service_env):
    model_id = make_model()
    for health in ("collapse", "collapse", "early_collapse", "early_collapse"):
        add_evaluation(model_id, health)
        evaluate(model_id)
    assert sorted(alerts(model_id)) == [("collapse", "critical", "resolved"),
                                        ("early_collapse", "warning", "firing")]


def test_unfinished_window_holds_back_later_ones(database_url, service_env):
    model_id = make_model()
    add_evaluation(model_id, "collapse")
    pending = add_evaluation(model_id, None, status="running")
    add_evaluation(model_id, "collapse")
    assert evaluate(model_id).evaluations_seen == 1
    assert alerts(model_id) == []
    set_status(pending, "done", "healthy")
    evaluate(model_id)
    # window order: collapse, healthy, collapse -> never two bad in a row
    assert alerts(model_id) == []


def test_failed_windows_are_skipped(database_url, service_env):
    model_id = make_model()
    add_evaluation(model_id, "collapse")
    add_evaluation(model_id, None, status="failed", result=None)
    add_evaluation(model_id, "collapse")
    evaluate(model_id)
    assert ("collapse", "critical", "firing") in alerts(model_id)


def test_disabled_rule_does_not_fire_and_disabling_resolves(database_url, service_env):
    model_id = make_model()
    make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/x"})
    with session_scope() as s:
        model = s.get(MonitoredModel, model_id)
        rules = engine.ensure_rules(s, model)
        engine.update_rule(s, model, rules["early_collapse"], {"enabled": False})
    for _ in range(2):
        add_evaluation(model_id, "collapse")
    evaluate(model_id)
    assert alerts(model_id) == [("collapse", "critical", "firing")]
    with session_scope() as s:
        model = s.get(MonitoredModel, model_id)
        rule = engine.ensure_rules(s, model)["collapse"]
        _, ids = engine.update_rule(s, model, rule, {"enabled": False})
    assert len(ids) == 1
    assert alerts(model_id) == [("collapse", "critical", "resolved")]


def test_channel_filters_by_severity_and_model(database_url, service_env):
    model_id = make_model("bot")
    make_channel("only-other", "webhook", {"url": "http://127.0.0.1:9/a"}, models=["other"])
    mine = make_channel("only-bot", "webhook", {"url": "http://127.0.0.1:9/b"}, models=["bot"])
    make_channel("disabled", "webhook", {"url": "http://127.0.0.1:9/c"}, enabled=False)
    crit = make_channel("critical", "webhook", {"url": "http://127.0.0.1:9/d"},
                        min_severity="critical")
    for _ in range(2):
        add_evaluation(model_id, "early_collapse")
    evaluate(model_id)
    assert [c for _, c, _ in notifications()] == [mine]
    assert crit not in [c for _, c, _ in notifications()]


def test_new_counter_rows_start_a_few_windows_back(database_url, service_env):
    model_id = make_model()
    for health in ["collapse"] * 6 + ["healthy"] * 3:
        add_evaluation(model_id, health)
    out = evaluate(model_id)
    # history is not replayed (no fire/resolve pairs from the past): it seeds the counters
    # and the newest window is counted on top
    assert out.evaluations_seen == 1
    with session_scope() as s:
        good = s.scalar(select(AlertState.consecutive_good)
                        .where(AlertState.model_id == model_id, AlertState.kind == "collapse"))
    assert good == 3
    assert alerts(model_id) == []


def test_concurrent_evaluations_of_one_model_fire_once(database_url, service_env):
    model_id = make_model()
    make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/x"})
    for _ in range(2):
        add_evaluation(model_id, "collapse")
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker():
        try:
            barrier.wait()
            evaluate(model_id)
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert alerts(model_id) == [("collapse", "critical", "firing")]
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Notification)) == 1
        assert s.scalar(select(AlertState.consecutive_bad)
                        .where(AlertState.kind == "collapse")) == 2


def payloads(event: str) -> list[dict]:
    with session_scope() as s:
        return list(s.scalars(select(Notification.payload).where(Notification.event == event)
                              .order_by(Notification.id)))


def test_windows_scored_before_the_first_check_are_counted(database_url, service_env):
    model_id = make_model()
    for _ in range(4):
        add_evaluation(model_id, "collapse")
    evaluate(model_id)
    with session_scope() as s:
        a = s.scalar(select(Alert).where(Alert.kind == "collapse"))
        assert a.details["windows"] == 4 and a.details["first_window"] == 0
        assert "for 4 consecutive window(s) (windows 0–3" in a.summary
        assert a.details["headline"].endswith(", 4 windows")


def test_a_run_broken_by_a_healthy_window_counts_from_after_it(database_url, service_env):
    model_id = make_model()
    for health in ("collapse", "healthy", "collapse", "insufficient_data", "collapse"):
        add_evaluation(model_id, health)
    evaluate(model_id)
    with session_scope() as s:
        a = s.scalar(select(Alert).where(Alert.kind == "collapse"))
        # the uninformative window neither counts nor breaks the run
        assert a.details["windows"] == 2 and "(windows 2–4" in a.summary


def test_the_warning_does_not_read_like_the_critical_and_names_its_worst_signal(
        database_url, service_env):
    model_id = make_model()
    make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/x"})
    for _ in range(2):
        add_evaluation(model_id, "early_collapse")
    evaluate(model_id)
    with session_scope() as s:
        a = s.scalar(select(Alert).where(Alert.kind == "early_collapse"))
        assert "is in collapse" not in a.summary and "early collapse" in a.summary
    # diversity 0.95, tail coverage 0.55, sameness 1.1 against a 0.92-1.08 baseline band:
    # tail coverage is furthest outside
    expected = ("bot: early collapse (tails thinning) — tail coverage 0.55× baseline "
                "(band 0.92–1.08), 2 windows")
    (trigger,) = payloads("trigger")
    assert trigger["title"] == expected and trigger["summary"].startswith(expected)


def test_the_worst_signal_is_the_one_furthest_outside_in_its_collapse_direction():
    # sameness rising is collapse, diversity rising is not
    result = score_json("collapse", ratios=(1.3, 0.9, 1.5))
    assert engine.worst_signal(result)["signal"] == "sameness"
    # a stored z is preferred to the ratio (it knows the band's spread)
    for name, z in (("diversity", -9.0), ("tail_coverage", -2.0), ("sameness", 3.0)):
        result["signals"][name]["z"] = z
    assert engine.worst_signal(result)["signal"] == "diversity"
    line = engine.headline("m", "collapse", result, 3)
    assert line == "m: collapse — diversity 1.30× baseline (band 0.92–1.08), 3 windows"


def test_a_trend_driven_warning_keeps_the_trend_line_on_the_phone():
    # every signal inside its band; the sequential detector saw tail coverage drift down
    result = score_json("early_collapse", ratios=(1.0, 0.95, 1.02))
    result["trend"] = {"tail_coverage": {"alarm": True, "shift_estimate": -0.08, "windows": 6,
                                         "since_window": 12, "against": "baseline"}}
    assert engine.headline("m", "early_collapse", result, 2) == (
        "m: early collapse (tails thinning) — tail coverage ~8% below baseline for 6 windows "
        "(since window 12)")


def test_the_resolve_says_what_is_true_now_and_which_windows_cleared_it(
        database_url, service_env):
    model_id = make_model()
    make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/x"})
    for health in ("collapse", "collapse", "healthy", "healthy"):
        add_evaluation(model_id, health)
        evaluate(model_id)
    (trigger,) = payloads("trigger")
    (resolved,) = payloads("resolve")
    text = resolved["summary"]
    assert text.startswith("bot: collapse resolved — out of collapse for 2 consecutive "
                           "window(s) (windows 2–3); now healthy: ")
    assert "tail coverage 0.97× baseline" in text and "sameness 1.01× baseline" in text
    assert text != trigger["summary"] and "0.20×" not in text


def test_the_acknowledgement_says_who_and_when(database_url, service_env):
    model_id = make_model()
    make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/x"})
    for _ in range(2):
        add_evaluation(model_id, "collapse")
    evaluate(model_id)
    with session_scope() as s:
        alert = s.scalar(select(Alert))
        engine.acknowledge(s, alert, "bot", "on-call: Ada")
    (ack,) = payloads("acknowledge")
    assert ack["summary"].startswith("bot: collapse acknowledged by on-call: Ada at 20")
    assert "firing since" in ack["summary"] and "0.20×" not in ack["summary"]


def test_collapse_over_a_firing_warning_escalates_the_same_incident(database_url, service_env):
    model_id = make_model()
    hook = make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/x"})
    pd = make_channel("pd", "pagerduty", {"routing_key": "k" * 32}, min_severity="critical")
    for health in ("early_collapse", "early_collapse", "collapse", "collapse"):
        add_evaluation(model_id, health)
        evaluate(model_id)
    assert alerts(model_id) == [("early_collapse", "warning", "resolved"),
                                ("collapse", "critical", "firing")]
    # the webhook already had the incident: an update; the critical-only pager: its trigger
    assert [(c, e) for _, c, e in notifications()] == [(hook, "trigger"), (hook, "update"),
                                                       (pd, "trigger")]
    (update,) = payloads("update")
    assert update["summary"].startswith("escalated to collapse from early collapse")
    assert update["dedup_key"] == dedup_key("bot", "early_collapse")
    # while collapse fires the warning stays quiet, and recovery resolves once, everywhere
    for _ in range(2):
        add_evaluation(model_id, "healthy")
        evaluate(model_id)
    assert [(c, e) for _, c, e in notifications()][3:] == [(hook, "resolve"), (pd, "resolve")]


def test_a_downgrade_keeps_the_incident_without_a_new_page(database_url, service_env):
    model_id = make_model()
    hook = make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/x"})
    for health in ("collapse", "collapse", "early_collapse", "early_collapse"):
        add_evaluation(model_id, health)
        evaluate(model_id)
    assert [(c, e) for _, c, e in notifications()] == [(hook, "trigger"), (hook, "update")]
    (update,) = payloads("update")
    assert update["severity"] == "warning" and update["kind"] == "early_collapse"
    assert update["summary"].startswith("downgraded to early collapse (tails thinning) from "
                                        "collapse")
    for _ in range(2):
        add_evaluation(model_id, "healthy")
        evaluate(model_id)
    assert [(c, e) for _, c, e in notifications()][2:] == [(hook, "resolve")]


def test_a_downgrade_resolves_the_incident_on_a_critical_only_pager(database_url, service_env):
    model_id = make_model()
    hook = make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/x"})
    pd = make_channel("pd", "pagerduty", {"routing_key": "k" * 32}, min_severity="critical")
    for health in ("collapse", "collapse", "early_collapse", "early_collapse"):
        add_evaluation(model_id, health)
        evaluate(model_id)
    # the pager only ever had the critical: once it is over, its incident resolves there;
    # the webhook, which takes warnings, keeps the incident as an update
    assert sorted((c, e) for _, c, e in notifications()) == sorted(
        [(hook, "trigger"), (pd, "trigger"), (hook, "update"), (pd, "resolve")])
    (resolved,) = payloads("resolve")
    assert resolved["kind"] == "collapse"
    assert "cleared — downgraded to early collapse" in resolved["summary"]
    # escalating again pages the pager again, with the same incident key
    for _ in range(2):
        add_evaluation(model_id, "collapse")
        evaluate(model_id)
    keys = {p["dedup_key"] for p in payloads("trigger")}
    assert len(keys) == 1
    assert [e for _, c, e in notifications() if c == pd] == ["trigger", "resolve", "trigger"]


def test_a_warning_left_firing_beside_collapse_keeps_its_own_incident(database_url,
                                                                      service_env):
    model_id = make_model()
    hook = make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/x"})
    for _ in range(2):
        add_evaluation(model_id, "collapse")
    evaluate(model_id)
    with session_scope() as s:  # both firing, as an older release left them
        model = s.get(MonitoredModel, model_id)
        engine.fire(s, model, engine.ensure_rules(s, model)["early_collapse"], "old", {})
    for _ in range(2):
        add_evaluation(model_id, "early_collapse")
        evaluate(model_id)
    # collapse closes its own incident with a resolve; the old warning goes on, no new one
    assert alerts(model_id) == [("collapse", "critical", "resolved"),
                                ("early_collapse", "warning", "firing")]
    assert [(c, e) for _, c, e in notifications()] == [(hook, "trigger"), (hook, "trigger"),
                                                       (hook, "resolve")]


def test_alerts_without_a_rule_still_notify(database_url, service_env):
    model_id = make_model()
    make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/x"})
    with session_scope() as s:
        alert = Alert(model_id=model_id, rule_id=None, kind="baseline_rejected",
                      severity="warning", state="firing", dedup_key="collapsewatch/bot/b",
                      summary="refused", details={})
        s.add(alert)
        s.flush()
        assert len(engine._write_outbox(s, alert, "bot", "trigger")) == 1
        assert len(engine.resolve(s, alert, "bot", "pinned by admin")) == 1
    (trigger,) = payloads("trigger")
    (resolved,) = payloads("resolve")
    # the event kind's own title, in the payload builder's texts (no rewrite afterwards)
    title = "bot: automatic baseline refused (its windows read collapse)"
    assert trigger["title"] == resolved["title"] == title
    assert resolved["summary"] == f"{title} resolved — pinned by admin"


# ---------------------------------------------------------------------------- a stream's share


def share_window(estimate: float, low: float, high: float) -> dict:
    """A stream window's Score JSON with a synthetic share split over two sources."""
    by_source = {"gen-a": {"estimate": round(estimate * 0.65, 4),
                           "low": round(low * 0.6, 4), "high": round(high * 0.7, 4)},
                 "gen-b": {"estimate": round(estimate * 0.35, 4),
                           "low": round(low * 0.3, 4), "high": round(high * 0.4, 4)}}
    return {**score_json("healthy"), "synthetic_share": {
        "estimate": estimate, "low": low, "high": high, "by_source": by_source,
        "unexplained": 0.02}}


def make_stream(name: str, max_share: float) -> int:
    from sqlalchemy import update

    model_id = make_model(name)
    with session_scope() as s:
        s.execute(update(MonitoredModel).where(MonitoredModel.id == model_id)
                  .values(kind="stream", sources=[1, 2], max_synthetic_share=max_share))
    return model_id


def test_a_stream_alert_says_its_share_and_limit_and_every_channel_gets_the_sources(
        database_url, service_env, monkeypatch):
    from service.delivery import outbox
    from tests.service.alert_fixtures import allow_loopback_channels
    from tests.support import recording_server

    allow_loopback_channels(monkeypatch)
    with recording_server() as srv:
        make_channel("hook", "webhook", {"url": srv.url + "/hook"})
        make_channel("slack", "slack", {"webhook_url": srv.url + "/slack"})
        make_channel("pd", "pagerduty", {"routing_key": "R" * 32, "url": srv.url + "/pd"})
        stream = make_stream("demo-stream", 0.1)
        for _ in range(3):
            add_evaluation(stream, "healthy", result=share_window(0.31, 0.24, 0.38))
        outcome = evaluate(stream)
        assert alerts(stream) == [("synthetic_share", "warning", "firing")]
        for nid in outcome.notification_ids:
            assert outbox.deliver(nid).status == "sent"
        hook = srv.received("/hook")[0].json()
        slack = srv.received("/slack")[0].json()
        pd = srv.received("/pd")[0].json()
    title = "demo-stream: synthetic share 0.31 (95% 0.24–0.38) above its limit 0.10, 3 windows"
    sources = ("by source: gen-a 0.20 (95% 0.14–0.27), gen-b 0.11 (95% 0.07–0.15); "
               "unexplained 0.02")
    # the phone's line, and a summary that names the run, the bound and each source
    assert hook["title"] == pd["payload"]["summary"] == title
    assert hook["summary"].startswith(title + ". Stream 'demo-stream' has its synthetic share "
                                      "above its limit for 3 consecutive window(s) "
                                      "(windows 0–2): the 95% lower bound 0.24 exceeds 0.10")
    assert hook["summary"].endswith(sources)
    # no collapse signal is named: the share is what this alert is about
    assert "tail coverage" not in hook["summary"] and "sameness" not in hook["summary"]
    assert title in slack["text"] and sources in slack["text"]
    for details in (hook["details"], pd["payload"]["custom_details"]):
        share = details["synthetic_share"]
        assert (share["estimate"], share["low"], share["high"]) == (0.31, 0.24, 0.38)
        assert share["max_synthetic_share"] == 0.1 and share["unexplained"] == 0.02
        assert share["by_source"]["gen-a"] == {"estimate": 0.2015, "low": 0.144, "high": 0.266}
        assert set(share["by_source"]) == {"gen-a", "gen-b"}


def test_the_stream_resolve_says_the_share_now_and_which_windows_cleared_it(
        database_url, service_env):
    stream = make_stream("demo-stream", 0.1)
    make_channel("hook", "webhook", {"url": "http://127.0.0.1:9/x"})
    for _ in range(2):
        add_evaluation(stream, "healthy", result=share_window(0.31, 0.24, 0.38))
        evaluate(stream)
    # the estimate is still above the limit, but its lower bound no longer is
    for _ in range(2):
        add_evaluation(stream, "healthy", result=share_window(0.12, 0.07, 0.17))
        evaluate(stream)
    assert alerts(stream) == [("synthetic_share", "warning", "resolved")]
    (resolved,) = payloads("resolve")
    assert resolved["summary"] == (
        "demo-stream: synthetic share above its limit resolved — synthetic share now 0.12 "
        "(95% 0.07–0.17), its 95% lower bound not above the limit 0.10 for 2 consecutive "
        "window(s) (windows 2–3); by source: gen-a 0.08 (95% 0.04–0.12), gen-b 0.04 "
        "(95% 0.02–0.07); unexplained 0.02")
    assert "0.31" not in resolved["summary"]
    with session_scope() as s:
        alert = s.scalar(select(Alert).where(Alert.kind == "synthetic_share"))
        assert alert.details["resolved_because"] == (
            "2 consecutive window(s) with the share's lower bound within its limit")


# ---------------------------------------------------------------------------- time rules


def test_no_samples_fires_and_resolves_when_samples_return(database_url, service_env):
    model_id = make_model()
    now = datetime.now(UTC)
    add_samples(model_id, 3, received_at=now - timedelta(hours=2))
    out = liveness(model_id, now)
    assert alerts(model_id) == [("no_samples", "warning", "firing")]
    assert len(out.fired) == 1
    assert liveness(model_id, now).fired == []  # still firing, not fired again
    add_samples(model_id, 1, received_at=now)
    out = liveness(model_id, now + timedelta(seconds=1))
    assert alerts(model_id) == [("no_samples", "warning", "resolved")]
    with session_scope() as s:
        details = s.scalar(select(Alert.details))
    assert details["resolved_summary"].startswith(
        "bot: no samples received resolved — samples arrive again (last at 20")


def test_model_that_never_sent_samples_counts_from_its_creation(database_url, service_env):
    model_id = make_model()
    assert liveness(model_id).fired == []
    liveness(model_id, datetime.now(UTC) + timedelta(hours=2))
    assert alerts(model_id) == [("no_samples", "warning", "firing")]


def test_evaluations_stale_for_an_old_unfinished_window(database_url, service_env):
    model_id = make_model()
    now = datetime.now(UTC)
    ids = add_samples(model_id, 10, received_at=now)
    ev = add_evaluation(model_id, None, status="pending", sample_ids=ids,
                        created_at=now - timedelta(hours=1))
    liveness(model_id, now)
    assert ("evaluations_stale", "warning", "firing") in alerts(model_id)
    set_status(ev, "done", "healthy")
    liveness(model_id, now)
    assert ("evaluations_stale", "warning", "resolved") in alerts(model_id)


def test_partial_window_that_is_not_due_is_not_stale(database_url, service_env):
    # 3 samples < min_size 5: the window cannot close, so nothing is owed however old
    model_id = make_model(window_size=10, window_min_size=5, window_max_age_seconds=60)
    now = datetime.now(UTC)
    add_samples(model_id, 3, received_at=now - timedelta(days=1))
    with session_scope() as s:
        assert engine.evaluation_owed_since(s, s.get(MonitoredModel, model_id)) is None


def test_unplanned_full_window_is_owed_since_it_filled(database_url, service_env):
    model_id = make_model(window_size=10, window_min_size=5, window_max_age_seconds=None)
    t0 = datetime.now(UTC) - timedelta(hours=3)
    add_samples(model_id, 4, received_at=t0)
    with session_scope() as s:
        assert engine.evaluation_owed_since(s, s.get(MonitoredModel, model_id)) is None
    add_samples(model_id, 6, received_at=t0 + timedelta(hours=1))
    with session_scope() as s:
        since = engine.evaluation_owed_since(s, s.get(MonitoredModel, model_id))
    assert abs((since - (t0 + timedelta(hours=1))).total_seconds()) < 1


def test_rules_survive_as_rows(database_url, service_env):
    model_id = make_model()
    liveness(model_id)
    with session_scope() as s:
        kinds = set(s.scalars(select(AlertRule.kind).where(AlertRule.model_id == model_id)))
    assert kinds == set(engine.RULE_KINDS)
