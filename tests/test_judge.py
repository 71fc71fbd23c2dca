"""The findings registry against the sweep files, and the judge on constructed tables."""

import numpy as np
import pandas as pd
import pytest

from lop_core import judge, verdicts
from lop_core.findings import FINDINGS, KINDS, Part
from lop_core.sweep import expand


def _columns(cfg) -> dict:
    d = cfg.to_dict()
    return {**d, **d.get("method_args", {})}


@pytest.mark.parametrize("key", sorted(FINDINGS))
def test_every_part_names_a_sweep_and_groups_that_select_runs(key):
    for part in FINDINGS[key].parts:
        assert part.kind in KINDS and part.text
        sweeps = (part.sweep,) if isinstance(part.sweep, str) else part.sweep
        cfgs = [_columns(c) for s in sweeps for p in expand(s, "quick") for c in p]
        for name, where in {**part.first, **part.second}.items():

            def matches(c, where=where):
                return all(
                    k in c and (np.isclose(c[k], v) if isinstance(v, float) else c[k] == v)
                    for k, v in where.items()
                )

            assert any(matches(c) for c in cfgs), f"{key}: group {name} {where} selects no run of {sweeps}"


def _table(method, level, seeds=3, tasks=20, resets=1.0, metric="online_accuracy"):
    rows = []
    for s in range(seeds):
        for t in range(tasks):
            value = level + 0.002 * (-1) ** t * (1 + s)
            rows.append(
                {
                    "run": f"{method}-s{s}",
                    "seed": s,
                    "task": t,
                    "metric": metric,
                    "layer": "all",
                    "value": value,
                    "method": method,
                }
            )
            if method in ("cbp", "swr"):
                rows.append(
                    {
                        **rows[-1],
                        "metric": "reset_units" if method == "cbp" else "reset_weights",
                        "value": resets,
                    }
                )
    return pd.DataFrame(rows)


def test_a_method_that_reset_nothing_cannot_be_ranked():
    part = Part("above", "a3", {"SWR": {"method": "swr"}}, {"CBP": {"method": "cbp"}}, text="t")
    acting = pd.concat([_table("swr", 0.9), _table("cbp", 0.8), _table("base", 0.7)])
    assert judge._judge(part, acting).outcome == verdicts.SUPPORTS
    idle = pd.concat([_table("swr", 0.9), _table("cbp", 0.8, resets=0.0), _table("base", 0.7)])
    v = judge._judge(part, idle)
    assert v.outcome == verdicts.CANNOT_TELL and "CBP reset nothing in 3 of 3 runs" in v.reason
    twin = _table("base", 0.8).assign(method="swr", run=lambda f: f.run.str.replace("base", "swr"))
    twin = pd.concat([twin, twin.assign(metric="reset_weights", value=5.0)])
    same = pd.concat([twin, _table("cbp", 0.9), _table("base", 0.8)])
    v = judge._judge(part, same)
    assert v.outcome == verdicts.CANNOT_TELL and "identical to plain training" in v.reason


def test_missing_runs_make_a_part_cannot_tell_and_the_box_says_so(tmp_path):
    result = judge.evaluate("A3", runs_dir=tmp_path)
    assert result.outcome == verdicts.CANNOT_TELL
    assert "runs not made" in result.parts[0][1].reason
    text = judge.box("A3", runs_dir=tmp_path)
    assert text.startswith(":::{admonition} What the runs shown say") and text.endswith(":::")
    assert "**A3.**" in text and "cannot tell" in text
    rows = judge.table(runs_dir=tmp_path)
    assert list(rows.columns) == ["finding", "label", "claim", "these runs", "runs"]
    assert set(rows["these runs"]) == {verdicts.CANNOT_TELL} and len(rows) == len(FINDINGS)
    md = judge.markdown_table(runs_dir=tmp_path).splitlines()
    assert len(md) == 2 + len(FINDINGS) and md[2].startswith("| {ref}`A1 <finding-a1>` |")
