"""What the mechanism and warm-starting chapters draw: runs labelled by setting, curves per setting.

The runs of these benchmarks all use plain training (method ``base``); what differs is the
setting (activation, norm, dropout, noise; or how the second phase starts). ``labelled`` joins a
readable ``setting`` label from each run's summary onto the tidy metrics of
``chapters.load_finding``; ``curves`` draws one line per setting, mean and standard error over seeds.
"""

from __future__ import annotations

import pandas as pd
import seaborn as sns

from lop_core.figures import late_values, metric_frame
from lop_core.plotting import ACTIVATIONS, colours

NORM_NAMES = {"batch": "batch norm", "layer": "layer norm"}

#: Readable names of the recorded metrics (axis labels).
METRIC_LABELS = {
    "online_accuracy": "online accuracy",
    "train_accuracy": "accuracy on the task",
    "frozen_fraction": "frozen units (share)",
    "frozen_persistence": "frozen units still frozen",
    "duplicate_fraction": "duplicate units (share)",
    "effective_rank": "effective rank",
    "threshold_rank": "rank: 99% singular-value count",
    "weight_magnitude": "mean |θ|",
    "test_accuracy": "test accuracy",
}


def setting_name(row) -> str:
    """``ReLU``, ``tanh + batch norm``, ``ReLU + dropout 0.1``... from a run's summary row."""
    parts = [ACTIVATIONS.get(row["activation"], row["activation"])]
    if row["norm"] != "none":
        parts.append(NORM_NAMES[row["norm"]])
    if row["dropout"] > 0:
        parts.append(f"dropout {row['dropout']:g}")
    if row["noise"] > 0:
        parts.append(f"noise {row['noise']:g}")
    return " + ".join(parts)


def labelled(metrics: pd.DataFrame, summaries: pd.DataFrame, name=setting_name) -> pd.DataFrame:
    """``metrics`` with a ``setting`` column (``name(summary row)`` of each run)."""
    names = summaries.set_index("run").apply(name, axis=1).rename("setting")
    return metrics.join(names, on="run")


def curves(frame: pd.DataFrame, metric: str, ax, layer: str = "all", order=None, legend=True, **kwargs):
    """One line per ``setting`` (mean over seeds, ±1 standard error band) of ``metric`` per task."""
    data = metric_frame(frame, metric, layer)
    order = order or sorted(data.setting.unique())
    sns.lineplot(
        data=data,
        x="task",
        y="value",
        hue="setting",
        hue_order=order,
        palette=colours(order),
        errorbar="se",
        ax=ax,
        **kwargs,
    )
    ax.set(xlabel="task", ylabel=METRIC_LABELS.get(metric, metric))
    if ax.get_legend() is not None:
        ax.get_legend().set_title(None)
        if not legend:
            ax.get_legend().remove()
    return ax


def per_task(frame: pd.DataFrame, metric: str, layer: str = "all") -> pd.DataFrame:
    """Mean of ``metric`` per setting (rows) and task (columns) over seeds."""
    rows = frame[(frame.metric == metric) & (frame.layer.astype(str) == str(layer))]
    return rows.groupby(["setting", "task"]).value.mean().unstack("task")


def late_by_setting(frame: pd.DataFrame, metrics: dict[str, str]) -> pd.DataFrame:
    """Per setting (rows), each ``metric`` (``{metric: layer}``) averaged over the last tenth of
    the tasks of each run, then over runs; the column ``runs`` counts them."""
    settings = frame.groupby("run").setting.first()
    cols = {m: late_values(frame, m, layer) for m, layer in metrics.items()}
    table = pd.concat([settings, *cols.values()], axis=1)
    out = table.groupby("setting").mean(numeric_only=True)
    out.insert(0, "runs", table.groupby("setting").size())
    return out


def start_name(row) -> str:
    """``fresh``, ``warm`` or ``shrink & perturb (λ=0.4, σ=0.1)`` from a warm-start run's summary."""
    if row["start"] == "shrink_perturb":
        return f"shrink & perturb (λ={row['shrink']:g}, σ={row['perturb']:g})"
    return row["start"]


MODEL_NAMES = {
    "mlp": "an MLP ({w} x 2 hidden units)",
    "cnn": "a small CNN (width {w})",
    "resnet18": "a ResNet-18",
}


def warm_start_note(preset: str, summaries: pd.DataFrame | None = None) -> str:
    """Caption text for warm-start runs: the preset, the network and the data it used."""
    from lop_core.config import default_config

    cfg = default_config("warm_start", preset)
    if summaries is not None and summaries.examples_per_task.nunique() == 1:
        cfg.examples_per_task = int(summaries.examples_per_task.iloc[0])
    model = MODEL_NAMES[cfg.model].format(w=cfg.width)
    test = f"{cfg.test_per_class:,} test images per class" if cfg.test_per_class else "all test images"
    scale = "the paper's protocol" if preset == "paper" else "shortened for a CPU"
    return (
        f"{preset} preset, {scale}: {model}, {cfg.examples_per_task:,} training images of the CIFAR-10 JPEG "
        f"subset ({test}), phases end at {cfg.fit_accuracy:.0%} training accuracy or after "
        f"{cfg.max_epochs} epochs"
    )
