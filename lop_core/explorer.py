"""Browse every finished permuted-MNIST run: pick a setting, methods and a metric, see the curves.

``catalog`` lists the finished runs of a store with a *setting* (what the network and the protocol
were) and a *variant* (the method and any hyperparameter that sets it apart) per run. ``plot``
draws one metric of one setting, one line per variant, with the chapters' figure helpers.
``explorer`` wraps both in ipywidgets for a live Jupyter session; the rendered book shows the
static figure of ``plot`` instead.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pandas as pd

from lop_core import figures, runs
from lop_core.config import default_config
from lop_core.plotting import LABELS


def setting_label(cfg: dict) -> str:
    """What the runs of one setting share, e.g. ``h=100, relu, sgdw α=0.05 · quick, 50 tasks``."""
    ln = ", layer norm" if cfg["layer_norm"] else ""
    ln += ", skip connections" if cfg.get("skip_connections") else ""
    batch = f", batch {cfg['batch_size']}" if cfg.get("batch_size", 30) != 30 else ""
    opt = cfg["optimizer"] + (f" (momentum {cfg['momentum']})" if cfg["momentum"] else "")
    return (
        f"h={cfg['width']}{ln}, {cfg['activation']}, {opt} α={cfg['step_size']:g}{batch}"
        f" · {cfg['preset']}, {cfg['num_tasks']} tasks"
    )


def variant_label(cfg: dict) -> str:
    """The method and whatever sets this run apart from the method's defaults."""
    defaults = default_config(cfg["benchmark"], cfg["preset"], cfg["method"]).method_args
    args = [
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in sorted(cfg["method_args"].items())
        if v != defaults.get(k)
    ]
    if cfg["l2_factor"]:
        args.insert(0, f"λ={cfg['l2_factor']:g}")
    name = LABELS.get(cfg["method"], cfg["method"])
    return f"{name} ({', '.join(args)})" if args else name


def catalog(runs_dir=None, benchmark: str = "permuted_mnist") -> pd.DataFrame:
    """One row per finished run of ``benchmark``: ``path``, ``setting``, ``variant``, ``method``, ``seed``.

    Unfinished folders (no ``DONE``) and diverged runs (non-finite loss: their rows stop where
    they diverged, so a mean over seeds would mix tasks) are skipped, as in the chapters; a
    finished folder whose config cannot be read raises ``runs.RunError`` naming it.
    """
    root = runs.default_runs_dir(runs_dir) / benchmark
    rows = []
    for done in sorted(root.glob("*/DONE")):
        if runs.run_state(done.parent) == "diverged":
            continue
        try:
            cfg = json.loads((done.parent / "config.json").read_text())
        except (OSError, ValueError) as err:
            raise runs.RunError(f"{done.parent} is corrupt ({err}); delete it and run it again") from None
        rows.append(
            {
                "path": str(done.parent),
                "setting": setting_label(cfg),
                "variant": variant_label(cfg),
                "method": cfg["method"],
                "seed": cfg["seed"],
            }
        )
    return pd.DataFrame(rows, columns=["path", "setting", "variant", "method", "seed"])


@lru_cache(maxsize=512)
def _metrics(path: str) -> pd.DataFrame:
    return runs.read_run(Path(path))[2]


def load(cat: pd.DataFrame) -> pd.DataFrame:
    """Tidy metrics of the runs in ``cat`` (rows of ``catalog``), labelled with their variant."""
    frames = [
        _metrics(row.path).assign(run=Path(row.path).name, method=row.variant, seed=row.seed)
        for row in cat.itertuples()
    ]
    return pd.concat(frames, ignore_index=True)


def plot(cat: pd.DataFrame, setting: str, variants, metric: str, ax, layer: str = "all"):
    """Draw ``metric`` of the chosen ``variants`` of ``setting`` on ``ax`` (mean ± SE over seeds)."""
    chosen = cat[(cat.setting == setting) & cat.variant.isin(list(variants))]
    if chosen.empty:
        raise ValueError(f"no finished runs of {list(variants)} in setting {setting!r}")
    metrics = load(chosen)
    layers = metrics.loc[metrics.metric == metric, "layer"].astype(str).unique()
    if len(layers) and layer not in layers:
        layer = sorted(layers)[-1]  # e.g. the ranks exist for the last hidden layer only
    figures.curves(metrics, metric, ax, layer=layer)
    ax.set_title(setting, fontsize="medium")
    return ax


def top_variants(cat: pd.DataFrame, setting: str, k: int = 5) -> list[str]:
    """The ``k`` variants of ``setting`` with the highest online accuracy over the last tenth of
    the tasks (mean over their seeds), best first, and plain SGD after them when it is not among
    them: a readable static figure where a setting holds dozens of variants."""
    chosen = cat[cat.setting == setting]
    if chosen.empty:
        raise ValueError(f"no finished runs in setting {setting!r}")
    metrics = load(chosen)
    late = figures.late_values(metrics, "online_accuracy")
    variant = metrics.groupby("run").method.first()
    by_variant = late.groupby(variant.reindex(late.index)).mean().sort_values(ascending=False)
    top = list(by_variant.index[:k])
    base = LABELS["base"]
    return top + [base] if base in by_variant.index and base not in top else top


def metrics_of(cat: pd.DataFrame) -> list[str]:
    """The metrics recorded by the first run of ``cat`` (every run records the same ones)."""
    if cat.empty:
        return []
    return sorted(_metrics(cat.path.iloc[0]).metric.unique())


def explorer(runs_dir=None):
    """An ipywidgets explorer of the store: setting, methods (several) and metric, live figure."""
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    cat = catalog(runs_dir)
    if cat.empty:
        return w.HTML(
            f"No finished runs under {runs.default_runs_dir(runs_dir)}; make some with `make runs`."
        )
    settings = sorted(cat.setting.unique())
    setting = w.Dropdown(options=settings, description="setting", layout=w.Layout(width="95%"))
    variants = w.SelectMultiple(description="methods", rows=8, layout=w.Layout(width="95%"))
    metric = w.Dropdown(options=metrics_of(cat), value="online_accuracy", description="metric")
    out = w.Output()

    def on_setting(_=None):
        options = sorted(cat.loc[cat.setting == setting.value, "variant"].unique())
        variants.options, variants.value = options, tuple(options)

    def redraw(_=None):
        with out:
            out.clear_output(wait=True)
            if not variants.value:
                print("pick at least one method")
                return
            fig, ax = plt.subplots()
            plot(cat, setting.value, variants.value, metric.value, ax)
            display(fig)
            plt.close(fig)

    setting.observe(on_setting, names="value")
    for widget in (setting, variants, metric):
        widget.observe(redraw, names="value")
    on_setting()
    redraw()
    box = w.VBox([setting, variants, metric, out])
    display(box)
    return box
