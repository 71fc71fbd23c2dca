"""Chapter tables on constructed runs: late windows, per-method scores, binning, rank correlation."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from lop_core import figures  # noqa: E402


def _runs(curves: dict[tuple[str, int], list[float]], metric="online_accuracy", layer="all"):
    rows = []
    for (method, seed), values in curves.items():
        for task, v in enumerate(values):
            rows.append(
                {
                    "run": f"{method}-{seed}",
                    "method": method,
                    "seed": seed,
                    "task": task,
                    "metric": metric,
                    "layer": layer,
                    "value": v,
                }
            )
    return pd.DataFrame(rows)


def test_late_window_is_the_last_tenth_and_at_least_one_task():
    assert figures.late_window(1000) == 100
    assert figures.late_window(50) == 5
    assert figures.late_window(3) == 1


def test_method_table_by_hand():
    # 20 tasks: the last tenth is the last 2 tasks
    base0 = [0.9] * 18 + [0.8, 0.6]  # late 0.7
    base1 = [0.9] * 18 + [0.8, 0.8]  # late 0.8
    swr0 = [0.9] * 20  # late 0.9
    swr1 = [0.9] * 18 + [1.0, 1.0]  # late 1.0
    table = figures.method_table(
        _runs({("swr", 0): swr0, ("swr", 1): swr1, ("base", 0): base0, ("base", 1): base1})
    )
    assert list(table.index) == ["base", "swr"]  # the book's order, not the input order
    assert table.loc["base", "late"] == pytest.approx(0.75)
    assert table.loc["swr", "late"] == pytest.approx(0.95)
    assert table.loc["swr", "late_se"] == pytest.approx(0.05)  # std (ddof 1) 0.0707 / sqrt(2)
    assert table.loc["swr", "late_vs_base"] == pytest.approx(0.20)
    assert table.loc["base", "mean"] == pytest.approx((0.9 * 18 * 2 + 0.8 + 0.6 + 0.8 + 0.8) / 40)
    assert figures.ranking(table).startswith("SWR (0.950) > SGD (base) (0.750)")
    text = figures.format_table(table)
    assert text.loc["SWR", "last tenth of tasks"] == "0.9500 ± 0.0500"
    assert text.loc["SWR", "vs SGD (last tenth)"] == "+0.200"


def test_metric_frame_bins_long_runs_and_keeps_short_ones():
    long = _runs({("base", 0): [float(t) for t in range(1000)]})
    binned = figures.metric_frame(long, "online_accuracy", points=100)
    assert len(binned) == 100
    first = binned.sort_values("task").iloc[0]
    assert first.task == pytest.approx(4.5) and first.value == pytest.approx(4.5)  # mean of tasks 0..9
    short = _runs({("base", 0): [1.0, 2.0, 3.0]})
    assert len(figures.metric_frame(short, "online_accuracy")) == 3
    with pytest.raises(KeyError, match="dead_fraction"):
        figures.metric_frame(short, "dead_fraction")


def test_spearman_uses_ranks_and_the_common_runs():
    a = pd.Series({"r1": 1.0, "r2": 2.0, "r3": 3.0, "r4": 4.0})
    b = pd.Series({"r1": 10.0, "r2": 100.0, "r3": 1000.0, "r4": 1e6, "r5": -1.0})  # monotone in a
    assert figures.spearman(a, b) == pytest.approx(1.0)
    assert figures.spearman(a, -b) == pytest.approx(-1.0)
    late = figures.late_values(
        _runs({("base", 0): [0.0] * 9 + [5.0], ("cbp", 0): [1.0] * 10}), "online_accuracy"
    )
    assert late.to_dict() == {"base-0": 5.0, "cbp-0": 1.0}


def test_curves_draw_one_line_per_method_in_the_fixed_colours():
    data = _runs({("swr", 0): [0.9, 0.8], ("base", 0): [0.9, 0.7], ("base", 1): [0.9, 0.6]})
    fig, ax = plt.subplots()
    figures.curves(data, "online_accuracy", ax, legend=False)
    handles, labels = ax.get_legend_handles_labels()
    assert labels == ["SGD (base)", "SWR"] and ax.get_legend() is None
    assert ax.get_ylabel() == "online accuracy"
    assert all(float(t).is_integer() for t in ax.get_xticks())  # two tasks: no tick at 0.5
    plt.close(fig)


def test_caption_counts_only_runs_shown_and_names_diverged_ones():
    from lop_core import chapters

    summaries = pd.DataFrame(
        {
            "seed": [0, 1, 2],
            "status": ["done", "done", "diverged"],
            "num_tasks": [50] * 3,
            "examples_per_task": [60000] * 3,
        }
    )
    assert chapters.seeds_shown(summaries) == 2
    note = chapters.caption_note("permuted_mnist", "quick", summaries)
    assert note == (
        "quick preset, shortened for a CPU: num tasks 50 instead of 1,000; "
        "1 of 3 runs diverged (non-finite loss) and is excluded"
    )
    assert chapters.caption_note("permuted_mnist", "paper", summaries.iloc[:2].assign(num_tasks=1000)) == (
        "paper preset: the paper's full protocol"
    )


def test_contrast_is_level_within_twice_the_standard_error():
    table = pd.DataFrame(
        {"late": [0.90, 0.95, 0.93, 0.80], "late_se": [0.01, 0.01, 0.01, 0.01]},
        index=["swr", "cbp", "redo", "base"],
    )
    c = figures.contrast(table, ["swr"], ["cbp", "redo"])
    assert c["best_second"] == "cbp" and c["diff"] == pytest.approx(-0.05)
    assert c["se"] == pytest.approx(0.01 * 2**0.5) and c["verdict"] == "below"
    assert figures.contrast(table, ["redo"], ["cbp"])["verdict"] == "level"  # 0.02 < 2 x 0.0141
    assert figures.contrast(table, ["cbp"], ["base"])["verdict"] == "above"
    with pytest.raises(KeyError, match="l2"):
        figures.contrast(table, ["l2"], ["base"])


def test_preset_note_shows_text_values_too():
    from lop_core import chapters

    note = chapters.preset_note("warm_start", "quick")
    assert note.startswith("quick preset, shortened for a CPU: ")
    assert "model mlp instead of resnet18" in note


def test_peak_drop_measures_from_the_best_task_of_the_seed_mean():
    slow = [0.2, 0.8, 0.9] + [0.9] * 16 + [0.85]  # learns late, then loses a little
    data = _runs({("base", 0): slow, ("base", 1): [v + 0.02 for v in slow], ("swr", 0): [0.5] * 20})
    table = figures.peak_drop(data)
    assert table.loc["base", "peak"] == pytest.approx(0.91)  # the mean of the seeds at their best task
    assert table.loc["base", "peak_task"] == 2  # the first task of the plateau
    assert table.loc["base", "late"] == pytest.approx((0.9 + 0.85 + 0.92 + 0.87) / 4)
    assert table.loc["base", "drop"] == pytest.approx(0.91 - 0.885)
    assert table.loc["swr", "drop"] == pytest.approx(0.0)


def test_run_args_gives_the_numeric_method_args_of_every_run(tmp_path):
    from lop_core import chapters, runs, sweep

    spec = tmp_path / "grid.yaml"
    spec.write_text(
        "benchmark: permuted_mnist\n"
        "seeds: {smoke: 0-1, quick: 0, paper: 0-2}\n"
        "entries:\n"
        "  - {method: base, width: 10}\n"
        "  - {method: swr, width: 10, reinit_freq: [16, 64], reinit_factor: 1.0e-3}\n"
    )
    args = chapters.run_args(str(spec), "smoke", tmp_path)
    assert len(args) == 6  # base and two frequencies, two seeds each
    swr = args.dropna(subset=["reinit_freq"])
    assert sorted(swr.reinit_freq) == [16, 16, 64, 64]
    assert set(swr.reinit_factor) == {1e-3} and set(swr.decay_rate) == {0.0}  # the method's default too
    assert "utility" not in args.columns  # text args are in load_finding's tables already
    assert args.reinit_freq.isna().sum() == 2  # base has no reinit_freq
    names = {runs.run_path(c, tmp_path).name for p in sweep.expand(str(spec), "smoke") for c in p}
    assert set(args.run) == names
    assert len(chapters.run_args(str(spec), "auto", tmp_path)) == 3  # no paper runs: quick, one seed


def test_sensitivity_averages_tasks_per_run_then_seeds_per_cell():
    curves = {
        ("a", 0): [0.8, 0.6],  # run mean 0.7
        ("a", 1): [0.9, 0.9],  # run mean 0.9
        ("b", 0): [0.5, 0.5],
        ("c", 0): [1.0, 0.0],
    }
    metrics = _runs(curves)
    args = pd.DataFrame(
        {
            "run": ["a-0", "a-1", "b-0", "c-0"],
            "reinit_freq": [512, 512, 512, 2048],
            "reinit_factor": [1e-4, 1e-4, 1e-2, 1e-4],
        }
    )
    fig, ax = plt.subplots()
    table = figures.sensitivity(metrics, args, ax)
    assert list(table.reinit_freq) == [512, 512, 2048] and list(table.reinit_factor) == [1e-4, 1e-2, 1e-4]
    assert table["mean"].tolist() == pytest.approx([0.8, 0.5, 0.5])
    assert table.se.iloc[0] == pytest.approx(0.1)  # std (ddof 1) 0.1414 / sqrt(2)
    assert table.se.iloc[1:].isna().all() and table.runs.tolist() == [2, 1, 1]
    assert ax.get_xscale() == "log"
    assert ax.get_legend_handles_labels()[1] == ["reinit freq 512", "reinit freq 2048"]
    plt.close(fig)


def test_colours_are_fixed_book_wide_and_distinct_within_a_figure():
    from lop_core import plotting

    one = plotting.colours(["SGD (base)", "CBP", "tanh", "something new", "another"])
    two = plotting.colours(["tanh", "base", "something new"])
    assert one["SGD (base)"] == two["base"] == plotting.PALETTE["base"] == plotting.colours(["SGD"])["SGD"]
    assert one["CBP"] == plotting.PALETTE["cbp"] and one["tanh"] == two["tanh"]
    assert len(set(one.values())) == len(one)  # new labels take colours no other label of the figure has


def test_every_method_has_a_colour_and_a_label():
    from lop_core import plotting
    from lop_core.methods import METHODS

    assert set(METHODS) == set(plotting.METHOD_ORDER) == set(plotting.PALETTE) == set(plotting.LABELS)
    assert len(set(plotting.PALETTE.values())) == len(plotting.PALETTE)
