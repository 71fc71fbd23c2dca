"""Figures and tables the chapters share: curves per method over tasks, and per-method scores.

Every function takes the tidy tables of ``chapters.load_finding`` (one row per run x task x
metric x layer, with ``method``, ``seed``, ``width``, ``layer_norm`` ... columns) and draws with
seaborn on a given axis, so a chapter composes its own figure and glues it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from lop_core.plotting import LABELS, METHOD_ORDER, colours
from lop_core.verdicts import Comparison, late_window  # noqa: F401  (late_window: figures' API too)

#: Readable names of the recorded metrics (axis labels).
METRIC_LABELS = {
    "online_accuracy": "online accuracy",
    "online_loss": "online loss",
    "dead_fraction": "dead units (share)",
    "duplicate_fraction": "duplicate units (share)",
    "threshold_rank": "rank: 99% singular-value count",
    "effective_rank": "effective rank",
    "stable_rank": "stable rank ‖A‖²_F/‖A‖²_2",
    "weight_magnitude": "mean |θ|",
    "grad_magnitude": "mean |∇θ|",
    "ln_gain_magnitude": "mean layer-norm gain |γ|",
}


def methods_in(frame: pd.DataFrame) -> list[str]:
    """The methods of ``frame`` in the book's fixed order (unknown ones last, sorted)."""
    present = set(frame["method"])
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


def metric_frame(metrics: pd.DataFrame, metric: str, layer: str = "all", points: int = 100) -> pd.DataFrame:
    """Rows of one metric, with tasks averaged into at most ``points`` bins per run.

    Binning keeps a 1,000-task paper run readable: a bin's ``task`` is the mean of the tasks in it.
    """
    rows = metrics[(metrics.metric == metric) & (metrics.layer.astype(str) == str(layer))]
    if rows.empty:
        raise KeyError(
            f"no {metric!r} (layer {layer}) in these runs; metrics: {sorted(metrics.metric.unique())}"
        )
    size = max(1, int(np.ceil((rows.task.max() + 1) / points)))
    if size == 1:
        return rows
    rows = rows.assign(bin=rows.task // size)
    keys = [c for c in rows.columns if c not in ("task", "value", "bin")]
    out = rows.groupby([*keys, "bin"], dropna=False, as_index=False)[["task", "value"]].mean()
    return out.drop(columns="bin")


def curves(metrics: pd.DataFrame, metric: str, ax, layer: str = "all", legend: bool = True, **kwargs):
    """One line per method (mean over seeds, ±1 standard error band) of ``metric`` against the task."""
    data = metric_frame(metrics, metric, layer)
    order = methods_in(data)
    sns.lineplot(
        data=data.assign(method=data.method.map(lambda m: LABELS.get(m, m))),
        x="task",
        y="value",
        hue="method",
        hue_order=[LABELS.get(m, m) for m in order],
        palette=colours([LABELS.get(m, m) for m in order]),  # one colour per method book-wide
        errorbar="se",
        ax=ax,
        **kwargs,
    )
    ax.set(xlabel="task (permutation)", ylabel=METRIC_LABELS.get(metric, metric))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # tasks are whole numbers, even in short runs
    if ax.get_legend() is not None:  # the handles stay on the axis for a figure-level legend
        ax.get_legend().set_title(None)
        if not legend:
            ax.get_legend().remove()
    return ax


def _late_mean(values: pd.Series) -> float:
    """Mean of the last tenth of a run's per-task values (``values`` in task order)."""
    return float(values.iloc[-late_window(len(values)) :].mean())


def late_values(metrics: pd.DataFrame, metric: str, layer: str = "all") -> pd.Series:
    """Per run (index ``run``): ``metric`` averaged over the last tenth of the run's tasks."""
    rows = metrics[(metrics.metric == metric) & (metrics.layer.astype(str) == str(layer))]
    return rows.sort_values("task").groupby("run").value.agg(_late_mean).rename(metric)


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman rank correlation of two series over their common, non-missing index."""
    pair = pd.concat([a, b], axis=1, join="inner").dropna()
    return float(pair.iloc[:, 0].rank().corr(pair.iloc[:, 1].rank()))


def run_scores(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per run: first-task, mean and late online accuracy (late: mean over the last tenth of tasks)."""
    acc = metrics[metrics.metric == "online_accuracy"]
    rows = []
    for run, g in acc.groupby("run"):
        g = g.sort_values("task")
        late = _late_mean(g.value)
        first = g.iloc[0]
        rows.append(
            {
                "run": run,
                "method": first.method,
                "seed": first.seed,
                "first": g.value.iloc[0],
                "peak": g.value.max(),
                "mean": g.value.mean(),
                "late": late,
            }
        )
    return pd.DataFrame(rows)


def method_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per method: number of runs, mean and late online accuracy (mean ± standard error over runs),
    and the late accuracy relative to plain SGD's when SGD is among the methods."""
    scores = run_scores(metrics)
    out = scores.groupby("method").agg(
        runs=("run", "size"),
        mean=("mean", "mean"),
        mean_se=("mean", "sem"),
        late=("late", "mean"),
        late_se=("late", "sem"),
        first=("first", "mean"),
    )
    out = out.reindex(methods_in(scores))
    if "base" in out.index:
        out["late_vs_base"] = out.late - out.late.loc["base"]
    return out


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """``method_table`` as strings for a chapter (accuracy as mean ± SE, 4 decimals)."""
    out = pd.DataFrame(index=[LABELS.get(m, m) for m in table.index])
    out.columns.name = "method"  # in the header row (an index name would add a row of its own)
    out["runs"] = table.runs.to_numpy()
    out["first task"] = [f"{v:.3f}" for v in table["first"]]
    out["mean over tasks"] = [f"{m:.4f} ± {s:.4f}" for m, s in zip(table["mean"], table.mean_se, strict=True)]
    out["last tenth of tasks"] = [
        f"{m:.4f} ± {s:.4f}" for m, s in zip(table.late, table.late_se, strict=True)
    ]
    if "late_vs_base" in table:
        out["vs SGD (last tenth)"] = [f"{v:+.3f}" for v in table.late_vs_base]
    return out


def ranking(table: pd.DataFrame, column: str = "late") -> str:
    """Methods from best to worst by ``column``, e.g. "SWR (0.931) > CBP (0.930) > ..."."""
    ordered = table[column].sort_values(ascending=False)
    return " > ".join(f"{LABELS.get(m, m)} ({v:.3f})" for m, v in ordered.items())


def contrast(table: pd.DataFrame, first, second, column: str = "late") -> dict:
    """Compare the best of methods ``first`` with the best of methods ``second`` on ``column``.

    The book's one rule (``lop_core.verdicts``): the difference counts when beyond twice its
    standard error, from the two methods' standard errors over runs.

    Returns:
        ``best_first``, ``best_second`` (method names), ``diff`` (best first minus best second),
        ``se`` (standard error of that difference; 0 for single runs) and ``verdict``: "above",
        "below" or "level" (within twice the standard error, or too few runs to tell).
    """
    a = table.loc[[m for m in first if m in table.index], column]
    b = table.loc[[m for m in second if m in table.index], column]
    if a.empty or b.empty:
        raise KeyError(f"need runs of one of {list(first)} and of {list(second)}; have {list(table.index)}")
    best_a, best_b = a.idxmax(), b.idxmax()
    se = float(np.hypot(table.loc[best_a, f"{column}_se"], table.loc[best_b, f"{column}_se"]))
    runs = (int(table.loc[best_a, "runs"]), int(table.loc[best_b, "runs"])) if "runs" in table else (2, 2)
    c = Comparison(float(a.max() - b.max()), se, runs)
    verdict = c.outcome if c.outcome in ("above", "below") else "level"
    return {
        "best_first": best_a,
        "best_second": best_b,
        "diff": c.diff,
        "se": 0.0 if np.isnan(se) else se,
        "verdict": verdict,
    }


def peak_drop(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per method: the best task of its seed-mean accuracy curve and how far the last tenth is below it.

    A method that learns its first tasks slowly (a small step size, a sigmoid network) starts low,
    so "last tenth minus first task" hides lost plasticity; "peak minus last tenth" does not.

    Returns:
        Columns ``peak`` (highest mean accuracy of any task), ``peak_task``, ``late``, ``late_se``
        (as in ``method_table``) and ``drop`` = ``peak - late``, in the book's method order.
    """
    acc = metrics[metrics.metric == "online_accuracy"]
    curve = acc.groupby(["method", "task"]).value.mean()
    table = method_table(metrics)
    out = pd.DataFrame(
        {
            "peak": curve.groupby("method").max(),
            "peak_task": curve.groupby("method").idxmax().map(lambda key: key[1]),
        }
    ).reindex(table.index)
    out["late"], out["late_se"] = table.late, table.late_se
    out["drop"] = out.peak - out.late
    return out


def sensitivity_table(
    metrics: pd.DataFrame, args: pd.DataFrame, x: str = "reinit_factor", hue: str = "reinit_freq"
) -> pd.DataFrame:
    """Mean online accuracy over all tasks per grid cell of two hyperparameters.

    Every run is scored by its online accuracy averaged over all its tasks (the reference's
    sensitivity curves); the runs of a cell (its seeds) are then averaged.

    Args:
        metrics: tidy metrics of ``chapters.load_finding``.
        args: per-run hyperparameters with a ``run`` column (``chapters.run_args``).
        x, hue: the two columns of ``args`` that span the grid.

    Returns:
        One row per (``hue``, ``x``) cell, sorted: ``mean``, ``se`` (standard error over the runs;
        NaN for one run) and ``runs``.
    """
    scores = run_scores(metrics)[["run", "mean"]].merge(args[["run", x, hue]], on="run", how="inner")
    out = scores.groupby([hue, x])["mean"].agg(mean="mean", se="sem", runs="size")
    return out.reset_index().sort_values([hue, x], ignore_index=True)


def sensitivity(
    metrics: pd.DataFrame, args: pd.DataFrame, ax, x: str = "reinit_factor", hue: str = "reinit_freq"
) -> pd.DataFrame:
    """Sensitivity curves: mean online accuracy (± SE over seeds) against ``x`` on a log axis, one
    line per value of ``hue``. Returns the ``sensitivity_table`` drawn."""
    table = sensitivity_table(metrics, args, x, hue)
    values = sorted(table[hue].unique())
    colours = sns.color_palette("viridis", len(values))
    for value, colour in zip(values, colours, strict=True):
        cell = table[table[hue] == value]
        ax.errorbar(
            cell[x],
            cell["mean"],
            yerr=cell.se.fillna(0.0),
            marker="o",
            capsize=3,
            color=colour,
            label=f"{hue.replace('_', ' ')} {value:g}",
        )
    ax.set(xscale="log", xlabel=x.replace("_", " "), ylabel="online accuracy, mean over tasks")
    return table
