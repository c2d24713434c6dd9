"""benchmarks.calibration: its table and its interval over pools (the counts themselves are
checked by tests/metrics/test_bands.py, which runs its pools 0-11)."""

from __future__ import annotations

import re

import pytest

from benchmarks import calibration


def test_the_interval_is_over_pools_not_windows():
    counts = [calibration.PoolCount(p, 120, {"sameness": k}, 0) for p, k in enumerate([0, 0, 12])]
    mean, low, high = calibration.clustered_interval(counts)
    assert mean == pytest.approx(4 / 120)
    # the pools' shares are 0, 0, 0.1: standard error 0.1 / sqrt(3) / sqrt(3)
    assert high - mean == pytest.approx(1.96 * 0.1 / 3)
    assert low < 0 < mean  # one bad pool: far wider than a binomial interval over 360 checks


def test_the_table_prints_the_counts_of_every_window_of_every_pool(capsys, human_documents):
    assert calibration.main(["--pools", "2", "--fresh", "3", "--case", "100 short"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("100 short"))
    raw, calibrated = re.findall(r"(\d+)/18 ", row)[:2]  # 2 pools x 3 windows x 3 signals
    counts = calibration.run_case(human_documents, "100 short", range(2), fresh=3)
    assert [c.checks for c in counts] == [9, 9]
    assert int(raw) == sum(c.raw_beyond for c in counts)
    assert int(calibrated) == sum(c.total for c in counts)
    for signal in ("diversity", "tail_coverage", "sameness"):
        assert f"{signal} {sum(c.beyond[signal] for c in counts)}" in row


def test_fewer_than_two_pools_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        calibration.main(["--pools", "1"])
    assert exit_.value.code == 2
    assert "--pools must be at least 2" in capsys.readouterr().err


def test_z_moments_measure_spread_skew_and_the_pool_offset_spread_link():
    calm = calibration.PoolCount(0, 4, {}, 0, {"sameness": [-1.0, 1.0, -1.0, 1.0]})
    off = calibration.PoolCount(1, 4, {}, 0, {"sameness": [0.0, 4.0, 0.0, 4.0]})
    m = calibration.z_moments([calm, off], "sameness")
    # all eight: mean 1, deviations -2, 0, -2, 0 and -1, 3, -1, 3
    assert m.variance == pytest.approx((4 + 0 + 4 + 0 + 1 + 9 + 1 + 9) / 8)
    assert m.skew == pytest.approx(((-8 - 8 - 1 + 27 - 1 + 27) / 8) / 3.5 ** 1.5)
    assert m.offset_spread == pytest.approx(1.0)  # the offset pool is also the wider one
    flipped = calibration.PoolCount(1, 4, {}, 0, {"sameness": [2.0, 2.0, 2.0, 2.0]})
    assert calibration.z_moments([calm, flipped], "sameness").offset_spread == pytest.approx(-1.0)


def test_moments_are_printed_from_the_windows_z(capsys, human_documents):
    assert calibration.main(["--pools", "2", "--fresh", "3", "--case", "100 short",
                             "--moments"]) == 0
    out = capsys.readouterr().out
    counts = calibration.run_case(human_documents, "100 short", range(2), fresh=3)
    assert all(len(c.z["sameness"]) == 3 for c in counts)
    m = calibration.z_moments(counts, "sameness")
    assert f"sameness         z variance {m.variance:.2f}  skew toward collapse {m.skew:+.2f}" in out


def test_the_skew_allowance_is_printed_beside_the_count_without_it(capsys, human_documents):
    assert calibration.main(["--pools", "2", "--fresh", "3", "--case", "200 auto-baseline",
                             "--skew"]) == 0
    out = capsys.readouterr().out
    counts = calibration.run_case(human_documents, "200 auto-baseline", range(2), fresh=3)
    sym = sum(sum(c.symmetric_beyond.values()) for c in counts)
    assert f"without the skew allowance {sym}/18 " in out
    # the allowance only widens: never fewer windows beyond the symmetric edge
    assert all(c.symmetric_beyond[s] >= c.beyond[s] for c in counts for s in c.beyond)
    gammas = [c.allowance["sameness"][0] for c in counts]
    assert f"sameness         document skew {min(gammas):+.1f} to {max(gammas):+.1f}" in out
    assert all(c.allowance[s][1] >= 0 for c in counts for s in c.allowance)
