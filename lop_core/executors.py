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
A worker that dies fails its own population only, and workers die with the sweep's process.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait

from tqdm import tqdm

from lop_core import runs

#: Errors a population may end with that are reported in a line (anything else with a traceback):
#: bad values, missing data, locked or corrupt runs, and failed writes (a full disk, a read-only store).
EXPECTED = (RuntimeError, ValueError, OSError)


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
        land_progress: checkpoints in ``runs/<benchmark>/progress/``, to commit (``lop_core.progress``).
    """

    runs_dir: str | None = None
    device: str = "auto"
    data_root: str | None = None
    notebook: bool = False
    compile: bool = False
    progress: bool = True
    checkpoint_every: float | None = None
    land_progress: bool = False


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
        land_progress=opts.land_progress,
        bar_position=bar_position,
    )


def population_label(cfgs) -> str:
    """A population in messages: its first run's name and how many more it has."""
    return runs.run_name(cfgs[0]) + (f" and {len(cfgs) - 1} more runs" if len(cfgs) > 1 else "")


def describe_error(cfgs, err: BaseException) -> str:
    """One message for a population that failed: its first run, and the error (traced if unexpected)."""
    if isinstance(err, EXPECTED):
        return f"{population_label(cfgs)}: {err}"
    return f"{population_label(cfgs)}:\n" + "".join(traceback.format_exception(err))


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (none without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def free_cores() -> int:
    """Cores this process may use that other processes are not already keeping busy (at least 1).

    The busy ones are read from the 1-minute load average. On a machine where another job holds a
    core, torch's default of one thread per core makes every step wait for the busy core (25 times
    slower seen on two cores), so training takes only the free ones.
    """
    cores = len(os.sched_getaffinity(0))
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, cores - busy)


def training_threads(jobs: int = 1) -> int:
    """Threads of each of ``jobs`` trainers: ``$OMP_NUM_THREADS`` when set, else the free cores shared."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, free_cores() // jobs)


def worker_envs(jobs: int, device: str = "auto", gpus=None, cpus: int | None = None) -> list[dict[str, str]]:
    """The environment of each of ``jobs`` local workers.

    Worker ``i`` sees GPU ``gpus[i % len(gpus)]`` alone (when ``device`` is ``auto`` or ``cuda``
    and there are GPUs): more workers than GPUs share them. Every worker gets ``cpus // jobs``
    threads (at least one), so workers do not fight over the cores nor with other processes.

    Args:
        jobs: number of workers.
        device: the sweep's ``--device``; a specific one (``cpu``, ``cuda:1``) is not sharded.
        gpus: the GPUs to shard over (default: ``visible_gpus()``).
        cpus: cores to share (default: ``training_threads``' choice, the free cores).
    """
    gpus = visible_gpus() if gpus is None else list(gpus)
    threads = str(max(1, cpus // jobs) if cpus else training_threads(jobs))
    shard = device in ("auto", "cuda") and len(gpus) > 0
    return [
        {"OMP_NUM_THREADS": threads, **({"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} if shard else {})}
        for i in range(jobs)
    ]


#: ``prctl`` option: the signal a process gets when its parent exits (Linux).
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Have this process killed when ``parent`` exits, even by SIGKILL, so that a worker does not
    go on training (and holding its runs' locks) as an orphan: Linux's parent-death signal, else a
    thread that watches the parent's pid."""
    if sys.platform.startswith("linux"):
        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl
            armed = prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), *[ctypes.c_ulong(0)] * 3) == 0
        except (OSError, AttributeError):
            armed = False
        if armed:
            if os.getppid() != parent:  # it died before the signal was armed
                os.kill(os.getpid(), signal.SIGKILL)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _worker(cfgs, opts: TrainOptions, env: dict[str, str], position: int, parent: int, reply) -> None:
    """A worker process: train one population and send back None or the message of its failure."""
    die_with_parent(parent)
    # a fresh process (spawned): CUDA has not started yet, so the GPU choice still takes effect
    os.environ.update(env)
    import torch

    torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    try:
        train_population(cfgs, opts, bar_position=position)
    except Exception as err:
        reply.send(describe_error(cfgs, err))
    else:
        reply.send(None)
    reply.close()


_NO_REPLY = object()


class _Running:
    """A worker process training one population, and what it sent back."""

    def __init__(self, context, cfgs, opts: TrainOptions, env: dict, slot: int, line: int):
        self.cfgs, self.slot, self.message = cfgs, slot, _NO_REPLY
        self.replies, send = context.Pipe(duplex=False)
        args = (cfgs, opts, env, line, os.getpid(), send)
        self.process = context.Process(target=_worker, args=args, name=f"lop_core worker {slot}")
        self.process.start()
        send.close()

    def read(self) -> None:
        """Take the worker's reply if it has come (or the pipe has closed without one)."""
        if self.replies.closed or not self.replies.poll():
            return
        with contextlib.suppress(EOFError, OSError):  # else it died without replying
            self.message = self.replies.recv()
        self.replies.close()

    def outcome(self) -> str | None:
        """None if the population trained, else one message (the worker's, or how it died)."""
        self.read()
        self.replies.close()
        if self.message is not _NO_REPLY:
            return self.message
        code = self.process.exitcode
        try:
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        except ValueError:
            how = f"signal {-code}"
        return (
            f"{population_label(self.cfgs)}: worker process died ({how}, e.g. killed or out of memory); "
            "run the command again to resume it"
        )


def _run_workers(populations, opts: TrainOptions, jobs: int, finished, first_line: int | None) -> None:
    """Train ``populations`` in ``jobs`` worker processes at a time, a fresh process per population.

    A worker that dies (``kill -9``, the out-of-memory killer) fails its own population only: the
    others go on, and the queued ones still start. Workers die with this process (``die_with_parent``).
    """
    context = multiprocessing.get_context("spawn")
    envs = worker_envs(jobs, opts.device)
    queue, free, running = list(populations), list(range(jobs)), []
    try:
        while queue or running:
            while queue and free:
                slot = free.pop(0)
                line = (first_line or 0) + slot
                running.append(_Running(context, queue.pop(0), opts, envs[slot], slot, line))
            pipes = [r.replies for r in running if not r.replies.closed]
            ready = wait([r.process.sentinel for r in running] + pipes)
            for job in list(running):
                if job.replies in ready:
                    job.read()  # before it exits: a long message would block it
                if job.process.sentinel in ready:
                    job.process.join()
                    running.remove(job)
                    free.append(job.slot)
                    finished(job.cfgs, job.outcome())
                    job.process.close()
    finally:  # interrupted: a Ctrl-C reaches the workers too; give them a moment to stop, then kill them
        deadline = time.time() + 5
        for job in running:
            job.process.join(max(0.0, deadline - time.time()))
        for job in running:
            if job.process.is_alive():
                job.process.kill()
                job.process.join()


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
        One message per population that failed, its worker's death included (the others still ran).
    """
    errors: list[str] = []

    def finished(cfgs, message: str | None) -> None:
        if message is not None:
            errors.append(message)
        if on_done is not None:
            on_done(cfgs)

    if jobs <= 1 or len(populations) <= 1:
        import torch

        torch.set_num_threads(training_threads())
        for cfgs in populations:
            try:
                train_population(cfgs, opts, bar_position=first_line)
            except EXPECTED as err:
                finished(cfgs, describe_error(cfgs, err))
            else:
                finished(cfgs, None)
        return errors
    _run_workers(populations, opts, jobs, finished, first_line)
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
