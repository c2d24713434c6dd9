"""dashboards/alertmanager: config valid; critical -> PagerDuty, warning -> Slack, by model."""

from __future__ import annotations

import pytest

from tests.conftest import need_program
from tests.dashboards.helpers import ALERTMANAGER, load_yaml, run


def test_amtool_accepts_the_config():
    amtool = need_program("amtool")
    result = run([amtool, "check-config", str(ALERTMANAGER)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("labels,receiver", [
    (["severity=critical", "model=bot", "alertname=ModelDiversityCollapse"], "pagerduty-critical"),
    (["severity=warning", "model=bot", "alertname=ModelTailCoverageLoss"], "slack-warnings"),
])
def test_routing(labels, receiver):
    amtool = need_program("amtool")
    result = run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_receivers_and_grouping():
    config = load_yaml(ALERTMANAGER)
    assert "model" in config["route"]["group_by"]
    receivers = {r["name"]: r for r in config["receivers"]}
    (pd,) = receivers["pagerduty-critical"]["pagerduty_configs"]
    (slack,) = receivers["slack-warnings"]["slack_configs"]
    assert pd["send_resolved"] and slack["send_resolved"]
    # secrets come from files, never from the repository
    assert pd["routing_key_file"].startswith("/run/secrets/") and "routing_key" not in pd
    assert slack["api_url_file"].startswith("/run/secrets/") and "api_url" not in slack
