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
