"""The chapter helpers of the ViT experiment: per-task rows, gaps to a baseline, caption text."""

import pandas as pd

from lop_core import config
from lop_core.vision import report


def _rows():
    rows = []
    for method, shift in (("base", 0.0), ("reset", 0.1)):
        for seed in (0, 1):
            for epoch in range(4):  # 2 tasks of 2 epochs
                rows.append((epoch, "test_accuracy", "all", 0.5 + shift + epoch / 10, method, seed))
                if epoch % 2 == 1:
                    rows.append((epoch, "best_test_accuracy", "all", 0.6 + shift - seed / 10, method, seed))
    frame = pd.DataFrame(rows, columns=["task", "metric", "layer", "value", "method", "seed"])
    return frame.assign(run=frame.method + frame.seed.astype(str))


def test_by_task_keeps_the_last_epoch_of_every_task():
    tasks = report.by_task(_rows(), epochs_per_task=2)
    assert sorted(tasks.task.unique()) == [0, 1]
    best = tasks[(tasks.metric == "best_test_accuracy") & (tasks.run == "base0")]
    assert best.value.tolist() == [0.6, 0.6]
    acc = tasks[(tasks.metric == "test_accuracy") & (tasks.run == "base0")]
    assert acc.value.round(3).tolist() == [0.6, 0.8]  # epochs 1 and 3


def test_gap_to_pairs_seeds_and_tasks():
    gap = report.gap_to(report.by_task(_rows(), 2), "best_test_accuracy", "reset")
    assert set(gap.method) == {"base"} and len(gap) == 4
    assert gap.value.round(6).tolist() == [-0.1] * 4


def test_method_table_and_compare():
    table = report.method_table(report.by_task(_rows(), 2))
    assert list(table.index) == ["base", "reset"] and table.runs.tolist() == [2, 2]
    assert round(table.loc["reset", "mean"], 6) == 0.65
    tasks = report.by_task(_rows(), 2)
    base = report.end_values(tasks, "best_test_accuracy", "base")
    reset = report.end_values(tasks, "best_test_accuracy", "reset")
    assert len(base) == 2 and list(base.index) != list(reset.index)
    assert (
        report.compare([0.5, 0.52], [0.6, 0.61]) == "below"
        and report.compare([0.6, 0.61], [0.5, 0.52]) == "above"
    )
    assert report.compare([0.5, 0.52], [0.51, 0.515]) == "level with"  # within 2 SE
    assert report.compare([0.5], [0.6, 0.61]) == "level with"  # one run: no error estimate


def test_steps_and_notes_name_the_data_and_the_scale():
    paper = config.resolve("incremental_cifar", "paper")
    assert report.steps_per_run(paper) == 525_000  # reference §4.3
    assert report.preset_note(paper, "paper").endswith("the paper's protocol")
    quick = config.resolve("incremental_cifar", "quick")
    note = report.preset_note(quick, "quick")
    assert (
        note.startswith("quick preset, shortened for a CPU: CIFAR-10 (JPEG subset)") and "CIFAR-100" in note
    )
