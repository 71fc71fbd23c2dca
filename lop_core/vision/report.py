"""What the A12 chapter reads: a sweep's ViT runs as per-epoch and per-task tables, and caption text.

The run store's first column counts the trainer's units, here epochs. ``by_task`` keeps the rows
of every task's last epoch (where the task-end metrics are) and numbers them by task, so the
per-task figures of ``lop_core.figures`` draw them unchanged.
"""

from __future__ import annotations

import pandas as pd

from lop_core import chapters, runs, verdicts
from lop_core.figures import methods_in
from lop_core.plotting import LABELS
from lop_core.sweep import expand
from lop_core.vision.config import IncrementalCIFARConfig
from lop_core.vision.data import dataset_label


def load(sweep: str = "a12", preset: str = "auto", runs_dir=None):
    """A sweep's finished runs.

    Returns:
        ``(epochs, tasks, summaries, preset, cfg)``: per-epoch rows (``task`` column = epoch), the
        task-end rows numbered by task, one row per run, the preset used and the first run's config
        (the protocol every run of the sweep shares). Every table has a ``system`` column
        (see ``system``): the method, or the method and what sets the run apart.

    Raises:
        RunError: a run is missing; the message names the command that makes it.
    """
    epochs, summaries, used = chapters.load_finding(sweep, preset, runs_dir)
    cfgs = [c for population in expand(sweep, used) for c in population]
    systems = {runs.run_path(c, runs_dir).name: system(c) for c in cfgs}
    epochs, summaries = (f.assign(system=f.run.map(systems)) for f in (epochs, summaries))
    return epochs, by_task(epochs, cfgs[0].epochs_per_task), summaries, used, cfgs[0]


def system(cfg) -> str:
    """A run's system: its method, plus ``rescaled wd`` for the reference's other weight decay."""
    return f"{cfg.method}, rescaled wd" if cfg.rescaled_wd else cfg.method


def by_task(epochs: pd.DataFrame, epochs_per_task: int) -> pd.DataFrame:
    """The rows of every task's last epoch, their ``task`` column the task index (0-based)."""
    last = epochs[(epochs.task + 1) % epochs_per_task == 0]
    return last.assign(task=last.task // epochs_per_task)


def gap_to(tasks: pd.DataFrame, metric: str, baseline: str) -> pd.DataFrame:
    """``metric`` of every method minus that of ``baseline`` for the same seed and task (baseline left out)."""
    rows = tasks[tasks.metric == metric]
    base = rows[rows.method == baseline][["seed", "task", "value"]].rename(columns={"value": "base"})
    out = rows[rows.method != baseline].merge(base, on=["seed", "task"])
    return out.assign(value=out.value - out.base).drop(columns="base")


def method_table(tasks: pd.DataFrame, metric: str = "best_test_accuracy") -> pd.DataFrame:
    """Per method: runs, first task, mean over tasks and last task of ``metric`` (mean and SE over runs)."""
    rows = tasks[tasks.metric == metric].sort_values("task")
    runs = rows.groupby(["method", "run"]).value.agg(first="first", mean="mean", last="last").reset_index()
    out = runs.groupby("method").agg(
        runs=("run", "size"),
        first=("first", "mean"),
        mean=("mean", "mean"),
        mean_se=("mean", "sem"),
        last=("last", "mean"),
        last_se=("last", "sem"),
    )
    return out.reindex(methods_in(runs))


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """``method_table`` as strings for a chapter (mean ± SE, 3 decimals; no SE for a single run)."""

    def cell(m, se):
        return f"{m:.3f}" if pd.isna(se) else f"{m:.3f} ± {se:.3f}"

    out = pd.DataFrame(index=[LABELS.get(m, m) for m in table.index])
    out.columns.name = "method"  # in the header row (an index name would add a row of its own)
    out["runs"] = table.runs.to_numpy()
    out["first task"] = [f"{v:.3f}" for v in table["first"]]
    out["mean over tasks"] = [cell(m, s) for m, s in zip(table["mean"], table.mean_se, strict=True)]
    out["last task"] = [cell(m, s) for m, s in zip(table["last"], table.last_se, strict=True)]
    return out


def end_values(frame: pd.DataFrame, metric: str, value: str, layer: str = "all", column: str = "method"):
    """Per run whose ``column`` is ``value``: ``metric`` at the last task (or epoch) of ``frame``."""
    rows = frame[(frame.metric == metric) & (frame[column] == value) & (frame.layer == layer)]
    return rows[rows.task == rows.task.max()].set_index("run").value


def compare(a, b) -> str:
    """Per-run values ``a`` against ``b`` in words, by the book's rule (``lop_core.verdicts.compare``):
    "above", "below", or "level with" (within twice the standard error, or too few runs to tell)."""
    outcome = verdicts.compare(a, b).outcome
    return outcome if outcome in ("above", "below") else "level with"


def steps_per_run(cfg) -> int:
    """SGD steps of a run: every task's epochs times its full batches of the seen classes' images."""
    per_class = cfg.train_per_class
    if per_class == 0:
        raise ValueError("train_per_class = 0 (all images): the steps depend on the data set")
    return sum(
        cfg.epochs_per_task * (per_class * cfg.classes_per_task * (t + 1) // cfg.batch_size)
        for t in range(cfg.num_tasks)
    )


def protocol(cfg) -> str:
    """The protocol of a run in words: data, tasks, epochs, ViT."""
    test = f"{cfg.test_per_class} test images per class" if cfg.test_per_class else "the whole test set"
    return (
        f"{dataset_label(cfg)}, {cfg.num_tasks} tasks of {cfg.classes_per_task} new classes, "
        f"{cfg.epochs_per_task} epochs each, {cfg.train_per_class}/{cfg.val_per_class} training/validation "
        f"images and {test}; a ViT of width {cfg.width}, {cfg.depth} blocks of {cfg.heads} heads, "
        f"MLP {cfg.mlp}, patches of {cfg.patch} pixels"
    )


#: The fields ``protocol`` describes: a run with the paper's values of all of them is at paper scale.
PROTOCOL_FIELDS = (
    "dataset", "num_tasks", "classes_per_task", "epochs_per_task", "train_per_class", "val_per_class",
    "test_per_class", "width", "depth", "heads", "mlp", "patch",
)  # fmt: skip


def preset_note(cfg, preset: str) -> str:
    """Caption text: the preset and, when it is not the paper's protocol, what it changed."""
    paper = IncrementalCIFARConfig()
    if all(getattr(cfg, k) == getattr(paper, k) for k in PROTOCOL_FIELDS):
        return f"{preset} preset: {protocol(cfg)}, the paper's protocol"
    return f"{preset} preset, shortened for a CPU: {protocol(cfg)} (the paper: {protocol(paper)})"
