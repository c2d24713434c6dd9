"""The web page at ``/`` in a real Chromium against a real API process."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from service.domain.db import session_scope
from service.domain.tables import Alert, Evaluation, MonitoredModel, Reference
from tests.web import seeding

WINDOWS = 40


def _create_model(server_url: str, headers: dict, name: str, reference_id: int,
                  description: str | None = None) -> None:
    body = {"name": name, "reference_id": reference_id, "window": {"size": 150, "min_size": 50},
            "auto_baseline_windows": 0}
    if description:
        body["description"] = description
    r = httpx.post(f"{server_url}/api/v1/models", json=body, headers=headers, timeout=30)
    assert r.status_code == 201, r.text


def _seed_demo_like(server_url: str, admin_headers: dict, human_documents: list[str]) -> dict:
    """Two models (one stable, one collapsing), a firing and a resolved alert."""
    with session_scope() as session:
        ref = seeding.seed_reference(session, "page-test-fortunes", human_documents[:300])
        ref_id = ref.id
    _create_model(server_url, admin_headers, "demo-stable", ref_id,
                  "Demo: held-out human text")
    _create_model(server_url, admin_headers, "demo-recursive", ref_id,
                  "Demo: a word n-gram model retrained on its own output")
    with session_scope() as session:
        ref = session.get(Reference, ref_id)
        models = {m.name: m for m in session.scalars(select(MonitoredModel))}
        seeding.seed_evaluations(session, models["demo-stable"], ref, WINDOWS, seeding.stable,
                                 seed=1, baseline_level=0.97)
        seeding.seed_evaluations(session, models["demo-recursive"], ref, WINDOWS,
                                 seeding.collapsing, seed=2, baseline_level=0.93)
        firing = seeding.seed_alert(session, models["demo-recursive"])
        seeding.seed_alert(session, models["demo-recursive"], kind="early_collapse",
                           severity="warning", state="resolved", minutes_ago=30)
        return {"reference_sha256": ref.sha256, "firing_alert_id": firing.id}


def _latest_result(model: str) -> dict:
    with session_scope() as session:
        row = session.scalars(
            select(Evaluation).join(MonitoredModel, MonitoredModel.id == Evaluation.model_id)
            .where(MonitoredModel.name == model).order_by(Evaluation.window_index.desc())
        ).first()
        return row.result


def test_page_shows_models_charts_and_latest_metrics_without_console_errors(
        live_server, browser_page, admin_headers, human_documents, artifacts_dir, database_url):
    seeded = _seed_demo_like(live_server.url, admin_headers, human_documents)
    page, problems = browser_page

    page.goto(live_server.url + "/")
    page.wait_for_selector("#model-demo-recursive svg.chart-svg circle.pt")
    page.wait_for_selector("#model-demo-stable svg.chart-svg circle.pt")
    page.wait_for_selector("table.fleet .badge:not(.h-unknown)")

    # every model in the fleet table with its health, reference and sha256 prefix
    rows = page.locator("table.fleet tbody tr")
    assert rows.count() == 2
    badges = {r.get_attribute("data-model"): r.locator(".badge").get_attribute("data-health")
              for r in rows.all()}
    assert badges == {"demo-recursive": _latest_result("demo-recursive")["health"],
                      "demo-stable": _latest_result("demo-stable")["health"]}
    assert badges["demo-recursive"] == "collapse" and badges["demo-stable"] == "healthy"
    fleet_text = page.locator("table.fleet").inner_text()
    assert seeded["reference_sha256"][:12] in fleet_text
    assert "page-test-fortunes" in fleet_text
    assert f"{WINDOWS * 150:,}" in fleet_text  # samples ingested
    assert page.locator("table.fleet .tag.demo").count() == 2
    assert page.locator("#demo-banner").is_visible()

    for model in ("demo-stable", "demo-recursive"):
        card = page.locator(f"#model-{model}")
        # three signal charts, each with one point per window, the human band and the
        # baseline level (these evaluations carry baseline ratios)
        charts = card.locator("svg.chart-svg")
        assert charts.count() == 3
        for i in range(3):
            chart = charts.nth(i)
            assert chart.locator("circle.pt").count() == WINDOWS
            assert chart.locator("polyline.ratio-line").count() == 1
            assert chart.locator(".band").count() == 1
            assert chart.locator(".baseline-band").count() == 1
            assert chart.locator("polyline.baseline-line").count() == 1
        # the health timeline covers every window
        segments = card.locator("svg.timeline-svg rect.seg")
        assert segments.count() >= 1
        # the latest per-metric table: one row per metric, outside markers where outside
        latest = _latest_result(model)
        table_rows = card.locator("table.metrics tbody tr[data-metric]")
        assert table_rows.count() == len(latest["metrics"])
        outside = {name for name, m in latest["metrics"].items() if m["outside_band"]}
        assert outside, "the seeded data should put some metrics outside their band"
        marked = {r.get_attribute("data-metric") for r in card.locator(
            "table.metrics tbody tr.outside").all()}
        assert marked == outside
        assert f"{WINDOWS * 150:,}" in card.locator(".ingested").inner_text()

    # the collapsing model's timeline goes healthy -> ... -> collapse
    states = [s.get_attribute("data-health") for s in page.locator(
        "#model-demo-recursive svg.timeline-svg rect.seg").all()]
    assert states[0] == "healthy" and states[-1] == "collapse"
    assert "early_collapse" in states
    # collapsing points are drawn as outside the band
    assert page.locator("#model-demo-recursive circle.pt.outside").count() > 0

    # alerts: the firing one with an acknowledge button, the resolved one listed
    firing = page.locator(f"tr.alert.firing[data-alert-id='{seeded['firing_alert_id']}']")
    assert firing.locator("button.ack").count() == 1
    assert page.locator("tr.alert.resolved").count() == 1

    name = "web-page-" + database_url.split(":")[0].split("+")[0] + ".png"
    page.screenshot(path=str(artifacts_dir / name), full_page=True)
    assert problems.all() == []


def test_alert_is_acknowledged_with_a_key_the_page_asks_for(
        live_server, browser_page, admin_headers, make_key, human_documents):
    seeded = _seed_demo_like(live_server.url, admin_headers, human_documents)
    alert_id = seeded["firing_alert_id"]
    page, problems = browser_page
    page.goto(live_server.url + "/")
    row = page.locator(f"tr.alert[data-alert-id='{alert_id}']")
    row.locator("button.ack").click()

    # no key yet: the page asks for one; an unknown key is refused and nothing changes
    page.wait_for_selector("#key-form:not([hidden])")
    page.fill("#key-input", "cw_not-a-real-key")
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#key-note:has-text('refused')")
    with session_scope() as session:
        assert session.get(Alert, alert_id).acknowledged_at is None
    # a refused key is not kept (it would make every read fail too)
    assert not page.locator("#key-button").inner_text().endswith("✓")
    assert page.evaluate("sessionStorage.length") == 0

    page.fill("#key-input", make_key("admin"))
    page.click("#key-form button[type=submit]")
    page.wait_for_selector(f"tr.alert[data-alert-id='{alert_id}'][data-state='acknowledged']")
    assert "acknowledged" in row.inner_text()
    with session_scope() as session:
        stored = session.get(Alert, alert_id)
        assert stored.acknowledged_at is not None
        # acknowledging silences, it does not resolve
        assert stored.state == "firing", (stored.state, stored.resolved_at, stored.details)

    # the key stays for this tab (sessionStorage) and the server state survives a reload
    page.reload()
    page.wait_for_selector(f"tr.alert[data-alert-id='{alert_id}'][data-state='acknowledged']")
    assert page.locator("#key-button").inner_text().endswith("✓")
    assert [e for e in problems.page_errors] == []


@pytest.fixture
def read_key_required(monkeypatch) -> None:
    monkeypatch.setenv("COLLAPSEWATCH_REQUIRE_READ_KEY", "1")


def test_page_asks_for_a_key_when_reads_need_one(read_key_required, live_server, browser_page,
                                                 make_key, admin_headers, human_documents):
    _seed_demo_like(live_server.url, admin_headers, human_documents)
    page, _ = browser_page
    page.goto(live_server.url + "/")
    page.wait_for_selector("#error:has-text('needs an API key to read')")
    page.wait_for_selector("#key-form:not([hidden])")
    assert page.locator("table.fleet").count() == 0
    page.fill("#key-input", make_key("read"))
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#model-demo-recursive svg.chart-svg circle.pt")
    assert page.locator("#error").is_hidden()
    assert page.locator("table.fleet tbody tr").count() == 2


@pytest.fixture
def off_loopback_server(service_env, tmp_path):
    """``collapsewatch api --host 0.0.0.0``: reads private by default (reached on loopback)."""
    from tests.support import VENV_BIN, free_port, process, wait_http
    from tests.web.conftest import LiveServer

    port = free_port()
    args = [str(VENV_BIN / "collapsewatch"), "api", "--host", "0.0.0.0", "--port", str(port)]
    with process(args, tmp_path / "api-public.log", env=service_env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", timeout=60, proc=proc.popen)
        yield LiveServer(url=url, log=proc.log)


def test_page_off_loopback_asks_for_a_key_and_sends_it_as_bearer(
        off_loopback_server, browser_page, make_key, admin_headers, human_documents):
    server = off_loopback_server
    _seed_demo_like(server.url, admin_headers, human_documents)
    page, problems = browser_page
    sent = []
    page.on("request", lambda r: sent.append(r.headers.get("authorization"))
            if "/api/v1/" in r.url else None)
    page.goto(server.url + "/")
    page.wait_for_selector("#error:has-text('needs an API key to read')")
    page.wait_for_selector("#key-form:not([hidden])")
    assert page.locator("table.fleet tbody tr").count() == 0
    key = make_key("operator", "demo-recursive")  # any scope reads; this one sees one model
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#model-demo-recursive svg.chart-svg circle.pt")
    assert page.locator("#error").is_hidden()
    assert page.locator("table.fleet tbody tr").count() == 1
    assert page.evaluate("Object.values(sessionStorage)") == [key]
    assert f"Bearer {key}" in sent
    assert page.evaluate("localStorage.length") == 0
    assert problems.page_errors == []


def test_page_without_models_explains_how_to_start(live_server, browser_page):
    page, problems = browser_page
    page.goto(live_server.url + "/")
    page.wait_for_selector("#fleet-body:has-text('No model is monitored yet')")
    assert page.locator("#alerts-body").inner_text().strip() == "No alert is firing."
    assert problems.all() == []


def test_page_and_assets_are_served_offline_with_a_strict_policy(client):
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "{{version}}" not in r.text
    for asset in ("app.js", "app.css", "favicon.svg"):
        assert f"/static/{asset}?v=" in r.text
        a = client.get(f"/static/{asset}")
        assert a.status_code == 200 and a.content
    # nothing is fetched from another origin
    assert "http://" not in r.text and "https://" not in r.text
    assert re.search(r"https?://", client.get("/static/app.js").text) is None
    # app.js is an ES module that imports the page's other modules, all from this server
    imports = re.findall(r'from "\./(js/[\w-]+\.js)"', client.get("/static/app.js").text)
    assert imports, "app.js imports its modules"
    seen, todo = set(), list(imports)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        module = client.get(f"/static/{path}")
        assert module.status_code == 200
        assert module.headers["content-type"].startswith("text/javascript")
        assert re.search(r"https?://", module.text) is None
        todo += [f"js/{name}" for name in re.findall(r'from "\./([\w-]+\.js)"', module.text)]
    assert len(seen) >= 5


@pytest.mark.parametrize("path", ["../settings.py", "..%2Fsettings.py", "nope.js",
                                  ".hidden", "index.html"])
def test_unknown_or_escaping_asset_paths_are_404(client, path):
    r = client.get(f"/static/{path}")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_fifty_models_with_a_thousand_evaluations_load_lazily(
        live_server, browser_page, admin_headers, artifacts_dir):
    """50 models x 1,000 windows: only the models on screen fetch evaluations, with a limit,
    and charts stay bounded in points whatever the number of windows shown."""
    with session_scope() as session:
        ref = seeding.seed_reference(session, "fleet-ref", [f"document {i}" for i in range(300)])
        for i in range(50):
            model = seeding.seed_model(session, f"model-{i:02d}", ref)
            trajectory = seeding.collapsing if i % 5 == 0 else seeding.stable
            seeding.seed_evaluations(session, model, ref, 1000, trajectory, seed=i,
                                     end=datetime.now(UTC))
    page, problems = browser_page
    evaluation_requests: list[str] = []
    page.on("request", lambda r: evaluation_requests.append(r.url)
            if "/evaluations?" in r.url else None)
    detail_requests: list[str] = []  # one window's evidence per loaded card ("What changed")
    page.on("request", lambda r: detail_requests.append(r.url)
            if re.search(r"/evaluations/\d+", r.url) else None)

    started = time.monotonic()
    page.goto(live_server.url + "/")
    page.wait_for_selector("table.fleet .badge:not(.h-unknown)")
    fleet_seconds = time.monotonic() - started
    assert page.locator("table.fleet tbody tr").count() == 50

    started = time.monotonic()
    page.click("table.fleet a.model-link >> text=model-30")
    page.wait_for_selector("#model-model-30 svg.chart-svg circle.pt")
    chart_seconds = time.monotonic() - started
    page.wait_for_timeout(500)
    # lazy: a handful of cards around the one on screen, never all fifty
    assert 1 <= len(evaluation_requests) <= 10, evaluation_requests
    assert all("limit=200" in url for url in evaluation_requests)
    assert len(detail_requests) <= len(evaluation_requests), detail_requests
    points = page.locator("#model-model-30 svg.chart-svg").first.locator("circle.pt").count()
    assert points <= 200

    # asking for all 1,000 windows still draws a bounded number of points
    started = time.monotonic()
    page.select_option("#model-model-30 select.window-count", "1000")
    page.wait_for_selector("#model-model-30 .legend:has-text('1,000 windows')")
    thousand_seconds = time.monotonic() - started
    points = page.locator("#model-model-30 svg.chart-svg").first.locator("circle.pt").count()
    assert 3 <= points <= 200
    timeline = page.locator("#model-model-30 svg.timeline-svg rect.seg").count()
    assert timeline >= 1

    timings = {"fleet_with_health_seconds": round(fleet_seconds, 2),
               "first_chart_after_click_seconds": round(chart_seconds, 2),
               "thousand_windows_seconds": round(thousand_seconds, 2),
               "evaluation_requests": len(evaluation_requests),
               "evidence_requests": len(detail_requests)}
    (artifacts_dir / "web-fleet-timings.json").write_text(json.dumps(timings, indent=2))
    print("web page, 50 models x 1,000 evaluations:", timings)
    assert problems.all() == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_firing_alert_is_listed_across_pages(live_server, browser_page):
    """/alerts answers 100 per page with a next_cursor: the page follows it."""
    with session_scope() as session:
        ref = seeding.seed_reference(session, "storm-ref", [f"document {i}" for i in range(50)])
        model = seeding.seed_model(session, "stormy", ref)
        ids = [seeding.seed_alert(session, model, minutes_ago=1 + i / 10).id for i in range(130)]
    page, problems = browser_page
    page.goto(live_server.url + "/")
    page.wait_for_selector("table.firing-table tr.alert.firing")
    shown = {int(r.get_attribute("data-alert-id"))
             for r in page.locator("table.firing-table tr.alert.firing").all()}
    assert shown == set(ids)
    assert problems.all() == []
