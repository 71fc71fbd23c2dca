"""The run explorer on a hand-made store: catalog, labels, figure and the widget."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from lop_core import config, explorer, runs  # noqa: E402


def _fake_run(store, seed, method="base", done=True, summary="{}", level=0.9, **overrides):
    cfg = config.resolve("permuted_mnist", "smoke", seed=seed, method=method, **overrides)
    path = runs.run_path(cfg, store)
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(cfg.to_dict()))
    (path / "summary.json").write_text(summary)
    rows = [(t, "online_accuracy", "all", level - 0.1 * t + 0.01 * seed) for t in range(3)]
    rows += [(t, "threshold_rank", "3", 50.0 - t) for t in range(3)]
    pd.DataFrame(rows, columns=["task", "metric", "layer", "value"]).to_csv(
        path / "metrics.csv.gz", index=False
    )
    if done:
        (path / "DONE").write_text("")
    return path


@pytest.fixture
def store(tmp_path):
    for seed in (0, 1):
        _fake_run(tmp_path, seed)
        _fake_run(tmp_path, seed, "cbp", maturity_threshold=5)
    _fake_run(tmp_path, 0, "swr", width=10)
    _fake_run(tmp_path, 2, done=False)  # unfinished: never listed
    _fake_run(tmp_path, 3, summary='{"status": "diverged", "diverged_step": 5}')  # never listed
    return tmp_path


def test_catalog_lists_finished_runs_with_setting_and_variant(store):
    cat = explorer.catalog(store)
    assert len(cat) == 5 and 3 not in set(cat.seed)  # neither the unfinished nor the diverged run
    assert sorted(cat.setting.unique()) == [
        "h=10, relu, sgdw α=0.05 · smoke, 3 tasks",
        "h=100, relu, sgdw α=0.05 · smoke, 3 tasks",
    ]
    assert sorted(cat.variant.unique()) == ["CBP (maturity_threshold=5)", "SGD (base)", "SWR"]


def test_variant_names_l2_factor_and_non_default_arguments():
    cfg = config.resolve(
        "permuted_mnist", "quick", method="shrink_perturb", l2_factor=1e-4, noise_variance=1e-9
    )
    assert explorer.variant_label(cfg.to_dict()) == "Shrink & perturb (λ=0.0001, noise_variance=1e-09)"


def test_a_corrupt_config_is_named(store):
    path = next(p for p in (store / "permuted_mnist").iterdir() if (p / "DONE").exists())
    (path / "config.json").write_text("{not json")
    with pytest.raises(runs.RunError, match=path.name):
        explorer.catalog(store)


def test_plot_averages_seeds_per_variant_and_falls_back_to_the_recorded_layer(store):
    cat = explorer.catalog(store)
    setting = "h=100, relu, sgdw α=0.05 · smoke, 3 tasks"
    fig, ax = plt.subplots()
    explorer.plot(cat, setting, ["SGD (base)", "CBP (maturity_threshold=5)"], "online_accuracy", ax)
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 3]
    assert len(lines) == 2
    assert list(lines[0].get_ydata()) == pytest.approx([0.905, 0.805, 0.705])  # mean of seeds 0, 1
    fig2, ax2 = plt.subplots()
    explorer.plot(cat, setting, ["SGD (base)"], "threshold_rank", ax2)  # layer "all" -> "3"
    assert [ln for ln in ax2.get_lines() if len(ln.get_xdata()) == 3][0].get_ydata()[0] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="no finished runs"):
        explorer.plot(cat, setting, ["SWR"], "online_accuracy", ax)
    plt.close("all")


def test_top_variants_rank_by_late_accuracy_and_keep_plain_sgd(tmp_path):
    _fake_run(tmp_path, 0)
    _fake_run(tmp_path, 0, "cbp", level=0.95, maturity_threshold=5)
    _fake_run(tmp_path, 0, "redo", level=0.99)
    cat = explorer.catalog(tmp_path)
    setting = cat.setting.iloc[0]
    assert explorer.top_variants(cat, setting, k=1) == ["ReDo", "SGD (base)"]
    assert explorer.top_variants(cat, setting, k=3) == ["ReDo", "CBP (maturity_threshold=5)", "SGD (base)"]
    with pytest.raises(ValueError, match="no finished runs"):
        explorer.top_variants(cat, "nowhere")


def test_widget_offers_the_settings_and_methods(store):
    box = explorer.explorer(store)
    setting, variants, metric = box.children[:3]
    assert len(setting.options) == 2
    assert set(variants.value) == set(variants.options)
    setting.value = "h=10, relu, sgdw α=0.05 · smoke, 3 tasks"
    assert variants.options == ("SWR",)
    assert metric.options == ("online_accuracy", "threshold_rank")
    plt.close("all")


def test_load_labels_runs_with_their_text_choices(tmp_path):
    _fake_run(tmp_path, 0, "cbp", utility="gradient")
    _fake_run(tmp_path, 0)
    cfgs = [
        config.resolve("permuted_mnist", "smoke", seed=0, method="cbp", utility="gradient"),
        config.resolve("permuted_mnist", "smoke", seed=0),
    ]
    metrics, summaries = runs.load(cfgs, tmp_path)
    assert summaries.utility.tolist()[0] == "gradient" and pd.isna(summaries.utility.tolist()[1])
    assert set(metrics.loc[metrics.method == "cbp", "utility"]) == {"gradient"}
    assert "replacement_rate" not in metrics.columns  # numbers stay in config.json


def test_setting_label_names_what_sets_a_setting_apart():
    cfg = config.resolve(
        "permuted_mnist", "quick", skip_connections=True, batch_size=1, step_size=0.003
    ).to_dict()
    label = explorer.setting_label(cfg)
    assert "skip connections" in label and "batch 1" in label and "α=0.003" in label
    plain = explorer.setting_label(config.resolve("permuted_mnist", "quick").to_dict())
    assert "skip" not in plain and "batch" not in plain
