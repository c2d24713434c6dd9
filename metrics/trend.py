"""Early warning: a one-sided CUSUM per signal over the windows since the last baseline pin.

A single window is judged alone (see :func:`metrics.scoring.health_state`); a small shift
that persists — tail coverage 0.92 of the baseline in every window, inside the size
threshold — is invisible to it. Page's (1954) cumulative sum accumulates such evidence:

    S_0 = f·h,   S_t = max(0, S_{t-1} + y_t - k_t),   alarm when S_t > h

with ``y_t`` the window's deviation from its band in the signal's collapse direction, in
units of a fresh window's spread around the band centre (``z`` rescaled: see below), ``k``
the reference value (half the shift to detect fastest), ``h`` the decision interval and
``f·h`` a head start at the pin (Lucas & Crosier's 1982 "fast initial response"): a model
that is already off when its baseline is pinned — the next checkpoint of a training run,
the generation after the pinned one — is flagged sooner, while an in-control start loses
the head start within a few windows.

Why CUSUM and not EWMA: both are tuned by average run length (ARL) and detect a sustained
shift of 1-2 sd in a handful of windows (Lucas & Saccucci 1990 give comparable ARLs), but
CUSUM also says *since when* (the window after which S last stood at 0) and *how much*
(the mean deviation over that run, Montgomery "Introduction to Statistical Quality
Control", 6th ed., §9.1.3), which the alert needs ("tail coverage ~8% below baseline for 6
windows"); an EWMA spreads a change over all windows with geometric weights.

The error of the band centre itself. Every window is compared with the same reference or
baseline mean, whose own estimation error ``c`` (a fixed offset, ``mean_error`` in the
Score JSON, in fresh-window sd) is shared by all of them: to a CUSUM it looks exactly like
a real shift. A 3-window auto-baseline has mean_error 0.58, so one baseline in five reads
more than half a window-sd "low" for ever. The reference value therefore grows with it:
``k_t = k + allowance * mean_error``, so that a baseline whose mean is off by up to
``allowance`` standard errors runs in control at the nominal ARL, and small pools buy
fewer false alarms with slower detection (docs/early-warning.md has the numbers).

The detector is a pure function of the ordered windows: ``trend(scores, keys)`` sorts by
key, keeps the last score of a re-scored key, and reads only the windows since the last
change of reference or baseline (a re-pin starts it again). A crash or retry cannot count
a window twice and a restart loses nothing.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from metrics.registry import SIGNALS

# which way each signal's z moves under collapse (+1: rises, -1: falls)
COLLAPSE_SIGN = {"diversity": -1.0, "tail_coverage": -1.0, "sameness": 1.0}


@dataclass(frozen=True)
class TrendConfig:
    """CUSUM parameters, tuned by ARL (``benchmarks/detection.py --arl`` prints the table).

    k (0.5): reference value in fresh-window sd; 0.5 is optimal for a 1-sd shift.
    h (5.1): decision interval; with k = 0.5 and normal windows the in-control ARL is
      1,024 windows once running (1,010 from the pin, with the head start; Brook & Evans
      1972 Markov chain, :func:`cusum_arl`); a shift that starts after the detector has
      run a while is flagged in 3.75 windows (2 sd) and 9.8 windows (1 sd) on average, a
      shift present from the first window after the pin in 2.7 / 7.4 (4.1 / 10.6 without
      the head start).
    head_start (0.4): S_0 as a share of h (Lucas & Crosier 1982); the largest, in tenths of
      h, that keeps the in-control ARL from the pin at 1,000 windows or more (0.5: 993).
    allowance (1.645): standard errors of the band centre added to k (see module notes):
      a baseline whose mean errs by up to the one-sided 95% bound keeps the nominal ARL.
    """

    k: float = 0.5
    h: float = 5.1
    head_start: float = 0.4
    allowance: float = 1.645

    def __post_init__(self) -> None:
        if self.k < 0 or self.h <= 0 or self.allowance < 0 or not 0 <= self.head_start < 1:
            raise ValueError("trend parameters must satisfy k >= 0, h > 0, allowance >= 0, "
                             "0 <= head_start < 1")


def cusum_arl(
    shift: float, k: float, h: float, *, steady: bool = False, start: float = 0.0,
    states: int = 400,
) -> float:
    """Average run length of a one-sided CUSUM with N(shift, 1) increments.

    Brook & Evans (1972): the statistic on [0, h] as a Markov chain of ``states``
    intervals (state 0 = exactly 0); ARL = (I - P)^-1 1 from the start state: ``start``
    (0 by default; a head start f·h for the detector right after a pin). ``steady=True``
    starts from the in-control chain's quasi-stationary distribution instead (a shift
    that begins after the detector has run in control a while, the usual case: Lucas &
    Crosier 1982's "steady-state ARL"). O(states^3).
    """
    if not 0 <= start < h:
        raise ValueError(f"start {start} outside [0, h)")
    w = h / (states - 0.5)  # the zero state has half width
    centres = np.arange(states) * w
    lo_edges = centres - w / 2
    lo_edges[0] = -np.inf
    hi_edges = centres + w / 2

    def chain(mu: float) -> np.ndarray:  # P[i, j] = P(centre_i + y - k falls in state j)
        x = centres[:, None] + mu - k
        return norm.cdf(hi_edges[None, :] - x) - norm.cdf(lo_edges[None, :] - x)

    arl = np.linalg.solve(np.eye(states) - chain(shift), np.ones(states))
    if not steady:
        return float(arl[round(start / w)])
    values, vectors = np.linalg.eig(chain(0.0).T)
    pi = np.abs(np.real(vectors[:, np.argmax(np.real(values))]))
    return float(pi @ arl / pi.sum())


def simulate_run_lengths(
    increments: np.ndarray, k: float, h: float, runs: int, limit: int, seed: int = 0,
    start: float = 0.0,
) -> np.ndarray:
    """Run lengths of a CUSUM started at ``start`` whose increments are drawn (with
    replacement) from ``increments`` (e.g. band replicates' z); runs reaching ``limit``
    are censored at ``limit``. Vectorised over runs."""
    rng = np.random.default_rng(seed)
    inc = np.asarray(increments, dtype=float)
    inc = inc[np.isfinite(inc)]
    s = np.full(runs, float(start))
    length = np.full(runs, limit)
    alive = np.ones(runs, dtype=bool)
    for t in range(1, limit + 1):
        y = inc[rng.integers(0, len(inc), runs)]
        s = np.maximum(0.0, s + y - k)
        hit = alive & (s > h)
        length[hit] = t
        alive &= ~hit
        if not alive.any():
            break
    return length


def _signal_input(score: dict, signal: str) -> tuple[float, float, float] | None:
    """(y in fresh-window sd, collapse direction; mean error; ratio) of one window."""
    entry = (score.get("signals") or {}).get(signal) or {}
    z, u = entry.get("z"), entry.get("mean_error")
    against = entry.get("z_against")
    ratio = entry.get("baseline_ratio") if against == "baseline" else entry.get("ratio")
    if z is None or ratio is None or not math.isfinite(z):
        return None
    u = float(u or 0.0)
    # z is in calibrated-band sd, which includes the centre's error; the CUSUM steps in a
    # fresh window's spread around the centre: sqrt(1 + u^2) times larger
    return COLLAPSE_SIGN[signal] * float(z) * math.sqrt(1.0 + u * u), u, float(ratio)


def _segment(score: dict) -> tuple:
    ref = (score.get("reference") or {}).get("sha256")
    base = (score.get("baseline") or {}).get("sha256") if score.get("baseline") else None
    return ref, base


def ordered_windows(
    scores: Sequence[dict], keys: Sequence[Hashable] | None = None
) -> tuple[list[dict], list]:
    """Windows in key order, the last score of a repeated key kept; without keys, the
    given order with keys 1..n."""
    if keys is None:
        return list(scores), list(range(1, len(scores) + 1))
    if len(keys) != len(scores):
        raise ValueError(f"{len(keys)} keys for {len(scores)} scores")
    latest: dict = {}
    for key, sc in zip(keys, scores):
        latest[key] = sc
    order = sorted(latest)
    return [latest[k] for k in order], order


def trend(
    scores: Sequence[dict],
    keys: Sequence[Hashable] | None = None,
    config: TrendConfig | None = None,
    *,
    from_pin: bool = True,
) -> dict[str, dict]:
    """The CUSUM state of every signal after the last window.

    ``scores`` are Score JSON dicts (see :func:`metrics.score`), ``keys`` sortable window
    identities (window start, evaluation order): the result does not depend on the order
    the scores are given in, nor on a window given twice. Only the windows since the last
    change of reference or baseline count. Windows without ``z`` (insufficient data) are
    skipped. The statistic starts at the head start on the first scored window of the
    segment when that window is the first since the pin (``from_pin``: False when the
    caller read only the most recent part of a longer history), else at 0.
    Per signal: ``statistic`` and ``threshold`` (in fresh-window sd), ``alarm``,
    ``since_window`` (key of the first window of the current run, None at 0),
    ``windows`` (its length), ``shift_estimate`` (relative change of the signal ratio over
    the run, geometric mean: -0.08 = 8% lower; None at 0), ``shift_sd`` (mean deviation over
    the run in fresh-window sd, Montgomery §9.1.3), ``against`` (baseline or human).
    """
    cfg = config or TrendConfig()
    wins, order = ordered_windows(scores, keys)
    if wins:
        last = _segment(wins[-1])
        start = len(wins)
        while start > 0 and _segment(wins[start - 1]) == last:
            start -= 1
        from_pin = from_pin or start > 0  # the segment began inside the given windows
        wins, order = wins[start:], order[start:]
    head = cfg.head_start * cfg.h if from_pin else 0.0
    out: dict[str, dict] = {}
    for signal in SIGNALS:
        s, run_start, run_y, run_logs = None, None, [], []
        against = None
        for key, sc in zip(order, wins):
            got = _signal_input(sc, signal)
            if got is None:
                continue
            y, u, ratio = got
            against = sc["signals"][signal].get("z_against")
            s_new = (head if s is None else s) + y - (cfg.k + cfg.allowance * u)
            if s_new <= 0:
                s, run_start, run_y, run_logs = 0.0, None, [], []
                continue
            if not run_y:  # a run starts here (or the head start's, at the first window)
                run_start = key
            s = s_new
            run_y.append(y)
            run_logs.append(math.log(max(ratio, 1e-9)))
        n = len(run_y)
        s = s or 0.0
        out[signal] = {
            "statistic": round(s, 4),
            "threshold": cfg.h,
            "alarm": s > cfg.h,
            "since_window": run_start,
            "windows": n,
            "shift_estimate": round(math.exp(sum(run_logs) / n) - 1.0, 4) if n else None,
            "shift_sd": round(sum(run_y) / n, 3) if n else None,
            "against": against,
        }
    return out


_RANK = {"healthy": 0, "early_collapse": 1, "collapse": 2}


def trend_health(health: str, state: dict[str, dict]) -> str:
    """A window's health with the trend: a sustained alarm makes it at least
    ``early_collapse``; ``collapse`` still needs the single-window rules."""
    if health not in _RANK:
        return health
    if any(v.get("alarm") for v in state.values()) and _RANK[health] < 1:
        return "early_collapse"
    return health


_PHRASE = {"diversity": "diversity", "tail_coverage": "tail coverage", "sameness": "sameness"}


def describe(state: dict[str, dict]) -> list[str]:
    """One line per alarmed signal: "tail coverage ~8% below baseline for 6 windows
    (since window 12)"."""
    lines = []
    for signal, v in state.items():
        if not v.get("alarm") or v.get("shift_estimate") is None:
            continue
        pct = abs(v["shift_estimate"]) * 100
        way = "above" if v["shift_estimate"] > 0 else "below"
        lines.append(
            f"{_PHRASE.get(signal, signal)} ~{pct:.0f}% {way} {v.get('against') or 'band'} "
            f"for {v['windows']} windows (since window {v['since_window']})"
        )
    return lines
