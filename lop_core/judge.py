"""Judge the findings (``lop_core.findings``) on the committed runs, and word the verdicts.

``evaluate("A3")`` loads the runs of every sweep the finding's parts name (paper scale when all of a
sweep's paper runs exist, else quick), applies ``lop_core.verdicts`` part by part and returns a
``findings.Result``; ``box`` renders it as the MyST admonition a chapter opens with; ``table`` is
the landing page's table of every finding. A sweep whose runs are missing makes its parts "cannot
tell" ("runs not made"), never an error, so a book with some runs unmade still builds.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from lop_core import chapters, verdicts
from lop_core.errors import RunError
from lop_core.figures import METRIC_LABELS
from lop_core.findings import FINDINGS, KINDS, Finding, Part, Result

MEASURES = {
    **METRIC_LABELS,
    "frozen_fraction": "share of frozen units",
    "best_test_accuracy": "best test accuracy",
    "final_test_accuracy": "test accuracy",
    "test_accuracy": "held-out accuracy",
}


@functools.lru_cache(maxsize=64)
def _load(sweep: str, preset: str, runs_dir) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """A sweep's tidy table (per-task rows, with every summary column) and summaries, and the preset."""
    metrics, summaries, used = chapters.load_finding(sweep, preset, runs_dir)
    benchmark = summaries.benchmark.iloc[0] if "benchmark" in summaries else "permuted_mnist"
    if benchmark == "warm_start":  # one score per run: its end-of-training numbers
        cols = [c for c in summaries.columns if c != "status"]
        rows = summaries[summaries.status != "diverged"][cols]
        metrics = rows.melt(
            id_vars=[c for c in cols if not c.startswith(("final_", "first_phase_"))],
            value_vars=[c for c in cols if c.startswith(("final_", "first_phase_"))],
            var_name="metric",
        ).assign(task=0, layer="all")
    elif benchmark == "incremental_cifar":
        from lop_core.vision.report import load as load_vit

        _, metrics, summaries, used, _ = load_vit(sweep, preset, runs_dir)
    extra = [c for c in summaries.columns if c not in metrics.columns or c == "run"]
    metrics = metrics.merge(summaries[extra], on="run", how="left")
    return metrics, summaries, used


def _group(table: pd.DataFrame, where: dict) -> pd.DataFrame:
    keep = pd.Series(True, index=table.index)
    for column, value in where.items():
        if column not in table.columns:
            return table.iloc[0:0]
        col = table[column]
        keep &= np.isclose(col.astype(float), value) if isinstance(value, float) else col == value
    return table[keep]


def _curves(table: pd.DataFrame, where: dict, metric: str, layer: str) -> pd.DataFrame:
    rows = _group(table, where)
    rows = rows[(rows.metric == metric) & (rows.layer.astype(str) == str(layer))]
    return rows[["run", "seed", "task", "value"]]


def _idle(table: pd.DataFrame, where: dict, curves: pd.DataFrame) -> str:
    """``verdicts.did_not_act`` for a group of a resetting method ("" for the others)."""
    method = where.get("method")
    if method not in chapters.RESETTING:
        return ""
    rows = _group(table, where)
    counts = rows[rows.metric == chapters.RESETTING[method]].groupby("run").value.sum()
    counts = counts.reindex(rows.run.unique(), fill_value=0.0)
    base = table[(table.get("method") == "base") & (table.metric == "online_accuracy")]
    base = base[base.layer.astype(str) == "all"][["run", "seed", "task", "value"]]
    return verdicts.did_not_act(counts, curves, base if not base.empty else None)


def _judge(part: Part, table: pd.DataFrame) -> verdicts.Verdict:
    measure = MEASURES.get(part.metric, part.metric)

    def side(groups):
        out = {name: _curves(table, w, part.metric, part.layer) for name, w in groups.items()}
        empty = [name for name, c in out.items() if c.empty]
        if empty:
            raise RunError(f"no runs of {', '.join(empty)} in sweep {part.sweep}")
        return out

    first = side(part.first)
    idle = {n: _idle(table, w, first[n]) for n, w in part.first.items()}
    if part.kind in ("above", "below"):
        second = side(part.second)
        idle.update({n: _idle(table, w, second[n]) for n, w in part.second.items()})
        a, b = (first, second) if part.kind == "above" else (second, first)
        return verdicts.judge_above(a, b, idle, measure)
    if part.kind == "level":
        return verdicts.judge_level(first, idle, measure)
    ((name, curves),) = first.items()
    if part.kind == "declines":
        return verdicts.judge_declines(name, curves, measure)
    if part.kind in ("rises", "falls"):
        return verdicts.judge_trend(name, curves, part.kind, measure)
    if part.kind == "anticorrelated":
        late = verdicts.late_scores(_curves(table, part.first[name], part.late_metric, part.layer))
        early = curves[curves.task == curves.task.min()].set_index("run").value
        what = f"{measure} on the first task against {MEASURES.get(part.late_metric)} over the last tenth"
        return verdicts.judge_correlation(early, late, -1, what)
    raise ValueError(f"unknown part kind {part.kind!r}; choose one of {list(KINDS)}")


def _protocol(summaries: pd.DataFrame, used: str) -> str:
    tasks = summaries.get("tasks_done", summaries.get("num_tasks"))
    tasks = f"{int(tasks.max())} tasks, " if tasks is not None and tasks.notna().any() else ""
    return f"{used} preset, {tasks}{chapters.seeds_shown(summaries)} seeds"


def evaluate(key: str | Finding, preset: str = "auto", runs_dir=None) -> Result:
    """Judge a finding (its key, e.g. ``"A3"``, or a ``Finding``) on the runs of its sweeps.

    A finding named by its key is judged once per preset and store (a chapter's box, its
    sentences and the landing table ask for the same verdicts); treat the result as read-only.
    """
    store = str(runs_dir) if runs_dir else None
    return _evaluate_key(key, preset, store) if isinstance(key, str) else _evaluate(key, preset, store)


@functools.lru_cache(maxsize=64)
def _evaluate_key(key: str, preset: str, runs_dir) -> Result:
    return _evaluate(FINDINGS[key], preset, runs_dir)


def _evaluate(finding: Finding, preset: str, runs_dir) -> Result:
    parts, protocol = [], {}
    for part in finding.parts:
        sweeps = (part.sweep,) if isinstance(part.sweep, str) else part.sweep
        try:
            loaded = [_load(s, preset, runs_dir) for s in sweeps]
        except RunError as err:
            parts.append(
                (part, verdicts.Verdict(verdicts.CANNOT_TELL, f"runs not made ({str(err).splitlines()[0]})"))
            )
            continue
        for s, (_, summaries, used) in zip(sweeps, loaded, strict=True):
            protocol[s] = _protocol(summaries, used)
        table = pd.concat([t for t, _, _ in loaded], ignore_index=True).drop_duplicates(
            ["run", "task", "metric", "layer"]
        )
        parts.append((part, _judge(part, table)))
    outcome = verdicts.combine([v for _, v in parts])
    return Result(finding, outcome, parts, protocol)


_CLASS = {verdicts.SUPPORTS: "tip", verdicts.CONTRADICTS: "danger", verdicts.CANNOT_TELL: "warning"}


def box(*keys: str, preset: str = "auto", runs_dir=None) -> str:
    """The verdict box of a chapter (MyST markdown, for ``glue`` and ``{glue:md}``): per finding the
    paper's claim, what the runs shown say, each part's reason, and preset, tasks and seeds."""
    lines = []
    results = [evaluate(k, preset, runs_dir) for k in keys]
    worst = verdicts.combine([verdicts.Verdict(r.outcome, "") for r in results])
    lines.append(f":::{{admonition}} What the runs shown say\n:class: {_CLASS[worst]}\n")
    for r in results:
        runs = "; ".join(f"`{s}`: {p}" for s, p in r.protocol.items()) or "no runs made"
        lines.append(f"**{r.finding.key}.** {r.finding.claim} **These runs: {r.outcome}** ({runs}).\n")
        for part, v in r.parts:
            lines.append(f"- {part.text}: *{v.outcome}*. {v.reason[0].upper()}{v.reason[1:]}.")
        lines.append("")
    lines.append(
        "Computed by `lop_core.judge` with one rule: a difference counts beyond twice its standard "
        "error; a method that reset nothing, or a curve still changing at the end, makes a part "
        '"cannot tell".\n:::'
    )
    return "\n".join(lines)


def sentence(key: str, part: int = 0, preset: str = "auto", runs_dir=None) -> str:
    """One part of a finding's verdict as a sentence for a chapter's text: "<part>: <outcome> (<reason>)"."""
    p, v = evaluate(key, preset, runs_dir).parts[part]
    return f"{p.text[0].upper()}{p.text[1:]}: {v.outcome} ({v.reason})"


def table(preset: str = "auto", runs_dir=None) -> pd.DataFrame:
    """Every finding: its key, label, claim, computed verdict and the runs behind it (the landing page)."""
    rows = []
    for key in FINDINGS:
        r = evaluate(key, preset, runs_dir)
        rows.append(
            {
                "finding": key,
                "label": r.finding.label,
                "claim": r.finding.claim,
                "these runs": r.outcome,
                "runs": "; ".join(dict.fromkeys(r.protocol.values())) or "not made",
            }
        )
    return pd.DataFrame(rows)


def markdown_table(preset: str = "auto", runs_dir=None) -> str:
    """``table`` as a MyST table whose findings link to their sections (for ``{glue:md}``)."""
    lines = ["| finding | the paper's claim | these runs | runs shown |", "|---|---|---|---|"]
    for _, row in table(preset, runs_dir).iterrows():
        link = f"{{ref}}`{row['finding']} <{row['label']}>`"
        lines.append(f"| {link} | {row['claim']} | **{row['these runs']}** | {row['runs']} |")
    return "\n".join(lines)
