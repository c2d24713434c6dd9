"""The Score JSON, baselines, health rules and degenerate windows."""

from __future__ import annotations

import json

import pytest

import metrics
from metrics.scoring import health_state


def _strict_json(result: dict) -> dict:
    return json.loads(json.dumps(result, allow_nan=False))


def test_score_json_has_the_documented_shape(small_reference, fortune_split, fast_score_config):
    result = _strict_json(metrics.score(fortune_split[1][:100], small_reference, config=fast_score_config))
    assert result["reference"] == {"name": small_reference.name, "sha256": small_reference.sha256}
    assert result["baseline"] is None
    assert result["documents"] == 100 and result["tokens"] > 0
    assert result["health"] in metrics.HEALTH_STATES
    assert set(result["signals"]) == set(metrics.SIGNALS)
    for sig in result["signals"].values():
        assert isinstance(sig["ratio"], float) and isinstance(sig["outside_band"], bool)
        assert "baseline_ratio" not in sig
    assert set(result["metrics"]) == {spec.name for spec in metrics.REGISTRY}
    for name, m in result["metrics"].items():
        for key in ("value", "human_mean", "human_low", "human_high", "ratio", "percentile"):
            assert isinstance(m[key], float), (name, key)
        assert m["human_low"] <= m["human_mean"] <= m["human_high"]
        assert 0.0 <= m["percentile"] <= 1.0
        assert "baseline_ratio" not in m


def test_ratio_is_value_over_human_mean(small_reference, fortune_split, fast_score_config):
    result = metrics.score(fortune_split[1][:100], small_reference, config=fast_score_config)
    for spec in metrics.REGISTRY:
        m = result["metrics"][spec.name]
        if spec.complement_ratio:
            expected = (1 - m["human_mean"]) / max(1 - m["value"], 1 / 100)
        else:
            expected = m["value"] / m["human_mean"]
        assert m["ratio"] == pytest.approx(expected)


@pytest.mark.parametrize("documents", [[], [""], ["one document"], ["a b c"] * 49, ["", "  ", "..."] * 30])
def test_tiny_or_empty_windows_are_insufficient_data(small_reference, documents):
    result = _strict_json(metrics.score(documents, small_reference))
    assert result["health"] == "insufficient_data"
    assert result["documents"] == len(documents)
    for sig in result["signals"].values():
        assert sig["ratio"] is None and sig["outside_band"] is False
    for m in result["metrics"].values():
        assert m["ratio"] is None and m["human_mean"] is None


def test_minimum_window_is_configuration(small_reference, fortune_split, fast_score_config):
    docs = fortune_split[1][:30]
    assert metrics.score(docs, small_reference, config=fast_score_config)["health"] == "insufficient_data"
    cfg = metrics.ScoreConfig(min_documents=20, token_budget=fast_score_config.token_budget)
    assert metrics.score(docs, small_reference, config=cfg)["health"] != "insufficient_data"


def test_score_with_a_baseline_adds_baseline_fields(small_reference, fortune_split, fast_score_config):
    base = metrics.build_baseline(fortune_split[1][1000:1400], small_reference, "b",
                                  config=metrics.ReferenceConfig(replicates=40))
    result = _strict_json(metrics.score(fortune_split[1][:100], small_reference, base,
                                        config=fast_score_config))
    assert result["baseline"] == {"name": "b", "sha256": base.sha256}
    for sig in result["signals"].values():
        assert isinstance(sig["baseline_ratio"], float)
        assert isinstance(sig["outside_baseline_band"], bool)
    for m in result["metrics"].values():
        assert "baseline_ratio" in m and isinstance(m["outside_baseline_band"], bool)
    empty = _strict_json(metrics.score([], small_reference, base))
    assert empty["signals"]["diversity"]["baseline_ratio"] is None


def test_baseline_from_another_reference_is_refused(small_reference, fortune_split):
    other = metrics.build_reference(fortune_split[1][:300], "other",
                                    config=metrics.ReferenceConfig(replicates=5))
    base = metrics.build_baseline(fortune_split[1][300:600], other, "b",
                                  config=metrics.ReferenceConfig(replicates=5))
    with pytest.raises(metrics.ProfileError, match="rebuild the baseline against this reference"):
        metrics.score(fortune_split[1][:60], small_reference, base)


def test_profiles_in_the_wrong_slot_are_refused(small_reference, fortune_split):
    base = metrics.build_baseline(fortune_split[1][:250], small_reference, "b",
                                  config=metrics.ReferenceConfig(replicates=5))
    with pytest.raises(metrics.ProfileError):
        metrics.score(fortune_split[1][:60], base)
    with pytest.raises(metrics.ProfileError):
        metrics.score(fortune_split[1][:60], small_reference, small_reference)


def _band(div=(1.0, 0.9, 1.1), tail=(1.0, 0.9, 1.1), same=(1.0, 0.9, 1.1)):
    return {"diversity": div, "tail_coverage": tail, "sameness": same}


CFG = metrics.ScoreConfig()


@pytest.mark.parametrize(
    "human, expected",
    [
        (_band(), "healthy"),
        (_band(div=(0.84, 0.9, 1.1)), "collapse"),
        (_band(div=(0.86, 0.9, 1.1)), "healthy"),  # significant but small
        (_band(div=(0.80, 0.7, 1.1)), "healthy"),  # large but inside the band
        (_band(same=(1.6, 0.9, 1.1)), "collapse"),
        (_band(same=(1.4, 0.9, 1.1)), "healthy"),
        (_band(same=(0.5, 0.9, 1.1)), "healthy"),  # less sameness than human is fine
        (_band(tail=(0.89, 0.95, 1.05)), "early_collapse"),
        (_band(tail=(0.91, 0.95, 1.05)), "healthy"),
        (_band(tail=(0.5, 0.9, 1.1), div=(0.8, 0.9, 1.1)), "collapse"),
        (_band(div=(1.3, 0.9, 1.1), tail=(1.3, 0.9, 1.1)), "healthy"),
    ],
)
def test_human_only_health_rules(human, expected):
    assert health_state(human, None, CFG) == expected


@pytest.mark.parametrize(
    "human, baseline, expected",
    [
        # a model at 0.8 x human diversity, stable against its baseline: healthy
        (_band(div=(0.8, 0.95, 1.05)), _band(), "healthy"),
        (_band(div=(0.8, 0.95, 1.05)), _band(div=(0.84, 0.9, 1.1)), "collapse"),
        (_band(), _band(same=(1.5, 0.9, 1.1)), "collapse"),
        (_band(), _band(tail=(0.9, 0.95, 1.05)), "early_collapse"),
        (_band(), _band(tail=(0.91, 0.95, 1.05)), "healthy"),
        # absolute floors against human, whatever the baseline says
        (_band(div=(0.5, 0.95, 1.05)), _band(), "collapse"),
        (_band(same=(3.0, 0.9, 1.1)), _band(), "collapse"),
        (_band(same=(2.9, 0.9, 1.1)), _band(), "healthy"),
        # human-only rules do not apply with a baseline
        (_band(tail=(0.7, 0.95, 1.05)), _band(), "healthy"),
    ],
)
def test_baseline_health_rules(human, baseline, expected):
    assert health_state(human, baseline, CFG) == expected


def test_thresholds_are_configuration():
    human = _band(div=(0.84, 0.9, 1.1))
    assert health_state(human, None, metrics.ScoreConfig(collapse_diversity_ratio=0.8)) == "healthy"
    with pytest.raises(ValueError):
        metrics.ScoreConfig(band_low=0.9, band_high=0.1)
