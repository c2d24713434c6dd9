"""benchmarks.calibration: its table and its interval over pools (the counts themselves are
checked by tests/metrics/test_bands.py, which runs its pools 0-11)."""

from __future__ import annotations

import itertools
import re

import numpy as np
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


def test_document_skew_recovers_a_planted_skew_from_replicate_membership():
    rng = np.random.default_rng(3)
    pool, n, replicates = 300, 100, 3000
    for contributions, low, high in ((rng.exponential(size=pool), 1.2, 2.8),  # skew 2
                                     (rng.normal(size=pool), -0.6, 0.6)):  # skew 0
        planted = ((contributions - contributions.mean()) ** 3).mean() / contributions.std() ** 3
        members = np.zeros((replicates, pool), dtype=bool)
        for r in range(replicates):
            members[r, rng.choice(pool, n, replace=False)] = True
        y = members @ contributions / n  # each replicate's mean
        gamma, snr = calibration.document_skew(y, members)
        assert low < gamma < high and abs(gamma - planted) < 0.6
        assert snr > 0.5
        # a mirrored statistic has the mirrored skew
        assert calibration.document_skew(-y, members)[0] == pytest.approx(-gamma)


def test_the_edgeworth_shift_vanishes_without_skew_and_grows_with_the_pool_share():
    assert calibration.edgeworth_shift(0.0, 200, 1 / 3) == 0
    shifts = [calibration.edgeworth_shift(4.0, 200, f) for f in (0.1, 0.25, 1 / 3, 0.5)]
    assert all(0 < a < b for a, b in itertools.pairwise(shifts))
    # f = 1/3, gamma / sqrt(n) = 1: mean 1/(6 sqrt(4/3)); cumulants (5/3)/sqrt(4/3) - (1/3)/sqrt(2/3)
    f = 1 / 3
    expected = f / (2 * (1 + f) ** 0.5) + ((1 + 2 * f) / (1 + f) ** 0.5 - (1 - 2 * f) / (
        1 - f) ** 0.5) * (2.326 ** 2 - 1) / 6
    assert calibration.edgeworth_shift(200 ** 0.5, 200, f) == pytest.approx(expected)
    assert calibration.edgeworth_shift(-4.0, 200, 0.25) == pytest.approx(-shifts[1])


def test_skew_counts_are_printed_beside_the_bands_own(capsys, human_documents):
    assert calibration.main(["--pools", "2", "--fresh", "3", "--case", "200 auto-baseline",
                             "--skew"]) == 0
    out = capsys.readouterr().out
    counts = calibration.run_case(human_documents, "200 auto-baseline", range(2), fresh=3,
                                  skew=True)
    moved = sum(sum(c.skew_beyond.values()) for c in counts)
    assert f"skew-corrected edge (experiment) {moved}/18 " in out
    assert all(set(c.skew_beyond) == {"diversity", "tail_coverage", "sameness"} for c in counts)
    gammas = [c.skew_estimate["sameness"][0] for c in counts]
    assert f"sameness         document skew {min(gammas):+.1f} to {max(gammas):+.1f}" in out
