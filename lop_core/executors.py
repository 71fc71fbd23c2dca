"""Where a sweep's populations train: in this process, in local worker processes, or on Slurm.

The unit of work is one population (``train_population``): it skips finished runs, resumes
partial ones from their checkpoint and locks what it trains, so an executor can be stopped and
started again at any time, and two executors on the same sweep never train a run twice.

``execute`` is the entry point of ``python -m lop_core sweep``: it drops finished populations,
shows one tqdm bar for the sweep (runs finished) and hands the rest to ``run_local`` or to
``lop_core.slurm.submit``. ``run_local`` with ``jobs=1`` trains one population after another
here; with more jobs it starts that many worker processes at a time (a fresh process per
population), each given one GPU, round robin over the visible GPUs, so that more jobs than GPUs
pack several small populations on one GPU; on a CPU each worker gets an equal share of the cores.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass

from tqdm import tqdm

from lop_core import runs

#: Errors a population may end with that are reported in a line (anything else with a traceback).
EXPECTED = (RuntimeError, ValueError)


@dataclass(frozen=True)
class TrainOptions:
    """How every population of a sweep is trained (picklable: it travels to workers and Slurm jobs).

    Attributes:
        runs_dir: the run store (None: the repository's ``runs/`` or ``$LOP_RUNS``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        data_root: the data root (None: ``$LOP_DATA``).
        notebook: execute the experiment notebook through papermill (``lop_core.notebooks``).
        compile: capture the training step with ``torch.compile``.
        progress: tqdm bars.
        checkpoint_every: seconds between population checkpoints (None: the default).
    """

    runs_dir: str | None = None
    device: str = "auto"
    data_root: str | None = None
    notebook: bool = False
    compile: bool = False
    progress: bool = True
    checkpoint_every: float | None = None


def train_population(cfgs, opts: TrainOptions, bar_position: int | None = None) -> None:
    """Make the missing runs of one population (resuming, under the runs' locks)."""
    if opts.notebook:
        from lop_core.notebooks import execute_population

        execute_population(
            cfgs, opts.runs_dir, opts.device, opts.data_root, opts.compile, opts.checkpoint_every
        )
        return
    from lop_core.experiment import run_or_load

    run_or_load(
        cfgs,
        runs_dir=opts.runs_dir,
        device=opts.device,
        data_root=opts.data_root,
        progress=opts.progress,
        checkpoint_every=opts.checkpoint_every,
        compile=opts.compile,
        bar_position=bar_position,
    )


def describe_error(cfgs, err: BaseException) -> str:
    """One message for a population that failed: its first run, and the error (traced if unexpected)."""
    where = f"{runs.run_name(cfgs[0])}" + (f" and {len(cfgs) - 1} more runs" if len(cfgs) > 1 else "")
    if isinstance(err, EXPECTED):
        return f"{where}: {err}"
    return f"{where}:\n" + "".join(traceback.format_exception(err))


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (none without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def worker_envs(jobs: int, device: str = "auto", gpus=None, cpus: int | None = None) -> list[dict[str, str]]:
    """The environment of each of ``jobs`` local workers.

    Worker ``i`` sees GPU ``gpus[i % len(gpus)]`` alone (when ``device`` is ``auto`` or ``cuda``
    and there are GPUs): more workers than GPUs share them. Every worker gets ``cpus // jobs``
    threads (at least one), so workers do not fight over the cores.

    Args:
        jobs: number of workers.
        device: the sweep's ``--device``; a specific one (``cpu``, ``cuda:1``) is not sharded.
        gpus: the GPUs to shard over (default: ``visible_gpus()``).
        cpus: cores to share (default: the cores this process may run on).
    """
    gpus = visible_gpus() if gpus is None else list(gpus)
    cpus = cpus or len(os.sched_getaffinity(0))
    threads = str(max(1, cpus // jobs))
    shard = device in ("auto", "cuda") and len(gpus) > 0
    return [
        {"OMP_NUM_THREADS": threads, **({"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} if shard else {})}
        for i in range(jobs)
    ]


def _worker(cfgs, opts: TrainOptions, env: dict[str, str], position: int) -> None:
    # a fresh process (spawned): CUDA has not started yet, so the GPU choice still takes effect
    os.environ.update(env)
    import torch

    torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    train_population(cfgs, opts, bar_position=position)


def run_local(
    populations, opts: TrainOptions, jobs: int = 1, on_done=None, first_line: int | None = None
) -> list[str]:
    """Train ``populations``, ``jobs`` at a time, on this machine.

    Args:
        populations: lists of configs (``sweep.expand``).
        opts: how to train them.
        jobs: 1: one after another in this process; more: that many worker processes at once.
        on_done: called with each population when it has finished (or failed).
        first_line: terminal line of the first population bar (below a sweep bar), else None.

    Returns:
        One message per population that failed (the others still ran).
    """
    errors: list[str] = []

    def finished(cfgs, err: BaseException | None) -> None:
        if err is not None:
            errors.append(describe_error(cfgs, err))
        if on_done is not None:
            on_done(cfgs)

    if jobs <= 1 or len(populations) <= 1:
        for cfgs in populations:
            try:
                train_population(cfgs, opts, bar_position=first_line)
            except EXPECTED as err:
                finished(cfgs, err)
            else:
                finished(cfgs, None)
        return errors
    envs = worker_envs(jobs, opts.device)
    queue = list(populations)
    free = list(range(jobs))
    running = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, max_tasks_per_child=1) as pool:
        while queue or running:
            while queue and free:
                slot, cfgs = free.pop(0), queue.pop(0)
                line = (first_line or 0) + slot
                running[pool.submit(_worker, cfgs, opts, envs[slot], line)] = (slot, cfgs)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                slot, cfgs = running.pop(future)
                free.append(slot)
                finished(cfgs, future.exception())
    return errors


def execute(populations, opts: TrainOptions, jobs: int = 1, slurm: dict | None = None, desc="sweep"):
    """Make every missing run of ``populations``, here (``run_local``) or on Slurm.

    Args:
        populations: lists of configs.
        opts: how to train them.
        jobs: local worker processes (see ``run_local``); ignored on Slurm.
        slurm: keyword arguments of ``lop_core.slurm.submit``, or None to train locally.
        desc: label of the sweep's progress bar (None: no bar).

    Returns:
        One message per population that failed.
    """

    def done_runs(cfgs) -> int:
        return sum(runs.is_done(runs.run_path(c, opts.runs_dir)) for c in cfgs)

    show = bool(opts.progress and desc)
    before = {id(cfgs): done_runs(cfgs) for cfgs in populations}
    todo = [cfgs for cfgs in populations if before[id(cfgs)] < len(cfgs)]
    total = sum(len(cfgs) for cfgs in populations)
    with tqdm(
        total=total,
        initial=sum(before.values()),
        desc=desc,
        unit="run",
        position=0,
        disable=not show,
    ) as bar:

        def on_done(cfgs) -> None:
            bar.update(done_runs(cfgs) - before[id(cfgs)])

        if slurm is None:
            return run_local(todo, opts, jobs, on_done, first_line=1 if show else None)
        from lop_core.slurm import submit

        return submit(todo, opts, on_done=on_done, **slurm)
