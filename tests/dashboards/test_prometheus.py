"""dashboards/prometheus: scrape config, alerting rules and their promtool unit tests."""

from __future__ import annotations

import re

import pytest

from tests.conftest import need_program
from tests.dashboards.helpers import (
    METRIC_NAME,
    PROMETHEUS,
    RULE_TESTS,
    RULES,
    exported_metric_names,
    exported_text,
    load_yaml,
    rule_names,
    run,
)

REQUIRED_ALERTS = {"ModelDiversityCollapse", "ModelTailCoverageLoss", "ModelSamenessSurge",
                   "ModelEvaluationsStale", "ModelNoSamples"}


def alert_rules() -> list[dict]:
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_checks_the_scrape_config_and_rules():
    promtool = need_program("promtool")
    result = run([promtool, "check", "config", str(PROMETHEUS / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    result = run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass():
    promtool = need_program("promtool")
    files = sorted(RULE_TESTS.glob("*.yml"))
    assert files
    result = run([promtool, "test", "rules", *map(str, files)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_exposition():
    """``promtool check metrics`` lints what /metrics writes (names, types, HELP, the
    counters' _total)."""
    import subprocess

    promtool = need_program("promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=exported_text(),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_tests_cover_firing_resolving_and_no_data():
    cases = [c for f in RULE_TESTS.glob("*.yml") for c in load_yaml(f)["tests"]]
    checks = [t for c in cases for t in c.get("alert_rule_test", [])]
    tested = {t["alertname"] for t in checks if t.get("exp_alerts")}
    assert REQUIRED_ALERTS <= tested
    # resolving: the same alert expected firing and later expected silent in one case
    resolved = set()
    for case in cases:
        times = {}
        for t in case.get("alert_rule_test", []):
            times.setdefault(t["alertname"], []).append((t["eval_time"], bool(t["exp_alerts"])))
        for name, seq in times.items():
            ordered = [fired for _, fired in sorted(seq, key=lambda x: _minutes(x[0]))]
            if True in ordered and ordered[ordered.index(True):].count(False):
                resolved.add(name)
    assert {"ModelDiversityCollapse", "ModelEvaluationsStale", "ModelNoSamples"} <= resolved
    # no data: a case without any input series, and a case of NaN series (a model before
    # its first window) in which nothing fires
    assert any(not c["input_series"] for c in cases)
    assert any(any(set(s["values"].split()) == {"NaN"} for s in c["input_series"])
               and not any(t["exp_alerts"] for t in c["alert_rule_test"]) for c in cases)


def _minutes(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)([smh])", value).groups()
    return int(number) * {"s": 1 / 60, "m": 1, "h": 60}[unit]


def test_required_alerts_have_severity_duration_and_summary():
    rules = alert_rules()
    assert REQUIRED_ALERTS <= {r["alert"] for r in rules}
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if rule["alert"] in REQUIRED_ALERTS:
            assert "for" in rule, rule["alert"]
            assert "{{ $labels.model }}" in rule["annotations"]["summary"], rule["alert"]


def test_collapse_is_critical_and_early_collapse_a_warning():
    severity = {r["alert"]: r["labels"]["severity"] for r in alert_rules()}
    assert severity["ModelDiversityCollapse"] == severity["ModelSamenessSurge"] == "critical"
    assert severity["ModelTailCoverageLoss"] == "warning"


def test_thresholds_match_the_scoring_library():
    from metrics.config import ScoreConfig

    cfg = ScoreConfig()
    rules = {r["alert"]: r["expr"] for r in alert_rules()}
    div, same, tail = (rules["ModelDiversityCollapse"], rules["ModelSamenessSurge"],
                       rules["ModelTailCoverageLoss"])
    base_div = cfg.baseline_collapse_diversity_ratio
    base_same = cfg.baseline_collapse_sameness_ratio
    assert f"collapsewatch_diversity_baseline_ratio <= {base_div}" in div
    assert f"collapsewatch_diversity_ratio <= {cfg.collapse_diversity_ratio}" in div
    assert f"collapsewatch_diversity_ratio <= {cfg.floor_diversity_ratio}" in div
    assert f"collapsewatch_sameness_baseline_ratio >= {base_same}" in same
    assert f"collapsewatch_sameness_ratio >= {cfg.collapse_sameness_ratio}" in same
    assert f"collapsewatch_sameness_ratio >= {cfg.floor_sameness_ratio}" in same
    assert f"collapsewatch_tail_coverage_baseline_ratio <= {cfg.baseline_early_tail_ratio}" in tail
    assert f"collapsewatch_tail_coverage_ratio <= {cfg.early_tail_ratio}" in tail


def test_rules_use_only_metrics_the_exporter_emits():
    exported = exported_metric_names()
    used = {m for r in alert_rules() for m in METRIC_NAME.findall(r["expr"])}
    assert used and used <= exported, used - exported


def test_service_rules_match_the_scrape_job():
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    jobs = {j["job_name"] for j in config["scrape_configs"]}
    assert "collapsewatch" in jobs
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "collapsewatch")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    exprs = " ".join(r["expr"] for r in alert_rules())
    assert 'up{job="collapsewatch"}' in exprs
    assert config["rule_files"] == ["collapsewatch.rules.yml"]


@pytest.mark.parametrize("name", sorted(REQUIRED_ALERTS))
def test_alert_names_are_unique_per_meaning(name):
    assert name in rule_names(load_yaml(RULES))
