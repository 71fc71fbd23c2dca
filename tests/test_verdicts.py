"""The verdict rules on constructed tables: compare, did not act, still changing, and the claims."""

import numpy as np
import pandas as pd
import pytest

from lop_core import verdicts as v


def curves(level, seeds=3, tasks=40, slope=0.0, noise=0.01, name="g", seed_offset=0, zigzag=0.0):
    """Per-task values ``level + slope * task`` plus noise, one run per seed.

    ``zigzag``: instead of random noise, +-zigzag alternating from task to task, a little larger for
    every seed (no trend over any even number of tasks, a nonzero spread over seeds).
    """
    rng = np.random.default_rng(seed_offset + 17)
    rows = []
    for s in range(seeds):
        for t in range(tasks):
            wiggle = zigzag * (1 + 0.5 * s) * (-1) ** t if zigzag else noise * rng.standard_normal()
            value = level + slope * t + wiggle
            rows.append({"run": f"{name}-s{s}", "seed": s, "task": t, "value": value})
    return pd.DataFrame(rows)


def test_compare_applies_two_standard_errors_by_hand():
    # means 0.9 and 0.8; SEs 0.01 each (std 0.01*sqrt(3)... by construction below): SE diff = hypot
    a, b = [0.89, 0.90, 0.91], [0.79, 0.80, 0.81]
    c = v.compare(a, b)
    assert c.diff == pytest.approx(0.1)
    assert c.se == pytest.approx(np.hypot(0.01 / np.sqrt(3), 0.01 / np.sqrt(3)))
    assert c.outcome == "above" and v.compare(b, a).outcome == "below"
    # 0.01 apart with SE ~0.0082: within 2 SE
    assert v.compare([0.89, 0.90, 0.91], [0.88, 0.89, 0.90]).outcome == "level"
    assert v.compare([0.9], [0.1, 0.2]).outcome == "too few runs"
    with pytest.raises(ValueError, match="at least one finite"):
        v.compare([np.nan], [0.1])


def test_paired_change_uses_per_run_differences():
    c = v.paired_change([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])  # every run falls by exactly 0.1
    assert c.diff == pytest.approx(-0.1) and c.se == pytest.approx(0.0, abs=1e-12)
    assert c.outcome == "below"


def test_late_scores_average_the_last_tenth():
    frame = pd.DataFrame({"run": ["r"] * 20, "task": range(20), "value": [0.0] * 18 + [1.0, 3.0]})
    assert v.late_scores(frame)["r"] == pytest.approx(2.0)
    single = pd.DataFrame({"run": ["r"], "task": [0], "value": [0.7]})
    assert v.late_scores(single)["r"] == pytest.approx(0.7)


def test_peak_scores_take_the_best_window_of_the_mean_curve():
    values = [0.1] * 10 + [0.9] * 10 + [0.1] * 30  # 50 tasks: window 5, best window inside 10..19
    frame = pd.DataFrame({"run": ["r"] * 50, "task": range(50), "value": values})
    assert v.peak_scores(frame)["r"] == pytest.approx(0.9)
    # two runs: each run's window is chosen on the other run's curve
    other = [0.1] * 30 + [0.5] * 5 + [0.1] * 15
    both = pd.concat([frame, pd.DataFrame({"run": ["q"] * 50, "task": range(50), "value": other})])
    assert v.peak_scores(both)["r"] == pytest.approx(0.1) and v.peak_scores(both)["q"] == pytest.approx(0.1)


def test_still_changing_sees_a_clear_slope_and_not_noise():
    rising = curves(0.5, slope=0.002, noise=0.002)
    moving = v.still_changing(rising)
    assert moving is not None and moving.diff == pytest.approx(0.002 * 9, rel=0.2)  # last 10 of 40 tasks
    assert v.still_changing(curves(0.5, noise=0.002)) is None
    assert v.still_changing(curves(0.5, seeds=1, slope=0.01)) is None  # one run: no error estimate
    assert v.late_change(curves(0.5, tasks=3)).change.isna().all()


def test_did_not_act_names_idle_runs_and_runs_equal_to_the_baseline():
    assert v.did_not_act(pd.Series([3, 0, 5])) == "reset nothing in 1 of 3 runs"
    assert v.did_not_act(pd.Series([3, 1, 5])) == ""
    base = curves(0.8, name="base")
    same = base.assign(run=base.run.str.replace("base", "swr"))
    assert "identical" in v.did_not_act(curves=same, baseline=base)
    moved = same.assign(value=same.value + np.where(same.task == 39, 1e-6, 0.0))
    assert v.did_not_act(curves=moved, baseline=base) == ""
    shifted = same.assign(seed=same.seed + 1)  # equal values, but of another seed: not a twin
    assert v.did_not_act(curves=shifted.iloc[: 40 * 2], baseline=base.iloc[:40]) == ""


def test_judge_above_each_outcome():
    hi, lo, mid = curves(0.9, name="hi"), curves(0.8, name="lo", seed_offset=1), curves(0.85, name="m")
    assert v.judge_above({"SWR": hi}, {"CBP": lo, "ReDo": mid}).outcome == v.SUPPORTS
    reason = v.judge_above({"SWR": hi}, {"CBP": lo, "ReDo": mid}, measure="accuracy").reason
    assert reason.startswith("SWR against ReDo, accuracy") and "beyond 2 SE" in reason
    assert v.judge_above({"SWR": lo}, {"CBP": hi}).outcome == v.CONTRADICTS
    level = v.judge_above({"SWR": curves(0.9, zigzag=0.01)}, {"CBP": curves(0.9, name="x", zigzag=0.02)})
    assert level.outcome == v.CANNOT_TELL and "level within 2 SE" in level.reason
    falling = curves(0.9 + 0.001 * 37.5, slope=-0.001, noise=0.001, name="f")  # last tenth at 0.9
    late_equal = curves(0.9, noise=0.002, name="e", seed_offset=3)
    short = v.judge_above({"SWR": late_equal}, {"CBP": falling})
    assert short.outcome == v.CANNOT_TELL and "too short to tell" in short.reason
    idle = v.judge_above({"SWR": hi}, {"CBP": lo}, idle={"CBP": "reset nothing in 3 of 3 runs"})
    assert idle.outcome == v.CANNOT_TELL and "CBP reset nothing" in idle.reason
    one = v.judge_above({"SWR": curves(0.9, seeds=1)}, {"CBP": lo})
    assert one.outcome == v.CANNOT_TELL and "too few runs" in one.reason


def test_a_closing_gap_is_too_short_to_tell():
    ahead = curves(0.92 + 0.002 * 37.5, slope=-0.002, zigzag=0.001, name="a")  # falling, ends at 0.92
    behind = curves(0.90, zigzag=0.001, name="b")  # settled at 0.90
    short = v.judge_above({"SWR": ahead}, {"CBP": behind})
    assert short.outcome == v.CANNOT_TELL and "gap is still closing" in short.reason
    widening = curves(0.92 - 0.002 * 37.5, slope=0.002, zigzag=0.001, name="w")  # rising, ends at 0.92
    assert v.judge_above({"SWR": widening}, {"CBP": behind}).outcome == v.SUPPORTS
    assert v.closing(widening, behind, +0.02) is None
    assert v.closing(ahead, behind, +0.02).diff == pytest.approx(-0.002 * 9, rel=0.05)


def test_judge_level_each_outcome():
    a, b = curves(0.9, name="a", zigzag=0.002), curves(0.9, name="b", zigzag=0.003)
    assert v.judge_level({"SWR": a, "CBP": b}).outcome == v.SUPPORTS
    assert v.judge_level({"SWR": a, "CBP": curves(0.7, name="c")}).outcome == v.CONTRADICTS
    moving = curves(0.9 - 0.001 * 37.5, slope=0.001, name="m", zigzag=0.0005)  # last tenth at 0.9
    assert "too short" in v.judge_level({"SWR": a, "CBP": moving}).reason


def test_judge_declines():
    hump = curves(0.0, tasks=50, noise=0.005)
    hump["value"] = 0.9 - 0.004 * hump.task + hump.value  # falls 0.2 over 50 tasks
    assert v.judge_declines("SGD", hump).outcome == v.SUPPORTS
    for offset in range(20):  # a flat, noisy curve never reads as a fall (20 draws)
        flat = v.judge_declines("SGD", curves(0.9, tasks=50, noise=0.005, seed_offset=offset))
        assert flat.outcome == v.CANNOT_TELL and "no fall beyond 2 SE" in flat.reason
    rising = v.judge_declines("tanh", curves(0.5, tasks=50, slope=0.004, noise=0.002))
    assert rising.outcome == v.CANNOT_TELL and "still rising" in rising.reason


def test_combine():
    s, c, n = (v.Verdict(o, "") for o in (v.SUPPORTS, v.CONTRADICTS, v.CANNOT_TELL))
    assert v.combine([s, s]) == v.SUPPORTS
    assert v.combine([s, n]) == v.CANNOT_TELL
    assert v.combine([s, c, n]) == v.CONTRADICTS
    assert v.combine([]) == v.CANNOT_TELL
