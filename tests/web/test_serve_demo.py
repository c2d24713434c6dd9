"""`collapsewatch serve --demo`, the command behind `make run`, end to end with a browser."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.demo import seed as demo
from tests.service.demo_support import models_by_name as _models
from tests.service.demo_support import wait_for as _wait
from tests.support import VENV_BIN, free_port, process, wait_http

# ------------------------------------------------------------ `collapsewatch serve --demo`


@dataclass
class ServedDemo:
    base: str
    proc: object
    started: float
    data_dir: Path


@pytest.fixture(scope="module")
def served_demo(tmp_path_factory) -> Iterator[ServedDemo]:
    """The real command a new user runs (``make run``), on a fresh data directory."""
    tmp = tmp_path_factory.mktemp("serve-demo")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # the demo reaches the API at the service's public URL (default http://127.0.0.1:8000)
    env = {"COLLAPSEWATCH_DATA_DIR": str(tmp / "data"), "COLLAPSEWATCH_DATABASE_URL": "",
           "COLLAPSEWATCH_BROKER_URL": "", "COLLAPSEWATCH_LOG_JSON": "1",
           "COLLAPSEWATCH_PUBLIC_URL": base}
    args = [str(VENV_BIN / "collapsewatch"), "serve", "--demo", "--host", "127.0.0.1",
            "--port", str(port)]
    started = time.monotonic()
    with process(args, tmp / "serve.log", env=env) as proc:
        wait_http(f"{base}/readyz", timeout=120, proc=proc.popen)
        yield ServedDemo(base, proc, started, tmp / "data")


def _evaluations(base: str, model: str) -> list[dict]:
    r = httpx.get(f"{base}/api/v1/models/{model}/evaluations", params={"limit": 500},
                  timeout=30)
    r.raise_for_status()
    return r.json()["evaluations"]


def test_serve_demo_creates_demo_models_that_get_evaluated(served_demo):
    base, proc = served_demo.base, served_demo.proc
    models = _wait("the demo models", lambda: (
        m if {demo.STABLE, demo.RECURSIVE} <= set(m := _models(base)) else None),
        timeout=300, proc=proc)
    assert models[demo.RECURSIVE]["reference"]["name"] == demo.REFERENCE_NAME
    for name in (demo.STABLE, demo.RECURSIVE):
        evaluations = _wait(f"a scored window of {name}", lambda n=name: _evaluations(base, n),
                            timeout=300, proc=proc)
        latest = evaluations[0]
        assert latest["health"] in ("healthy", "early_collapse", "collapse",
                                    "insufficient_data")
        assert set(latest["signals"]) >= {"diversity", "tail_coverage", "sameness"}
    assert (served_demo.data_dir / "collapsewatch.db").exists()


@pytest.mark.slow
def test_serve_demo_shows_a_collapse_and_an_alert_within_minutes(served_demo, chromium,
                                                                  artifacts_dir):
    """What `make run` promises: within about five minutes demo-stable is healthy,
    demo-recursive went early_collapse -> collapse, and an alert fires (bounded: 7 min from
    the start of the command)."""
    base, proc = served_demo.base, served_demo.proc
    budget = 7 * 60 - (time.monotonic() - served_demo.started)

    def collapsed() -> list[str] | None:
        healths = [e["health"] for e in reversed(_evaluations(base, demo.RECURSIVE))]
        return healths if "collapse" in healths else None

    healths = _wait("demo-recursive to reach collapse", collapsed, timeout=budget, proc=proc,
                    interval=5)
    first_collapse = healths.index("collapse")
    assert "early_collapse" in healths[:first_collapse], healths
    assert healths[0] == "healthy", healths

    def firing() -> list[dict] | None:
        alerts = httpx.get(f"{base}/api/v1/alerts", params={"state": "firing"},
                           timeout=30).json()["alerts"]
        return [a for a in alerts if a["model"] == demo.RECURSIVE] or None

    alerts = _wait("a firing alert on demo-recursive", firing, timeout=120, proc=proc,
                   interval=3)
    assert {a["kind"] for a in alerts} & {"early_collapse", "collapse"}

    # the evidence names what the loop over-produces and what it lost, once generations in
    # (the first collapsed windows may list only one or two of each)
    def shows_what_changed() -> dict | None:
        latest = _evaluations(base, demo.RECURSIVE)[0]
        evidence = httpx.get(f"{base}/api/v1/models/{demo.RECURSIVE}/evaluations/{latest['id']}",
                             timeout=30).json().get("evidence") or {}
        return (evidence if evidence.get("overrepresented") and len(evidence.get("vanished") or [])
                >= 10 else None)

    remaining = 7 * 60 - (time.monotonic() - served_demo.started)
    _wait("demo-recursive's evidence to list phrases and vanished words", shows_what_changed,
          timeout=max(60.0, remaining), proc=proc, interval=5)

    stable = [e["health"] for e in _evaluations(base, demo.STABLE)]
    assert stable and stable[0] == "healthy", stable
    assert stable.count("healthy") >= 0.8 * len(stable), stable
    stable_alerts = httpx.get(f"{base}/api/v1/alerts", params={"model": demo.STABLE},
                              timeout=30).json()["alerts"]
    assert [a for a in stable_alerts if a["kind"] in ("early_collapse", "collapse")] == []

    context = chromium.new_context(viewport={"width": 1360, "height": 1000})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(base + "/")
        page.wait_for_selector(f"#model-{demo.RECURSIVE} svg.chart-svg circle.pt",
                               timeout=30_000)
        # cards load when they scroll into view; the collapsing model's card above it is tall
        page.locator(f"#model-{demo.STABLE}").scroll_into_view_if_needed()
        page.wait_for_selector(f"#model-{demo.STABLE} svg.chart-svg circle.pt", timeout=60_000)
        page.wait_for_selector("tr.alert.firing")
        assert page.locator(f"#model-{demo.RECURSIVE} .card-head .badge").get_attribute(
            "data-health") in ("early_collapse", "collapse")
        # "What changed" for the collapsing model, from the evidence the pipeline stored: the
        # phrases its n-gram loop over-produces and the fortunes words it lost (printed)
        panel = page.locator(f"#model-{demo.RECURSIVE} section.evidence")
        panel.wait_for(timeout=30_000)
        phrases = [p.inner_text() for p in panel.locator("li.phrase .ngram").all()]
        vanished = [c.inner_text() for c in panel.locator(".ev-vanished .chip").all()]
        shown = panel.get_attribute("data-evaluation-id")
        latest = httpx.get(f"{base}/api/v1/models/{demo.RECURSIVE}/evaluations/{shown}",
                           timeout=30).json()["evidence"]
        print(f"demo-recursive window {latest.get('against')}: {len(phrases)} phrases "
              f"{phrases[:5]}, {len(vanished)} vanished words {vanished[:8]}")
        assert phrases == [p["ngram"] for p in latest["overrepresented"]]
        assert phrases and vanished, "the page shows no phrases or no vanished words"
        page.screenshot(path=str(artifacts_dir / "serve-demo.png"), full_page=True)
        assert errors == []
    finally:
        context.close()
