"""Run-or-resume a population of runs into the run store (what the experiment notebooks call).

``run_or_load`` skips finished runs, locks the others (one process per run), resumes a population
from its checkpoint, trains with a tqdm bar (tasks, with the latest online accuracy), writes every
run's folder and finally ``DONE``. A run that diverges is marked at once and finished as such.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

import pandas as pd
from tqdm import tqdm

from lop_core import locks, runs
from lop_core import progress as progress_store
from lop_core.errors import ConfigError, RunError

#: The trainer class of each benchmark, as ``module:Class``. A trainer takes
#: ``(cfgs, device=, data_root=, compile=)`` and has ``device``, ``task`` (units done), ``total``
#: (units in a run), ``unit`` (a word for the progress bar), ``train_task()`` (one unit; returns a
#: dict with ``online_accuracy``: one float per run), ``rows`` (tidy metric rows per run),
#: ``summaries()``, ``state_dict()`` and ``load_state_dict()``. Optional: ``diverged`` (per run
#: None or a dict with at least ``diverged_step``; see ``train.Population``) and a static
#: ``require_data(data_root)`` that raises ``DataError`` before anything is written.
TRAINERS = {
    "permuted_mnist": "lop_core.train:Population",
    "incremental_cifar": "lop_core.vision.train:IncrementalCIFAR",
    "continual_mnist": "lop_core.continual:ContinualMNIST",
    "warm_start": "lop_core.warmstart:WarmStart",
}


def trainer_class(benchmark: str) -> type:
    """The trainer class of ``benchmark`` (see ``TRAINERS``)."""
    module, _, name = TRAINERS[benchmark].partition(":")
    return getattr(importlib.import_module(module), name)


def make_trainer(cfgs, **kwargs):
    """The trainer of ``cfgs[0].benchmark`` for a population of runs (see ``TRAINERS``)."""
    return trainer_class(cfgs[0].benchmark)(cfgs, **kwargs)


def require_data(benchmark: str, data_root=None) -> None:
    """Fail with ``DataError`` now, before anything is written, if the benchmark's data is missing."""
    check = getattr(trainer_class(benchmark), "require_data", None)
    if check is not None:
        check(data_root)


#: Seconds between population checkpoints when ``run_or_load`` is not told (``$LOP_CHECKPOINT_EVERY``).
CHECKPOINT_EVERY = 300.0


def checkpoint_interval(seconds=None) -> float:
    """``seconds``, else ``$LOP_CHECKPOINT_EVERY``, else ``CHECKPOINT_EVERY``; must be >= 0."""
    value = seconds if seconds is not None else os.environ.get("LOP_CHECKPOINT_EVERY") or CHECKPOINT_EVERY
    try:
        value = float(value)
    except ValueError:
        raise ConfigError(f"checkpoint interval: expected seconds, got {value!r}") from None
    if not value >= 0:
        raise ConfigError(f"checkpoint interval must be >= 0 seconds, got {value}")
    return value


def _progress(total: int, initial: int, desc: str, enabled: bool, unit: str = "task", position=None):
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
        position=position,
        leave=position is None,
    )


def run_or_load(
    cfgs,
    runs_dir=None,
    device="auto",
    data_root=None,
    progress=True,
    finalize=True,
    checkpoint_every: float | None = None,
    compile: bool = False,
    bar_position: int | None = None,
    land_progress: bool = False,
) -> pd.DataFrame:
    """Make sure every run of ``cfgs`` exists in the store, training what is missing.

    The missing runs train together as one population (they must differ only in per-run fields:
    seed, step size, ...), under a lock per run (``locks.locked``): a second process started on
    them stops at once. A population checkpoint (model, optimizer, method state, every generator,
    the metrics so far, the task reached) is written atomically at task boundaries, at most every
    ``checkpoint_every`` seconds of wall time, so a population killed at any point resumes where
    it was and ends with the same numbers. A run whose loss stops being finite is marked
    ``diverged`` (with the step) in ``meta.json`` at once and finished as such; the others go on.

    Args:
        cfgs: validated configs (``lop_core.config.resolve``).
        runs_dir: the store (default: the repository's ``runs/``).
        device: ``auto``, ``cpu``, ``cuda``, ...
        data_root: data root (default ``$LOP_DATA``).
        progress: show a tqdm bar.
        finalize: write ``DONE``. The sweep runner passes False and finalizes after storing the
            executed notebook beside the results.
        checkpoint_every: seconds between checkpoints (default: see ``checkpoint_interval``).
        compile: capture the training step with ``torch.compile`` (see ``train.Population``).
        bar_position: line of the progress bar (set by the sweep runners, one line per worker).
        land_progress: write the checkpoints to ``runs/<benchmark>/progress/`` (compressed, tracked
            by git) instead of the machine-local ``.checkpoints/``, so that the progress can be
            committed and resumed from a fresh clone (``lop_core.progress``).

    Returns:
        One row per run: its config labels and ``summary.json``.

    Raises:
        RunLocked: another process is training one of the runs (nothing was written).
        RunError: the population's checkpoint or a finished run's summary is unreadable.
        DataError: the benchmark's data is missing (nothing was written).
    """
    every = checkpoint_interval(checkpoint_every)
    paths = [runs.run_path(c, runs_dir) for c in cfgs]
    todo = [c for c, p in zip(cfgs, paths, strict=True) if not runs.is_done(p)]
    if todo:
        require_data(todo[0].benchmark, data_root)
        with locks.locked([runs.run_path(c, runs_dir) for c in todo]):
            todo = [c for c in todo if not runs.is_done(runs.run_path(c, runs_dir))]  # done meanwhile?
            # killed while its runs were being finalized: resume the whole population from its
            # checkpoint (a population of the rest would give them the same numbers only up to rounding)
            if todo and len(todo) < len(cfgs) and progress_store.has_checkpoint(cfgs, runs_dir):
                todo = cfgs
            if todo:
                _drop_leftovers(todo, runs_dir)
                _train(
                    todo,
                    runs_dir,
                    device,
                    data_root,
                    progress,
                    finalize,
                    every,
                    compile,
                    bar_position,
                    land_progress,
                )
    else:  # all done: a kill between the last DONE and the checkpoint's deletion left it behind
        progress_store.remove_checkpoints(cfgs, runs_dir)
    for path in paths:
        if runs.is_done(path):  # a holder killed after finishing it left its lock file
            locks.remove_stale(path)
    rows = []
    for c, path in zip(cfgs, paths, strict=True):
        summary = runs.read_summary(path)
        rows.append({"run": path.name, "method": c.method, "seed": c.seed, **summary})
    return pd.DataFrame(rows)


def _drop_leftovers(todo, runs_dir) -> None:
    """Delete the temporary files a killed process left in the folders of ``todo`` and beside its
    population checkpoint: with their runs locked here, no other process writes them."""
    for c in todo:
        runs.remove_temporaries(runs.run_path(c, runs_dir))
    for ckpt in progress_store.checkpoint_places(todo, runs_dir):
        runs.remove_temporaries(ckpt.parent, ckpt.name)


def _check_fit(pop, cfgs, ckpt) -> None:
    """Refuse a loaded checkpoint whose position or number of runs cannot be these runs'."""
    task, total, count = pop.task, pop.total, len(pop.rows)
    whole = isinstance(task, int) and not isinstance(task, bool)
    if whole and 0 <= task < total and count == len(cfgs) == len(_diverged(pop)):
        return
    raise _misfit(ckpt, f"at {pop.unit} {task!r} of {total}, with {count} runs for {len(cfgs)}")


def _misfit(ckpt, why: str) -> RunError:
    return RunError(f"checkpoint {ckpt} does not fit these runs ({why}); delete it and run again")


def _diverged(pop) -> list:
    return list(getattr(pop, "diverged", None) or [None] * len(pop.rows))


def _train(
    cfgs, runs_dir, device, data_root, progress, finalize, checkpoint_every, compile, bar_position, land=False
):
    """Train the population ``cfgs``, writing the folders of its runs that are not done yet."""
    pop = make_trainer(cfgs, device=device, data_root=data_root, compile=compile)
    paths = [runs.run_path(c, runs_dir) for c in cfgs]
    fresh = [r for r, path in enumerate(paths) if not runs.is_done(path)]
    meta = runs.base_meta(pop.device, len(cfgs))
    meta["compiled"] = compile
    wall_before = 0.0
    state, ckpt = progress_store.latest_checkpoint(cfgs, runs_dir, pop.device)
    where = progress_store.landed_checkpoint if land else progress_store.population_checkpoint
    save_to = where(cfgs, runs_dir)
    if state is not None:
        try:
            pop.load_state_dict(state["population"])
            wall_before = float(state["wall_s"])
        except Exception as err:  # a foreign or tampered state fails anywhere in loading
            raise _misfit(ckpt, f"{type(err).__name__}: {str(err)[:200]}") from None
        _check_fit(pop, cfgs, ckpt)
        meta["resumed_at"] = f"{pop.unit} {pop.task}"

    def run_meta(diverged: dict | None) -> dict:
        return {**meta, **(diverged or {}), "status": "diverged"} if diverged else dict(meta)

    for r in fresh:
        paths[r].mkdir(parents=True, exist_ok=True)
        runs.write_json(paths[r] / "config.json", cfgs[r].to_dict())
        runs.write_json(paths[r] / "meta.json", run_meta(_diverged(pop)[r]))
    total = pop.total
    start, last_save = time.time(), time.time()
    desc = f"{runs.run_name(cfgs[0]).rsplit('-', 2)[0]} x{len(cfgs)} runs"
    with _progress(total, pop.task, desc, progress, pop.unit, bar_position) as bar:
        while pop.task < total:
            before = _diverged(pop)
            out = pop.train_task()
            after = _diverged(pop)
            for r in [r for r in fresh if after[r] and not before[r]]:
                runs.write_json(paths[r] / "meta.json", run_meta(after[r]))
                bar.write(f"{paths[r].name} diverged (non-finite loss) at step {after[r]['diverged_step']}")
            live = [a for a, d in zip(out["online_accuracy"], after, strict=True) if not d]
            if not live:
                break  # every run diverged: nothing left to train
            bar.set_postfix(acc=f"{sum(live) / len(live):.3f}", refresh=False)
            bar.update(1)
            if pop.task < total and time.time() - last_save >= checkpoint_every:
                state = {"population": pop.state_dict(), "wall_s": wall_before + time.time() - start}
                progress_store.save_checkpoint(save_to, state)
                last_save = time.time()
    wall = wall_before + time.time() - start
    meta.update(status="done", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), wall_s=round(wall, 2))
    summaries = pop.summaries()
    for r in fresh:
        cfg, diverged, summary = cfgs[r], _diverged(pop)[r], summaries[r]
        summary.update(
            benchmark=cfg.benchmark, method=cfg.method, preset=cfg.preset, seed=cfg.seed, status="done"
        )
        summary.update({**diverged, "status": "diverged"} if diverged else {})
        runs.write_results(paths[r], pop.rows[r], summary, run_meta(diverged))
    if finalize:  # else the caller finalizes, then removes the checkpoint (notebooks.execute_population)
        for r in fresh:
            runs.finalize(paths[r])
        progress_store.remove_checkpoints(cfgs, runs_dir)
