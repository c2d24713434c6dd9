"""End to end: collapsewatch on PostgreSQL + Redis, a real Prometheus and Alertmanager.

The API, a Celery worker and beat run as real `collapsewatch` subprocesses. Samples go in
over REST and are windowed and scored by the real pipeline. A collapsing model then

* fires the service's own alert, which reaches a loopback PagerDuty stand-in (through one
  injected outage) as a trigger, then the acknowledgement an operator makes over REST, and
  later a resolve, all with the same dedup_key;
* fires the Prometheus rules from dashboards/prometheus (``for:`` shortened), which
  Alertmanager, configured from dashboards/alertmanager, posts to loopback PagerDuty and
  Slack stand-ins, and resolves again once healthy windows arrive.

While the alert fires, every PromQL target of the Grafana dashboards must return data from
the live Prometheus.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import POSTGRES_URL, _pg_database, need, need_program
from tests.dashboards.helpers import (
    ALERTMANAGER,
    GRAFANA_DASHBOARDS,
    PROMETHEUS,
    RULES,
    load_dashboard,
    substitute,
    targets,
)
from tests.support import free_port, process, recording_server, wait_http

pytestmark = pytest.mark.slow

MODEL = "e2e-bot"
WINDOW = 100
SERVICE_DEDUP_KEY = f"collapsewatch/{MODEL}/collapse"


def wait_until(what: str, check: Callable[[], Any], timeout: float, logs=()) -> Any:
    """Poll ``check`` until it returns something truthy; fail with the process logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    tails = "\n".join(f"--- {p.log_path.name}\n{p.log()[-3000:]}" for p in logs)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")


def prometheus_config(api_port: int, am_port: int) -> dict:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["alerting"]["alertmanagers"][0]["static_configs"] = [
        {"targets": [f"127.0.0.1:{am_port}"]}]
    jobs = [j for j in config["scrape_configs"] if j["job_name"] == "collapsewatch"]
    jobs[0]["static_configs"] = [{"targets": [f"127.0.0.1:{api_port}"]}]
    jobs[0]["scrape_interval"] = "1s"
    jobs[0]["scrape_timeout"] = "1s"
    config["scrape_configs"] = jobs
    return config


def fast_rules() -> dict:
    """The shipped rules with their hold times shortened to seconds (expressions unchanged)."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "2s"
            if "keep_firing_for" in rule:
                rule["keep_firing_for"] = "1s"
    return rules


def alertmanager_config(pagerduty_url: str, slack_url: str) -> dict:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for receiver in config["receivers"]:
        for pd in receiver.get("pagerduty_configs", []):
            del pd["routing_key_file"]
            pd["routing_key"] = "e2e-alertmanager-routing-key"
            pd["url"] = pagerduty_url
        for slack in receiver.get("slack_configs", []):
            del slack["api_url_file"]
            slack["api_url"] = slack_url
    return config


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def events(server, path: str) -> list[dict]:
    return [r.json() for r in server.received(path)]


def test_collapse_fires_and_resolves_through_prometheus_alertmanager_and_pagerduty(
        tmp_path, redis_url, human_documents, artifacts_dir):
    prometheus = need_program("prometheus")
    alertmanager = need_program("prometheus-alertmanager")
    database, drop_database = _pg_database(need("PostgreSQL", POSTGRES_URL))
    from service.domain.migrate import upgrade

    upgrade(database)
    docs = list(human_documents)
    random.Random(5).shuffle(docs)
    reference_docs, baseline_docs, healthy = docs[:400], docs[400:700], iter(docs[700:])

    api_port, prom_port, am_port = free_port(), free_port(), free_port()
    env = {
        "COLLAPSEWATCH_DATABASE_URL": database,
        "COLLAPSEWATCH_BROKER_URL": redis_url,
        "COLLAPSEWATCH_DATA_DIR": str(tmp_path / "data"),
        "COLLAPSEWATCH_PLAN_INTERVAL_SECONDS": "0.5",
        "COLLAPSEWATCH_LIVENESS_INTERVAL_SECONDS": "2",
        "COLLAPSEWATCH_OUTBOX_SWEEP_INTERVAL_SECONDS": "1",
        "COLLAPSEWATCH_NOTIFY_BACKOFF_BASE_SECONDS": "0.5",
        "COLLAPSEWATCH_METRICS_CACHE_SECONDS": "0.5",
        "COLLAPSEWATCH_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
        "COLLAPSEWATCH_LOG_LEVEL": "INFO",
        # the PagerDuty stand-in listens on loopback
        "COLLAPSEWATCH_CHANNEL_ALLOWED_HOSTS": "127.0.0.1",
    }
    api_url = f"http://127.0.0.1:{api_port}"
    prom_url = f"http://127.0.0.1:{prom_port}"
    logs_dir = tmp_path / "logs"
    procs = []
    with ExitStack() as stack:
        stack.callback(drop_database)
        stack.callback(lambda: shutil.copytree(logs_dir, artifacts_dir / "e2e-alerting",
                                               dirs_exist_ok=True))
        service_pd = stack.enter_context(recording_server())
        am_pd = stack.enter_context(recording_server())
        am_slack = stack.enter_context(recording_server())

        def start(name: str, args: list[str]):
            proc = stack.enter_context(process(args, logs_dir / f"{name}.log", env))
            procs.append(proc)
            return proc

        api = start("api", ["collapsewatch", "api", "--host", "127.0.0.1", "--port",
                            str(api_port)])
        start("worker", ["collapsewatch", "worker", "--pool", "threads", "--concurrency", "2"])
        start("beat", ["collapsewatch", "beat", "--schedule", str(tmp_path / "beat-schedule")])
        wait_http(f"{api_url}/readyz", timeout=60, proc=api.popen)

        from service.domain.db import session_scope
        from service.domain.keys import create_key

        with session_scope(database) as session:
            key = create_key(session, "admin", description="e2e")
        http = stack.enter_context(httpx.Client(base_url=api_url, timeout=180,
                                                headers={"Authorization": f"Bearer {key}"}))

        def ok(response: httpx.Response, status: int) -> dict:
            assert response.status_code == status, response.text
            return response.json() if response.content else {}

        ref = ok(http.post("/api/v1/references", json={"name": "fortunes-e2e",
                                                       "documents": reference_docs}), 201)
        ok(http.post("/api/v1/models", json={
            "name": MODEL, "reference_id": ref["id"], "auto_baseline_windows": 0,
            # the dashboards' per-metric panels need the opt-in per-metric series
            "metric_series": True,
            "window": {"size": WINDOW, "min_size": 50, "max_age_seconds": 3600}}), 201)
        ok(http.post(f"/api/v1/models/{MODEL}/baseline", json={"documents": baseline_docs}), 201)
        ok(http.post("/api/v1/channels", json={
            "name": "oncall", "kind": "pagerduty", "min_severity": "critical",
            "config": {"routing_key": "e2e-service-routing-key",
                       "url": f"{service_pd.url}/service/pagerduty"}}), 201)

        # Prometheus (shipped rules, hold times shortened) and Alertmanager (shipped routes)
        conf = tmp_path / "prometheus"
        conf.mkdir()
        write_yaml(conf / "collapsewatch.rules.yml", fast_rules())
        write_yaml(conf / "prometheus.yml", prometheus_config(api_port, am_port))
        am_conf = write_yaml(tmp_path / "alertmanager.yml", alertmanager_config(
            f"{am_pd.url}/alertmanager/pagerduty", f"{am_slack.url}/alertmanager/slack"))
        am = start("alertmanager", [
            alertmanager, f"--config.file={am_conf}", f"--storage.path={tmp_path / 'am'}",
            f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
            f"--web.external-url=http://127.0.0.1:{am_port}/", "--log.level=warn"])
        prom = start("prometheus", [
            prometheus, f"--config.file={conf / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", f"--web.external-url={prom_url}/",
            "--rules.alert.resend-delay=1s", "--log.level=warn"])
        wait_http(f"http://127.0.0.1:{am_port}/-/ready", timeout=60, proc=am.popen)
        wait_http(f"{prom_url}/-/ready", timeout=60, proc=prom.popen)

        def query(expr: str) -> list[dict]:
            r = httpx.get(f"{prom_url}/api/v1/query", params={"query": expr}, timeout=10)
            assert r.status_code == 200, (expr, r.text)
            return r.json()["data"]["result"]

        def prom_alert(state: str) -> list[dict]:
            r = httpx.get(f"{prom_url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
            return [a for a in r if a["labels"].get("model") == MODEL
                    and a["labels"]["severity"] == "critical" and a["state"] == state]

        sent = 0

        def feed(texts: list[str]) -> None:
            nonlocal sent
            samples = [{"id": f"s{sent + i}", "text": t} for i, t in enumerate(texts)]
            sent += len(texts)
            ok(http.post(f"/api/v1/models/{MODEL}/samples", json={"samples": samples}), 202)

        def evaluations() -> list[dict]:
            return ok(http.get(f"/api/v1/models/{MODEL}/evaluations"), 200)["evaluations"]

        # 1. a healthy window: scored, nothing fires
        wait_until("Prometheus scraping collapsewatch",
                   lambda: query('up{job="collapsewatch"} == 1'), 30, procs)
        feed([next(healthy) for _ in range(WINDOW)])
        first = wait_until("the first window to be scored", evaluations, 120, procs)
        assert first[0]["health"] == "healthy", first[0]
        wait_until("the healthy window in Prometheus",
                   lambda: query(f'collapsewatch_health_state{{model="{MODEL}", '
                                 f'state="healthy"}} == 1'), 30, procs)
        assert prom_alert("firing") == [] and prom_alert("pending") == []

        # 2. collapse: the PagerDuty stand-in is down for the first two attempts
        service_pd.fail_next(503, 2)
        parrot = docs[-5:]
        feed([parrot[i % len(parrot)] for i in range(2 * WINDOW)])
        def newest(n: int, health: str) -> bool:
            latest = evaluations()[:n]
            return len(latest) == n and all(e["health"] == health for e in latest)

        wait_until("two collapsing windows", lambda: newest(2, "collapse"), 120, procs)

        trigger = wait_until("the service's PagerDuty trigger",
                             lambda: events(service_pd, "/service/pagerduty"), 60, procs)
        assert [e["event_action"] for e in trigger] == ["trigger"]
        assert trigger[0]["dedup_key"] == SERVICE_DEDUP_KEY
        assert trigger[0]["routing_key"] == "e2e-service-routing-key"
        assert trigger[0]["payload"]["severity"] == "critical"
        alerts = ok(http.get("/api/v1/alerts", params={"model": MODEL, "state": "firing"}), 200)
        # one incident per model: the critical inhibits the warning
        assert {a["kind"] for a in alerts["alerts"]} == {"collapse"}
        # an operator acknowledges it in collapsewatch: PagerDuty hears of it too
        (collapse,) = [a for a in alerts["alerts"] if a["kind"] == "collapse"]
        ok(http.post(f"/api/v1/alerts/{collapse['id']}/ack"), 200)
        acked = wait_until("the service's PagerDuty acknowledge",
                           lambda: (ev := events(service_pd, "/service/pagerduty"))
                           and len(ev) >= 2 and ev, 60, procs)
        assert [e["event_action"] for e in acked] == ["trigger", "acknowledge"]
        assert acked[1]["dedup_key"] == SERVICE_DEDUP_KEY

        firing = wait_until("the Prometheus alert to fire", lambda: prom_alert("firing"), 60,
                            procs)
        assert {a["labels"]["alertname"] for a in firing} >= {"ModelDiversityCollapse"}
        # the model's page (a meta-alert such as CollapsewatchAbsent may page first while the
        # first scrape is still due on a loaded machine; it is not what this step checks)
        am_trigger = wait_until("Alertmanager's PagerDuty trigger",
                                lambda: [e for e in events(am_pd, "/alertmanager/pagerduty")
                                         if e["event_action"] == "trigger"
                                         and MODEL in e["payload"]["summary"]], 60, procs)
        assert MODEL in am_trigger[0]["payload"]["summary"]
        assert am_trigger[0]["routing_key"] == "e2e-alertmanager-routing-key"

        # 3. every Grafana target answers from the live Prometheus while the alert fires
        empty = []
        for path in GRAFANA_DASHBOARDS:
            for panel, target in targets(load_dashboard(path)):
                if "collapsewatch_synthetic_share" in target["expr"]:
                    continue  # streams only: tests/dashboards/test_grafana.py queries them
                expr = substitute(target["expr"], model=MODEL, rate_interval="30s")
                if not query(expr):
                    empty.append(f"{path.name} / {panel['title']}: {expr}")
        assert not empty, "dashboard targets without data:\n" + "\n".join(empty)

        # 4. healthy again: both alert paths resolve, with the trigger's dedup_key
        feed([next(healthy) for _ in range(2 * WINDOW)])
        service_events = wait_until(
            "the service's PagerDuty resolve",
            lambda: (ev := events(service_pd, "/service/pagerduty")) and len(ev) >= 3 and ev,
            120, procs)
        assert [e["event_action"] for e in service_events] == ["trigger", "acknowledge",
                                                               "resolve"]
        assert service_events[2]["dedup_key"] == SERVICE_DEDUP_KEY
        wait_until("the Prometheus alert to resolve",
                   lambda: not prom_alert("firing") and not prom_alert("pending"), 60, procs)
        am_resolve = wait_until("Alertmanager's PagerDuty resolve",
                                lambda: [e for e in events(am_pd, "/alertmanager/pagerduty")
                                         if e["event_action"] == "resolve"
                                         and e["dedup_key"] == am_trigger[0]["dedup_key"]],
                                60, procs)
        assert len(am_resolve) == 1
        resolved = ok(http.get("/api/v1/alerts", params={"model": MODEL}), 200)["alerts"]
        assert {a["state"] for a in resolved if a["kind"] == "collapse"} == {"resolved"}
        # the outage cost retries, not notifications: each event was delivered exactly once
        with session_scope(database) as session:
            from sqlalchemy import select

            from service.domain.tables import Notification

            rows = session.execute(select(Notification.event, Notification.status,
                                          Notification.attempts)).all()
        assert sorted((e, s) for e, s, _ in rows) == [("acknowledge", "sent"),
                                                       ("resolve", "sent"), ("trigger", "sent")]
        assert max(a for _, _, a in rows) == 3
