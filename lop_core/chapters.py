"""What chapters call: load a finding's runs (paper-scale when committed, else quick) and describe them."""

from __future__ import annotations

import pandas as pd

from lop_core import runs
from lop_core.config import PRESET_VALUES, ConfigError
from lop_core.sweep import command, expand


def pick_preset(sweep: str, preset: str = "auto", runs_dir=None) -> str:
    """``auto``: ``paper`` when every paper-scale run of the sweep exists, else ``quick``."""
    if preset != "auto":
        return preset
    paper = [c for p in expand(sweep, "paper") for c in p]
    return "paper" if all(runs.is_done(runs.run_path(c, runs_dir)) for c in paper) else "quick"


def load_finding(sweep: str, preset: str = "auto", runs_dir=None):
    """Tidy metrics and summaries of a sweep's finished runs.

    Returns:
        ``(metrics, summaries, preset)``.

    Raises:
        RunError: a run is missing; the message names the command that makes it.
    """
    preset = pick_preset(sweep, preset, runs_dir)
    cfgs = [c for p in expand(sweep, preset) for c in p]
    metrics, summaries = runs.load(cfgs, runs_dir, command=command(sweep, preset))
    return metrics, summaries, preset


def run_args(sweep: str, preset: str = "auto", runs_dir=None) -> pd.DataFrame:
    """The numeric method hyperparameters of every run of a sweep (``reinit_freq``, ``reinit_factor``...).

    ``load_finding``'s tables carry only the text-valued ones (``utility``, ``pruning``...); merge
    this table on ``run`` to draw a quantity against a number.

    Returns:
        One row per run: ``run`` (its folder name, as in ``load_finding``'s tables) and one column
        per numeric method argument of any run (missing for runs whose method lacks it).
    """
    preset = pick_preset(sweep, preset, runs_dir)
    rows = {}
    for cfg in (c for p in expand(sweep, preset) for c in p):
        name = runs.run_path(cfg, runs_dir).name
        numbers = {
            k: v
            for k, v in cfg.method_args.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        rows[name] = {"run": name, **numbers}  # a run in two populations counts once
    return pd.DataFrame(list(rows.values())) if rows else pd.DataFrame(columns=["run"])


def preset_note(benchmark: str, preset: str, summaries=None) -> str:
    """Caption text saying what a preset shortened relative to the paper's protocol.

    Args:
        benchmark: the benchmark name.
        preset: the preset the runs were made with.
        summaries: optional rows of the runs (``load_finding``); when given, the note states the
            protocol values the runs actually used (a sweep file may shorten a preset further).
    """
    if preset not in PRESET_VALUES.get(benchmark, {}):
        raise ConfigError(f"unknown preset {preset!r} for {benchmark}")
    from lop_core.config import BENCHMARKS

    paper = BENCHMARKS[benchmark]()
    changed = dict(PRESET_VALUES[benchmark][preset])
    if summaries is not None:
        for key in ("num_tasks", "examples_per_task"):
            if key in summaries.columns and summaries[key].nunique() == 1:
                changed[key] = int(summaries[key].iloc[0])
        changed = {k: v for k, v in changed.items() if v != getattr(paper, k)}
    if not changed:
        return f"{preset} preset: the paper's full protocol"

    def show(v):
        return f"{v:,}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)

    parts = [
        f"{k.replace('_', ' ')} {show(v)} instead of {show(getattr(paper, k))}" for k, v in changed.items()
    ]
    return f"{preset} preset, shortened for a CPU: " + ", ".join(parts)


def diverged_note(summaries) -> str:
    """Caption text for the runs that diverged (a non-finite loss) and are left out of the figures.

    Args:
        summaries: the per-run table of ``load_finding`` (its ``status`` column).

    Returns:
        ``""`` when no run diverged, else e.g. "1 of 5 runs diverged (non-finite loss) and is excluded".
    """
    if "status" not in summaries.columns:
        return ""
    count, total = int((summaries.status == "diverged").sum()), len(summaries)
    if count == 0:
        return ""
    runs_word = "run" if total == 1 else "runs"
    return f"{count} of {total} {runs_word} diverged (non-finite loss) and {'is' if count == 1 else 'are'} excluded"


def seeds_shown(summaries) -> int:
    """Seeds behind a figure: those of the runs that did not diverge."""
    if "status" in summaries.columns:
        summaries = summaries[summaries.status != "diverged"]
    return int(summaries.seed.nunique())


#: Methods that act by resetting (or clipping), and the metric that counts what they did: a run
#: with a count of 0 throughout is plain training and cannot test its method.
RESETTING = {
    "cbp": "reset_units",
    "redo": "reset_units",
    "swr": "reset_weights",
    "reset": "reset_weights",
    "weight_clipping": "clipped_weights",
    "optimizer_reset": "reset_optimizer",
}


def inactive_methods(metrics) -> list[str]:
    """Resetting methods (``RESETTING``) with a run that reset nothing at all.

    Such a run is the plain network with extra bookkeeping: it cannot test its method, however it
    ranks. A method whose runs log no reset count at all counts as inactive too.

    Args:
        metrics: the tidy table of ``load_finding`` (``run``, ``method``, ``metric``, ``value``).

    Returns:
        Sorted method names.
    """
    out = set()
    for method, metric in RESETTING.items():
        mine = metrics[metrics.method == method]
        if mine.empty:
            continue
        totals = (
            mine[mine.metric == metric].groupby("run").value.sum().reindex(mine.run.unique(), fill_value=0)
        )
        if (totals <= 0).any():
            out.add(method)
    return sorted(out)


def inactive_note(metrics) -> str:
    """Caption text naming the resetting methods that reset nothing in some run (``inactive_methods``)."""
    from lop_core.plotting import LABELS

    names = [LABELS.get(m, m) for m in inactive_methods(metrics)]
    if not names:
        return ""
    return f"{' and '.join(names)} reset nothing in at least one run: these runs cannot test {'it' if len(names) == 1 else 'them'}"


def method_note(summaries) -> str:
    """Caption text naming the CBP variant and the optimizer-state setting of the resetting methods.

    E.g. "CBP: instantaneous utility (the SWR paper's code); optimizer state at resets: kept
    (the reference's)". Empty when no run of the table resets anything.
    """
    parts = []
    if "method" not in summaries.columns:
        return ""
    cbp = summaries[summaries.method == "cbp"]
    if not cbp.empty and "utility_average" in cbp.columns:
        variants = {
            "instantaneous": "instantaneous utility (the SWR paper's code)",
            "running": "running, age-corrected utility (Dohare's)",
        }
        parts.append(
            "CBP: " + ", ".join(variants.get(v, v) for v in sorted(cbp.utility_average.dropna().unique()))
        )
    resetting = summaries[summaries.method.isin(["cbp", "redo", "swr"])]
    if not resetting.empty and "state_reset" in resetting.columns:
        kinds = {
            "none": "kept (the reference's)",
            "moments": "momentum zeroed",
            "all": "moments and step count zeroed (Dohare's AdamGnT)",
        }
        values = sorted(resetting.state_reset.dropna().unique())
        parts.append("optimizer state at resets: " + ", ".join(kinds.get(v, v) for v in values))
    return "; ".join(parts)


def caption_note(benchmark: str, preset: str, summaries, metrics=None) -> str:
    """The preset note of a caption, plus notes on diverged runs, the CBP variant and optimizer
    state, and (given ``metrics``) resetting methods that never acted."""
    notes = [preset_note(benchmark, preset, summaries), diverged_note(summaries), method_note(summaries)]
    if metrics is not None:
        notes.append(inactive_note(metrics))
    return "; ".join(filter(None, notes))
