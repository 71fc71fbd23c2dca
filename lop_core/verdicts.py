"""Verdicts: the one rule by which the book compares runs, and the two ways runs fail to test a claim.

Every sentence of the book that compares, ranks or judges is computed here, from the runs shown.

**The comparison rule.** A group of runs (a method, a setting) is scored per run by the mean of its
per-task values over the last tenth of its tasks (``late_scores``; a run with one value is scored
by it). Two groups are compared by the difference of their mean scores: it is *above* or *below*
when it lies beyond twice its standard error, SE = sqrt(SE_a² + SE_b²) with SE the standard error
of each group's mean over its runs; otherwise the groups are *level*. A group of fewer than two
runs has no error estimate: "too few runs". A paired version (``paired_change``) compares two
windows of the same runs by the per-run differences.

**Did not act.** A resetting method whose run reset nothing, or whose runs are identical to the
baseline runs of the same seeds, is the plain network with extra bookkeeping: such runs cannot
test it (``did_not_act``).

**Still changing.** A group whose per-task values still have a clear slope over the last quarter
of the run (the mean per-run least-squares change over that window, beyond twice its standard
error, by the same rule) has not settled (``still_changing``): a level comparison involving it is
"too short to tell", and so is a gap that is still clearly closing (``closing``), which may
close or reverse later.

A claim is judged part by part (``judge_above``, ``judge_level``, ``judge_declines``), each part
giving a ``Verdict``: *supports*, *contradicts* or *cannot tell*, with its reason in words;
``combine`` gives the claim's: contradicts if a part contradicts, supports if every part supports,
else cannot tell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SUPPORTS, CONTRADICTS, CANNOT_TELL = "supports", "contradicts", "cannot tell"
OUTCOMES = (SUPPORTS, CONTRADICTS, CANNOT_TELL)


@dataclass(frozen=True)
class Comparison:
    """A difference of means and its standard error; ``outcome`` applies the 2-SE rule."""

    diff: float
    se: float
    runs: tuple[int, int]

    @property
    def outcome(self) -> str:
        if min(self.runs) < 2 or not np.isfinite(self.se):
            return "too few runs"
        if self.diff > 2 * self.se:
            return "above"
        if self.diff < -2 * self.se:
            return "below"
        return "level"

    def words(self, digits: int = 3) -> str:
        """E.g. "+0.012 (SE 0.004)"."""
        return f"{self.diff:+.{digits}f} (SE {self.se:.{digits}f})"


def _clean(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


def _sem(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) >= 2 else float("nan")


def compare(a, b) -> Comparison:
    """Group ``a`` against group ``b`` (per-run scores; non-finite ones dropped)."""
    a, b = _clean(a), _clean(b)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("compare needs at least one finite score on each side")
    return Comparison(float(a.mean() - b.mean()), float(np.hypot(_sem(a), _sem(b))), (len(a), len(b)))


def paired_change(before, after) -> Comparison:
    """``after - before`` of the same runs (aligned series or arrays), SE over the per-run differences."""
    d = _clean(np.asarray(after, dtype=float) - np.asarray(before, dtype=float))
    if len(d) == 0:
        raise ValueError("paired_change needs at least one finite pair")
    return Comparison(float(d.mean()), _sem(d), (len(d), len(d)))


def late_window(num_tasks: int) -> int:
    """How many tasks make "the last tenth" (or the first, or the best) of ``num_tasks``: at least one."""
    return max(1, int(num_tasks) // 10)


def late_scores(curves: pd.DataFrame) -> pd.Series:
    """Per run: the mean of ``value`` over the last tenth of its tasks (``curves``: run, task, value)."""
    rows = curves.sort_values("task")
    return rows.groupby("run").value.agg(lambda v: float(v.iloc[-late_window(len(v)) :].mean()))


def _best_window(mean: pd.Series, width: int) -> pd.Index:
    """The ``width`` consecutive tasks where the curve ``mean`` (indexed by task) is highest."""
    mean = mean.sort_index()
    start = int(np.argmax(mean.rolling(width).mean().to_numpy()[width - 1 :]))
    return mean.index[start : start + width]


def peak_scores(curves: pd.DataFrame) -> pd.Series:
    """Per run: the mean over the tenth of the tasks where the *other* runs' mean curve is highest.

    A window, not a single task, so that the peak is not one noisy task; chosen on the other runs
    (with one run, on itself), so that a flat, noisy curve does not read as a fall because its
    best window was picked on the very noise it is then compared with.
    """
    width = late_window(curves.task.nunique())
    out = {}
    for run, mine in curves.groupby("run"):
        others = curves[curves.run != run] if curves.run.nunique() > 1 else mine
        tasks = _best_window(others.groupby("task").value.mean(), width)
        out[run] = float(mine[mine.task.isin(tasks)].value.mean())
    return pd.Series(out, dtype=float)


def _task_noise(curves: pd.DataFrame) -> pd.Series:
    """Per run: the task-to-task noise of ``value`` (sd of first differences / sqrt 2; trend-proof)."""
    return curves.sort_values("task").groupby("run").value.agg(lambda v: float(v.diff().std() / np.sqrt(2)))


def late_change(curves: pd.DataFrame) -> pd.DataFrame:
    """Per run: the least-squares change of ``value`` over the last quarter of its tasks (at least 4).

    Returns:
        Columns ``change`` (slope times the window's span of tasks) and ``se`` (its least-squares
        standard error), indexed by run; NaN for a run of fewer than 4 tasks.
    """

    def fit(g: pd.DataFrame) -> pd.Series:
        g = g.sort_values("task")
        if len(g) < 4:
            return pd.Series({"change": float("nan"), "se": float("nan")})
        tail = g.iloc[-max(4, len(g) // 4) :]
        x, y = tail.task.to_numpy(dtype=float), tail.value.to_numpy(dtype=float)
        (slope, icept), span = np.polyfit(x, y, 1), x[-1] - x[0]
        resid = y - (slope * x + icept)
        se = np.sqrt(resid @ resid / (len(x) - 2) / ((x - x.mean()) @ (x - x.mean())))
        return pd.Series({"change": float(slope * span), "se": float(se * span)})

    return curves.groupby("run")[["task", "value"]].apply(fit)


def _mean_change(curves: pd.DataFrame) -> Comparison | None:
    """The group's mean late change and its standard error: the larger of two estimates, the
    spread of the per-run changes over the runs and the runs' own least-squares errors (with three
    seeds the first alone is often too small by chance, and a settled curve would read as moving)."""
    fits = late_change(curves).dropna()
    if len(fits) < 2:
        return None
    n = len(fits)
    se = max(_sem(fits.change.to_numpy()), float(np.sqrt((fits.se**2).mean() / n)))
    return Comparison(float(fits.change.mean()), se, (n, n))


def still_changing(curves: pd.DataFrame) -> Comparison | None:
    """The group's late change against zero, or None when it has settled (or cannot be measured)."""
    c = _mean_change(curves)
    return c if c is not None and c.outcome in ("above", "below") else None


def closing(a: pd.DataFrame, b: pd.DataFrame, diff: float) -> Comparison | None:
    """The late change of the gap ``a - b`` when it clearly shrinks a gap of sign ``diff``, else None.

    A gap that is still closing at the end of the runs (the difference of the groups' late
    changes, against the gap's sign, beyond twice its standard error) may close or reverse later.
    """
    ca, cb = _mean_change(a), _mean_change(b)
    if ca is None or cb is None:
        return None
    trend = Comparison(ca.diff - cb.diff, float(np.hypot(ca.se, cb.se)), (ca.runs[0], cb.runs[0]))
    shrinks = (trend.outcome == "below" and diff > 0) or (trend.outcome == "above" and diff < 0)
    return trend if shrinks else None


def did_not_act(resets: pd.Series | None = None, curves=None, baseline=None) -> str:
    """Why a method's runs cannot test it, or ``""`` when they can.

    Args:
        resets: per run, how much the method reset over the whole run (units or weights); a run
            with 0 reset nothing.
        curves, baseline: the method's and the plain network's per-task values (run, seed, task,
            value); when every run equals a baseline run of its seed, the method changed nothing.
    """
    if resets is not None and len(resets) and (np.asarray(resets, dtype=float) <= 0).any():
        idle = int((np.asarray(resets, dtype=float) <= 0).sum())
        return f"reset nothing in {idle} of {len(resets)} runs"
    if curves is not None and baseline is not None and len(curves) and len(baseline):

        def series(frame):
            return {
                run: (int(g.seed.iloc[0]), g.sort_values("task").value.to_numpy())
                for run, g in frame.groupby("run")
            }

        base = series(baseline)
        mine = series(curves)
        same = [
            any(s == bs and len(v) == len(bv) and np.array_equal(v, bv) for bs, bv in base.values())
            for s, v in mine.values()
        ]
        if all(same):
            return "its runs are identical to plain training of the same seeds"
    return ""


@dataclass(frozen=True)
class Verdict:
    """What runs say about (part of) a claim: ``outcome`` in ``OUTCOMES`` and the ``reason``."""

    outcome: str
    reason: str


def _idle(idle: dict[str, str]) -> Verdict | None:
    why = [f"{name} {text}" for name, text in idle.items() if text]
    which = "it" if len(why) == 1 else "them"
    return Verdict(CANNOT_TELL, "; ".join(why) + f": these runs cannot test {which}") if why else None


def _best(groups: dict[str, pd.DataFrame]) -> tuple[str, pd.Series]:
    scores = {name: late_scores(c) for name, c in groups.items()}
    name = max(scores, key=lambda k: scores[k].mean())
    return name, scores[name]


def _closing_note(a: str, b: str, groups: dict, c: Comparison) -> str:
    trend = closing(groups[a], groups[b], c.diff)
    if trend is None:
        return ""
    return f"; the gap is still closing ({trend.words()} over the last quarter): too short to tell"


def _late_words(groups: dict[str, pd.DataFrame]) -> str:
    """ "over the last tenth of the tasks", or "at the end" for runs scored by one value each."""
    single = all(c.groupby("run").task.nunique().max() <= 1 for c in groups.values() if len(c))
    return "at the end" if single else "over the last tenth of the tasks"


def _changing(groups: dict[str, pd.DataFrame]) -> list[str]:
    return [name for name, c in groups.items() if still_changing(c) is not None]


def judge_above(first: dict, second: dict, idle: dict | None = None, measure: str = "score") -> Verdict:
    """Claim: the best group of ``first`` ends above the best of ``second`` (``late_scores``).

    Args:
        first, second: group name -> curves (run, seed, task, value).
        idle: group name -> ``did_not_act`` text, for the groups that take part.
        measure: what the values are, for the reason ("online accuracy").
    """
    stop = _idle(idle or {})
    if stop:
        return stop
    (a, sa), (b, sb) = _best(first), _best(second)
    c = compare(sa, sb)
    head = f"{a} against {b}, {measure} {_late_words({**first, **second})}: {c.words()}"
    note = _closing_note(a, b, {**first, **second}, c) if c.outcome in ("above", "below") else ""
    if note:
        return Verdict(CANNOT_TELL, f"{head}{note}")
    if c.outcome == "above":
        return Verdict(SUPPORTS, f"{head}, beyond 2 SE")
    if c.outcome == "below":
        return Verdict(CONTRADICTS, f"{head}, below by more than 2 SE")
    if c.outcome == "too few runs":
        return Verdict(CANNOT_TELL, f"{head}; too few runs for an error estimate")
    moving = _changing({**first, **second})
    if moving:
        return Verdict(CANNOT_TELL, f"{head}, level; {', '.join(moving)} still changing: too short to tell")
    return Verdict(CANNOT_TELL, f"{head}, level within 2 SE")


def judge_level(groups: dict, idle: dict | None = None, measure: str = "score") -> Verdict:
    """Claim: the groups end level (best against worst within 2 SE) and have settled."""
    stop = _idle(idle or {})
    if stop:
        return stop
    scores = {name: late_scores(c) for name, c in groups.items()}
    hi = max(scores, key=lambda k: scores[k].mean())
    lo = min(scores, key=lambda k: scores[k].mean())
    c = compare(scores[hi], scores[lo])
    head = f"best ({hi}) against worst ({lo}), {measure} {_late_words(groups)}: {c.words()}"
    if c.outcome == "too few runs":
        return Verdict(CANNOT_TELL, f"{head}; too few runs for an error estimate")
    note = _closing_note(hi, lo, groups, c) if c.outcome == "above" else ""
    if note:
        return Verdict(CANNOT_TELL, f"{head}{note}")
    if c.outcome == "above":
        return Verdict(CONTRADICTS, f"{head}, apart by more than 2 SE")
    moving = _changing(groups)
    if moving:
        return Verdict(CANNOT_TELL, f"{head}, level; {', '.join(moving)} still changing: too short to tell")
    return Verdict(SUPPORTS, f"{head}, level within 2 SE")


def judge_declines(name: str, curves: pd.DataFrame, measure: str = "score") -> Verdict:
    """Claim: the group's values fall over the run: the last tenth below the best tenth (``peak_scores``).

    Paired per run; the standard error is the larger of the spread of the per-run falls and the
    runs' own task-to-task noise over two windows of a tenth (as in ``still_changing``).
    """
    c = _paired(curves, peak_scores(curves), late_scores(curves))
    head = f"{name}, {measure} of the last tenth of the tasks minus the best tenth: {c.words()}"
    if c.outcome == "below":
        return Verdict(SUPPORTS, f"{head}, a fall beyond 2 SE")
    if c.outcome == "too few runs":
        return Verdict(CANNOT_TELL, f"{head}; too few runs for an error estimate")
    moving = still_changing(curves)
    if moving is not None and moving.diff > 0:
        return Verdict(CANNOT_TELL, f"{head}; still rising at the end: too short to tell")
    return Verdict(CANNOT_TELL, f"{head}; no fall beyond 2 SE in these runs")


def first_scores(curves: pd.DataFrame) -> pd.Series:
    """Per run: the mean of ``value`` over the first tenth of its tasks."""
    rows = curves.sort_values("task")
    return rows.groupby("run").value.agg(lambda v: float(v.iloc[: late_window(len(v))].mean()))


def _paired(curves: pd.DataFrame, before: pd.Series, after: pd.Series) -> Comparison:
    """``after - before`` per run, its SE the larger of the spread over runs and the task noise."""
    c = paired_change(before.reindex(after.index), after)
    width = late_window(curves.task.nunique())
    noise = _task_noise(curves).reindex(after.index)
    within = float(np.sqrt((2 * noise**2 / width).mean() / len(after))) if len(after) else float("nan")
    return Comparison(c.diff, max(c.se, within) if np.isfinite(c.se) else c.se, c.runs)


def judge_trend(name: str, curves: pd.DataFrame, direction: str, measure: str = "score") -> Verdict:
    """Claim: the group's values ``rises`` or ``falls`` from the first tenth of the tasks to the last."""
    c = _paired(curves, first_scores(curves), late_scores(curves))
    head = f"{name}, {measure} of the last tenth of the tasks minus the first tenth: {c.words()}"
    want = "above" if direction == "rises" else "below"
    if c.outcome == want:
        return Verdict(SUPPORTS, f"{head}, beyond 2 SE")
    if c.outcome in ("above", "below"):
        return Verdict(CONTRADICTS, f"{head}, the other way by more than 2 SE")
    if c.outcome == "too few runs":
        return Verdict(CANNOT_TELL, f"{head}; too few runs for an error estimate")
    return Verdict(CANNOT_TELL, f"{head}, level within 2 SE")


def spearman(x, y) -> tuple[float, float, int]:
    """Spearman's rho of two aligned series (common non-missing index), its standard error
    1.03 / sqrt(n - 3) (Fieller, Hartley and Pearson, on Fisher's z scale) and n."""
    pair = pd.concat([pd.Series(x), pd.Series(y)], axis=1, join="inner").dropna()
    n = len(pair)
    if n < 4:
        return float("nan"), float("nan"), n
    rho = float(pair.iloc[:, 0].rank().corr(pair.iloc[:, 1].rank()))
    return rho, 1.03 / np.sqrt(n - 3), n


def judge_correlation(x, y, sign: int, what: str) -> Verdict:
    """Claim: ``x`` and ``y`` (per run) go together with ``sign`` (+1 or -1), across runs.

    Judged on Fisher's z of Spearman's rho: beyond twice its standard error with the claimed sign
    supports, with the other sign contradicts.
    """
    rho, se, n = spearman(x, y)
    if not np.isfinite(rho):
        return Verdict(CANNOT_TELL, f"{what}: {n} runs, too few for a correlation")
    z = float(np.arctanh(np.clip(rho, -0.999999, 0.999999)))
    head = f"{what}: Spearman's rho {rho:+.2f} over {n} runs (z {z:+.2f}, SE {se:.2f})"
    if sign * z > 2 * se:
        return Verdict(SUPPORTS, f"{head}, beyond 2 SE")
    if -sign * z > 2 * se:
        return Verdict(CONTRADICTS, f"{head}, the other sign beyond 2 SE")
    return Verdict(CANNOT_TELL, f"{head}, within 2 SE of none")


def combine(verdicts: list[Verdict]) -> str:
    """A claim's outcome from its parts' (see the module docstring)."""
    outcomes = [v.outcome for v in verdicts]
    if CONTRADICTS in outcomes:
        return CONTRADICTS
    if outcomes and all(o == SUPPORTS for o in outcomes):
        return SUPPORTS
    return CANNOT_TELL
