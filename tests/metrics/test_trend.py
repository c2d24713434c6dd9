"""The sequential detector (metrics.trend): ARL of the defaults, delay on injected shifts,
idempotence under re-scored and out-of-order windows, reset on a re-pin, health."""

from __future__ import annotations

import random

import numpy as np
import pytest

from metrics.registry import SIGNALS
from metrics.trend import (
    TrendConfig,
    cusum_arl,
    describe,
    simulate_run_lengths,
    trend,
    trend_health,
)

DEFAULT = TrendConfig()


def window(z: dict[str, float] | float, *, baseline: str | None = "b1", ratio: float = 0.95,
           mean_error: float = 0.0, health: str = "healthy") -> dict:
    """A Score JSON reduced to what the detector reads. ``z`` as the Score JSON has it
    (negative = below the band); the same z for every signal unless a dict says otherwise."""
    zs = z if isinstance(z, dict) else {s: z for s in SIGNALS}
    signals = {}
    for s in SIGNALS:
        signals[s] = {"ratio": ratio, "z": zs.get(s, 0.0),
                      "z_against": "baseline" if baseline else "human",
                      "mean_error": mean_error}
        if baseline:
            signals[s]["baseline_ratio"] = ratio
    return {"reference": {"name": "r", "sha256": "ref"},
            "baseline": {"name": baseline, "sha256": baseline} if baseline else None,
            "health": health, "signals": signals}


def collapsing(shift: float) -> dict[str, float]:
    """z of a window moved ``shift`` sd in every signal's collapse direction."""
    return {"diversity": -shift, "tail_coverage": -shift, "sameness": shift}


HEAD = DEFAULT.head_start * DEFAULT.h


@pytest.mark.parametrize("start", [0.0, HEAD], ids=["zero start", "head start"])
def test_in_control_arl_of_the_defaults_is_at_least_1000_windows(start):
    arl = cusum_arl(0.0, DEFAULT.k, DEFAULT.h, start=start)
    assert 1000 <= arl <= 1200
    # the Markov-chain value is what a simulated in-control stream gives (within 10%)
    rng = np.random.default_rng(1)
    runs = simulate_run_lengths(rng.standard_normal(200_000), DEFAULT.k, DEFAULT.h,
                                runs=3000, limit=20_000, seed=2, start=start)
    assert abs(runs.mean() / arl - 1) < 0.1, (runs.mean(), arl)


def test_markov_chain_delays_meet_the_targets_after_a_steady_start_and_from_the_pin():
    assert cusum_arl(2.0, DEFAULT.k, DEFAULT.h, steady=True) <= 4.0
    assert cusum_arl(1.0, DEFAULT.k, DEFAULT.h, steady=True) <= 10.0
    # a shift present from the first window after the pin: the head start makes up for
    # the statistic starting low (from 0 a 1-sd shift would take 10.6 windows)
    assert cusum_arl(2.0, DEFAULT.k, DEFAULT.h, start=HEAD) <= 4.0
    assert cusum_arl(1.0, DEFAULT.k, DEFAULT.h, start=HEAD) <= 10.0
    assert cusum_arl(1.0, DEFAULT.k, DEFAULT.h) > 10.0
    # the head start is the largest (in tenths of h) keeping the in-control ARL >= 1,000
    assert cusum_arl(0.0, DEFAULT.k, DEFAULT.h, start=HEAD + 0.1 * DEFAULT.h) < 1000


def _first_alarm(stream: list[dict], config: TrendConfig | None = None) -> int | None:
    for t in range(1, len(stream) + 1):
        if trend(stream[:t], config=config)["tail_coverage"]["alarm"]:
            return t
    return None


@pytest.mark.parametrize("shift, target", [(2.0, 4.0), (1.0, 10.0)])
def test_a_sustained_shift_is_flagged_within_the_target_delay(shift, target):
    """In-control windows, then a sustained shift: mean windows from the first shifted
    window to the alarm (that window included), over streams without an earlier alarm."""
    rng = np.random.default_rng(int(shift * 10))
    delays = []
    while len(delays) < 300:
        before = rng.standard_normal(30)
        after = rng.standard_normal(60) - shift
        stream = [window({"tail_coverage": z}) for z in np.r_[before, after]]
        first = _first_alarm(stream)
        if first is not None and first > 30:
            delays.append(first - 30)
    assert np.mean(delays) <= target, np.mean(delays)


@pytest.mark.parametrize("shift, target", [(2.0, 4.0), (1.0, 10.0)])
def test_a_shift_present_from_the_pin_is_flagged_within_the_target_delay(shift, target):
    """A model already off when its baseline is pinned (the next checkpoint, the next
    generation): mean windows from the first window to the alarm; slower without the
    head start."""
    rng = np.random.default_rng(int(shift * 10) + 1)
    no_head = TrendConfig(head_start=0.0)
    delays: dict[float, list[int]] = {DEFAULT.head_start: [], 0.0: []}
    for _ in range(300):
        stream = [window({"tail_coverage": float(z)}) for z in rng.standard_normal(60) - shift]
        for cfg in (DEFAULT, no_head):
            delays[cfg.head_start].append(_first_alarm(stream, cfg))
    assert np.mean(delays[DEFAULT.head_start]) <= target, np.mean(delays[DEFAULT.head_start])
    assert np.mean(delays[DEFAULT.head_start]) < np.mean(delays[0.0])


def test_the_head_start_is_only_for_windows_that_begin_at_the_pin():
    quiet = [window({"tail_coverage": -0.5}) for _ in range(3)]  # y = k: S stays put
    assert trend(quiet)["tail_coverage"]["statistic"] == pytest.approx(HEAD)
    assert trend(quiet)["tail_coverage"]["since_window"] == 1
    # the caller read the recent part of a longer history: no head start
    assert trend(quiet, from_pin=False)["tail_coverage"]["statistic"] == 0.0
    # ... unless a pin happens inside the windows given
    old = [window({"tail_coverage": 0.0}, baseline="b0")]
    assert trend(old + quiet, from_pin=False)["tail_coverage"]["statistic"] == pytest.approx(HEAD)
    with pytest.raises(ValueError):
        TrendConfig(head_start=1.0)


def test_in_control_windows_raise_no_alarm_over_200_windows():
    rng = np.random.default_rng(5)
    alarms = 0
    for _ in range(20):
        stream = [window(float(z)) for z in rng.standard_normal(200)]
        state = trend(stream)
        alarms += any(v["alarm"] for v in state.values())
    # 20 streams x 3 signals x 200 windows at ARL ~1,030: ~0.6 expected
    assert alarms <= 3


def test_order_and_repeats_of_the_same_windows_do_not_change_the_trend():
    rng = random.Random(3)
    zs = [-1.2, -0.3, -2.0, -1.5, -0.8, -1.9, -2.2, -1.1]
    stream = [window({"tail_coverage": z}) for z in zs]
    keys = [f"2026-01-01T00:{i:02d}" for i in range(len(zs))]
    expected = trend(stream, keys)
    assert expected["tail_coverage"]["alarm"]
    pairs = list(zip(keys, stream))
    shuffled = pairs[:] + pairs[2:5]  # windows 2-4 re-scored (same numbers)
    rng.shuffle(shuffled)
    assert trend([p[1] for p in shuffled], [p[0] for p in shuffled]) == expected


def test_a_rescored_window_replaces_its_earlier_score():
    stream = [window({"tail_coverage": -3.0}) for _ in range(4)]
    keys = [1, 2, 3, 4]
    fixed = window({"tail_coverage": 0.0})
    # window 4 scored again (e.g. after a fix): the last score of a key counts
    again = trend(stream + [fixed], keys + [4])
    assert again == trend(stream[:3] + [fixed], keys)
    assert again["tail_coverage"]["statistic"] < trend(stream, keys)["tail_coverage"]["statistic"]


def test_a_new_baseline_starts_the_detector_again():
    old = [window({"tail_coverage": -3.0}, baseline="b1") for _ in range(5)]
    assert trend(old)["tail_coverage"]["alarm"]
    new = [window({"tail_coverage": -0.2}, baseline="b2") for _ in range(3)]
    state = trend(old + new)
    assert not state["tail_coverage"]["alarm"]
    # as if the old windows were not there (the head start included)
    assert state["tail_coverage"]["statistic"] == trend(new)["tail_coverage"]["statistic"] > 0
    # the same windows against the first baseline would still be in alarm
    assert trend(old + [window({"tail_coverage": -0.2}, baseline="b1")] * 3)[
        "tail_coverage"]["alarm"]


def test_windows_without_z_are_skipped():
    stream = [window({"tail_coverage": -3.0}) for _ in range(3)]
    empty = window({"tail_coverage": -3.0}, health="insufficient_data")
    for s in SIGNALS:
        empty["signals"][s]["z"] = None
    assert trend(stream[:2] + [empty] + stream[2:]) == trend(stream)


def test_run_start_length_and_shift_estimate_are_reported():
    # the head start's run ends at window 9; a new run starts at window 12
    zs = [1.5, 1.5, 0.5, -0.2, -3.0, -2.5, -3.1]
    stream = [window({"tail_coverage": z}, ratio=r) for z, r in
              zip(zs, [1.0, 1.0, 1.0, 1.0, 0.92, 0.92, 0.92])]
    v = trend(stream, [8, 9, 10, 11, 12, 13, 14])["tail_coverage"]
    assert v["alarm"] and v["since_window"] == 12 and v["windows"] == 3
    assert v["shift_estimate"] == pytest.approx(-0.08, abs=1e-3)
    assert v["threshold"] == DEFAULT.h and v["against"] == "baseline"
    assert describe({"tail_coverage": v}) == [
        "tail coverage ~8% below baseline for 3 windows (since window 12)"]


def test_the_error_of_the_baseline_mean_raises_the_reference_value():
    """A small baseline's mean error looks like a shift to a CUSUM: the allowance keeps a
    baseline off by one standard error (mean_error 0.58: 3 windows pinned) from alarming,
    and a large shift still alarms."""
    u = 0.58
    offset = [window({"tail_coverage": -u}, mean_error=u) for _ in range(300)]
    assert not trend(offset)["tail_coverage"]["alarm"]
    assert trend(offset, config=TrendConfig(allowance=0.0))["tail_coverage"]["alarm"]
    big = [window({"tail_coverage": -3.0}, mean_error=u) for _ in range(3)]
    assert trend(big)["tail_coverage"]["alarm"]


def test_an_alarm_makes_a_healthy_window_early_collapse_but_not_collapse():
    alarm = trend([window(collapsing(3.0)) for _ in range(4)])
    quiet = trend([window(0.0) for _ in range(4)])
    assert trend_health("healthy", alarm) == "early_collapse"
    assert trend_health("early_collapse", alarm) == "early_collapse"
    assert trend_health("collapse", alarm) == "collapse"
    assert trend_health("insufficient_data", alarm) == "insufficient_data"
    assert trend_health("healthy", quiet) == "healthy"


def test_every_signal_is_oriented_to_its_collapse_direction():
    down = trend([window(collapsing(3.0)) for _ in range(4)])
    assert all(v["alarm"] for v in down.values())
    up = trend([window(collapsing(-3.0)) for _ in range(4)])
    assert not any(v["alarm"] for v in up.values())
