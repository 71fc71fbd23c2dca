"""Sweep files: the grid of runs behind a finding (``book/experiments/sweeps/<finding>.yaml``).

A sweep file names a benchmark, the seeds per preset and a list of entries; an entry is a dict of
parameter values (config fields or method hyperparameters), and a list value is a grid axis.
Entries expand into configs, and configs that differ only in per-run fields (seed, step size,
...) are grouped into one population: one notebook execution, one batched training.

An optional ``presets`` mapping shortens a preset further for this sweep only (values every entry
gets at that preset, e.g. fewer tasks for the h=1000 network on a CPU); entry values win over it.
An entry may carry its own ``presets`` mapping too (a smaller grid, or a value rescaled for shorter
tasks, at one preset), which wins over both. Any other top-level key is refused (a typo), and so
is an entry key that names no parameter; the error names the file and the entry.

``python -m lop_core sweep`` trains the missing runs (``lop_core.executors``: here, in local
worker processes over the GPUs, or on Slurm); ``python -m lop_core status`` counts a sweep's runs
by state (``status``).

Example::

    benchmark: permuted_mnist
    seeds: {smoke: 0-1, quick: 0-4, paper: 0-9}
    presets: {quick: {num_tasks: 20}}
    entries:
      - {method: base, width: 100}
      - {method: swr, reinit_factor: [1.0e-6, 1.0e-5, 1.0e-4, 1.0e-3],
         presets: {quick: {reinit_factor: [1.0e-5, 1.0e-3]}}}
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pandas as pd
import yaml

from lop_core import runs
from lop_core.config import (
    PER_RUN_FIELDS,
    PRESETS,
    ConfigError,
    by_method,
    parse_seeds,
    population_key,
    refuse_reserved,
    resolve,
)
from lop_core.runs import REPO

SWEEPS_DIR = REPO / "book" / "experiments" / "sweeps"
#: The keys a sweep file may have (any other is a typo, refused: a dropped ``presets`` would
#: silently train at the full preset).
KEYS = ("benchmark", "seeds", "presets", "entries")
#: Names an entry may not set, and what sets them instead.
RESERVED = {
    "seed": "'seeds:' (in the entry or at the top of the file)",
    "preset": "--preset (and 'presets:' for values at one preset)",
    "benchmark": "the file's 'benchmark:'",
}


def sweep_path(name: str | Path) -> Path:
    """A sweep file from a path or a bare finding name (``a1`` -> the sweeps folder's ``a1.yaml``)."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = SWEEPS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
        raise ConfigError(f"no sweep file {path}; known sweeps: {known}")
    return path


def _check_presets(path, presets, what: str, also=()) -> None:
    """``presets`` (and the keys of ``also``) must name known presets, each mapped to values."""
    if not isinstance(presets, dict) or not all(isinstance(v, dict) for v in presets.values()):
        raise ConfigError(f"{path}: {what} must map a preset name to a mapping of values")
    unknown = sorted(set(presets) - set(PRESETS)) + sorted(set(also) - set(PRESETS))
    if unknown:
        raise ConfigError(f"{path}: unknown presets {unknown}; choose from {list(PRESETS)}")


def read_sweep(name) -> dict:
    """Parse and check a sweep file (safe YAML loader)."""
    path = sweep_path(name)
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("entries"), list) or "benchmark" not in spec:
        raise ConfigError(f"{path}: expected a mapping with 'benchmark', 'seeds' and a list 'entries'")
    unknown = sorted(set(spec) - set(KEYS), key=str)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; valid keys: {sorted(KEYS)}")
    seeds = spec.get("seeds", {})
    if not isinstance(seeds, dict):
        raise ConfigError(f"{path}: 'seeds' must map a preset name to seeds, e.g. {{smoke: 0-1, quick: 0-4}}")
    _check_presets(path, spec.get("presets") or {}, "'presets'", also=seeds)
    spec["path"] = str(path)
    return spec


def expand(name, preset: str) -> list[list]:
    """The populations (lists of configs) of a sweep at a preset; every config is validated."""
    spec = read_sweep(name)
    seeds_by_preset = spec.get("seeds", {})
    if preset not in seeds_by_preset:
        raise ConfigError(f"{spec['path']}: no seeds for preset {preset!r}; it has {sorted(seeds_by_preset)}")
    shortened = (spec.get("presets") or {}).get(preset, {})
    groups: dict[str, list] = {}
    for number, entry in enumerate(spec["entries"], 1):
        if not isinstance(entry, dict):
            raise ConfigError(f"{spec['path']}: every entry must be a mapping, got {entry!r}")
        own = entry.get("presets") or {}
        _check_presets(spec["path"], own, "an entry's 'presets'")
        values = {**shortened, **{k: v for k, v in entry.items() if k != "presets"}, **own.get(preset, {})}
        try:
            for cfg in _entry_configs(spec["benchmark"], preset, values, seeds_by_preset[preset]):
                groups.setdefault(population_key(cfg), []).append(cfg)
        except ConfigError as err:
            text = str(entry) if len(str(entry)) <= 80 else str(entry)[:77] + "..."
            raise ConfigError(f"{spec['path']}: entry {number} {text}: {err}") from None
    return [by_method(g) for g in groups.values()]


def _entry_configs(benchmark: str, preset: str, entry: dict, seeds):
    """The validated configs of one entry (its values at ``preset``; a list is a grid axis)."""
    refuse_reserved(entry, RESERVED)
    seeds = parse_seeds(entry.pop("seeds", seeds))
    axes = {k: v if isinstance(v, list) else [v] for k, v in entry.items()}
    for values in itertools.product(*axes.values()):
        params = dict(zip(axes, values, strict=True))
        for seed in seeds:
            yield resolve(benchmark, preset, seed=seed, **params)


def command(name, preset: str) -> str:
    """The shell command that makes a sweep's runs."""
    return f"python -m lop_core sweep {name} --preset {preset}"


def describe(cfgs) -> str:
    """A short label of a population: its method, then the values its runs share that are not the
    preset's defaults (``cbp width=10 maturity_threshold=5``); values that vary per run are left out."""
    from lop_core.config import default_config

    first = cfgs[0]
    default = default_config(first.benchmark, first.preset, first.method).to_dict()
    dicts = [c.to_dict() for c in cfgs]
    shared = {k: v for k, v in dicts[0].items() if k not in (*PER_RUN_FIELDS, "method_args", "method")}
    methods = list(dict.fromkeys(c.method for c in cfgs))
    if len(methods) == 1:
        shared.update(dicts[0]["method_args"])
    parts = ["+".join(methods)]
    for key, value in shared.items():
        mine = [d["method_args"][key] if key in d["method_args"] else d[key] for d in dicts]
        ref = default["method_args"].get(key) if key in dicts[0]["method_args"] else default.get(key)
        if all(v == value for v in mine) and value != ref:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def status(names, preset: str, runs_dir=None) -> pd.DataFrame:
    """How many runs of every population of the sweeps ``names`` are in each state.

    Returns:
        One row per population: ``sweep``, ``population`` (``describe``), ``runs``, a count per
        state of ``runs.STATES`` (done, diverged, running, partial, missing, corrupt) and
        ``progress``: how far its checkpoint has got, for an unfinished population that has one
        (``lop_core.progress.progress_note``).
    """
    from lop_core.progress import progress_note

    rows = []
    for name in names:
        for cfgs in expand(name, preset):
            counts = Counter(runs.run_state(runs.run_path(c, runs_dir)) for c in cfgs)
            row = {"sweep": Path(str(name)).stem, "population": describe(cfgs), "runs": len(cfgs)}
            row |= {state: counts.get(state, 0) for state in runs.STATES}
            unfinished = [c for c in cfgs if not runs.is_done(runs.run_path(c, runs_dir))]
            rows.append(row | {"progress": progress_note(unfinished, runs_dir) if unfinished else ""})
    return pd.DataFrame(rows)
