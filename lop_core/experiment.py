"""Run-or-resume a population of runs into the run store (what the experiment notebooks call).

``run_or_load`` skips finished runs, resumes a population from its checkpoint, trains with a tqdm
bar (tasks, with the latest online accuracy), writes every run's folder and finally ``DONE``.
"""

from __future__ import annotations

import json
import sys
import time

import pandas as pd
import torch
from tqdm import tqdm

from lop_core import runs

#: The trainer class of each benchmark, as ``module:Class``. A trainer takes
#: ``(cfgs, device=, data_root=, compile=)`` and has ``device``, ``task`` (units done), ``total``
#: (units in a run), ``unit`` (a word for the progress bar), ``train_task()`` (one unit; returns a
#: dict with ``online_accuracy``: one float per run), ``rows`` (tidy metric rows per run),
#: ``summaries()``, ``state_dict()`` and ``load_state_dict()``.
TRAINERS = {
    "permuted_mnist": "lop_core.train:Population",
    "incremental_cifar": "lop_core.vision.train:IncrementalCIFAR",
    "continual_mnist": "lop_core.continual:ContinualMNIST",
}


def make_trainer(cfgs, **kwargs):
    """The trainer of ``cfgs[0].benchmark`` for a population of runs (see ``TRAINERS``)."""
    import importlib

    module, _, name = TRAINERS[cfgs[0].benchmark].partition(":")
    return getattr(importlib.import_module(module), name)(cfgs, **kwargs)


def _progress(total: int, initial: int, desc: str, enabled: bool, unit: str = "task"):
    interactive = sys.stderr.isatty()
    # in a notebook executed by papermill every refresh becomes stored output: refresh rarely
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not enabled,
        mininterval=0.5 if interactive else 60.0,
        dynamic_ncols=interactive,
    )


def run_or_load(
    cfgs,
    runs_dir=None,
    device="auto",
    data_root=None,
    progress=True,
    finalize=True,
    checkpoint_every: float = 300.0,
    compile: bool = False,
) -> pd.DataFrame:
    """Make sure every run of ``cfgs`` exists in the store, training what is missing.

    The missing runs train together as one population (they must differ only in per-run fields:
    seed, step size, ...). A population checkpoint is written at task boundaries at most every
    ``checkpoint_every`` seconds of wall time, so a killed population resumes where it was.

    Args:
        cfgs: validated configs (``lop_core.config.resolve``).
        runs_dir: the store (default: the repository's ``runs/``).
        device: ``auto``, ``cpu``, ``cuda``, ...
        data_root: data root (default ``$LOP_DATA``).
        progress: show a tqdm bar.
        finalize: write ``DONE``. The sweep runner passes False and finalizes after storing the
            executed notebook beside the results.
        checkpoint_every: seconds between checkpoints.
        compile: capture the training step with ``torch.compile`` (see ``train.Population``).

    Returns:
        One row per run: its config labels and ``summary.json``.
    """
    todo = [c for c in cfgs if not runs.is_done(runs.run_path(c, runs_dir))]
    if todo:
        _train(todo, runs_dir, device, data_root, progress, finalize, checkpoint_every, compile)
    rows = []
    for c in cfgs:
        path = runs.run_path(c, runs_dir)
        summary = json.loads((path / "summary.json").read_text())
        rows.append({"run": path.name, "method": c.method, "seed": c.seed, **summary})
    return pd.DataFrame(rows)


def _train(cfgs, runs_dir, device, data_root, progress, finalize, checkpoint_every, compile):
    pop = make_trainer(cfgs, device=device, data_root=data_root, compile=compile)
    paths = [runs.run_path(c, runs_dir) for c in cfgs]
    ckpt = runs.population_checkpoint(cfgs, runs_dir)
    meta = runs.base_meta(pop.device, len(cfgs))
    meta["compiled"] = compile
    wall_before = 0.0
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=pop.device, weights_only=True)
        pop.load_state_dict(state["population"])
        wall_before = float(state["wall_s"])
    for cfg, path in zip(cfgs, paths, strict=True):
        path.mkdir(parents=True, exist_ok=True)
        runs.write_json(path / "config.json", cfg.to_dict())
        runs.write_json(path / "meta.json", meta)
    total = pop.total
    start, last_save = time.time(), time.time()
    desc = f"{runs.run_name(cfgs[0]).rsplit('-', 2)[0]} x{len(cfgs)} runs"
    with _progress(total, pop.task, desc, progress, pop.unit) as bar:
        while pop.task < total:
            out = pop.train_task()
            accs = out["online_accuracy"]
            bar.set_postfix(acc=f"{sum(accs) / len(accs):.3f}", refresh=False)
            bar.update(1)
            if pop.task < total and time.time() - last_save >= checkpoint_every:
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                state = {"population": pop.state_dict(), "wall_s": wall_before + time.time() - start}
                runs.write_atomic(ckpt, _to_bytes(state))
                last_save = time.time()
    wall = wall_before + time.time() - start
    meta.update(status="done", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), wall_s=round(wall, 2))
    for cfg, path, rows, summary in zip(cfgs, paths, pop.rows, pop.summaries(), strict=True):
        summary.update(
            benchmark=cfg.benchmark, method=cfg.method, preset=cfg.preset, seed=cfg.seed, status="done"
        )
        runs.write_results(path, rows, summary, meta)
        if finalize:
            runs.finalize(path)
    ckpt.unlink(missing_ok=True)


def _to_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
