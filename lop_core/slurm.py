"""A sweep on a Slurm cluster through submitit: its populations as the tasks of a job array.

Every array task trains ``per_job`` populations at once on the GPUs Slurm gives it (through
``executors.run_local``), so small populations can share a GPU. A task that reaches its time limit
or is preempted is requeued by submitit and resumes from its populations' checkpoints. The
repository, its virtual environment, the data root and the run store must be on a file system
the compute nodes share; the run locks then keep two tasks (or two sweeps) off the same run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import submitit

from lop_core import runs
from lop_core.executors import TrainOptions, run_local


class PopulationsJob(submitit.helpers.Checkpointable):
    """One array task: train some populations; on a timeout or preemption, requeue with the same
    arguments (``Checkpointable``), which resumes them from their checkpoints."""

    def __call__(self, populations, opts: TrainOptions, jobs: int) -> int:
        errors = run_local(populations, opts, jobs)
        if errors:
            raise RuntimeError("\n".join(errors))
        return len(populations)


def submit(
    populations,
    opts: TrainOptions,
    partition: str | None = None,
    time_min: int = 24 * 60,
    gpus_per_node: int | None = None,
    cpus_per_task: int | None = None,
    mem_gb: float | None = None,
    per_job: int = 1,
    parallel: int | None = None,
    folder=None,
    wait: bool = True,
    poll_s: float = 30.0,
    cluster: str = "slurm",
    on_done=None,
) -> list[str]:
    """Submit ``populations`` as one job array and, with ``wait``, follow it to the end.

    Args:
        populations: lists of configs, every one with a missing run.
        opts: how each population is trained.
        partition: Slurm partition (``--partition``); None: the cluster's default.
        time_min: time limit of an array task in minutes (it is requeued when reached).
        gpus_per_node: GPUs per array task.
        cpus_per_task: CPU cores per array task.
        mem_gb: memory per array task.
        per_job: populations per array task, trained at once on its GPUs (packs small ones).
        parallel: most array tasks running at once (``--array=...%parallel``).
        folder: submitit's logs and pickles (default: ``<runs>/.submitit``).
        wait: follow the jobs until they end (else return right after submitting).
        poll_s: seconds between looks at the jobs' states.
        cluster: submitit's executor: ``slurm``; ``local`` runs the same path on this machine.
        on_done: called with each population when its array task has ended.

    Returns:
        One message per array task that failed (none when not waiting).
    """
    folder = Path(folder or runs.default_runs_dir(opts.runs_dir) / ".submitit")
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    params = {
        "name": "lop_core-sweep",
        "timeout_min": int(time_min),
        "gpus_per_node": gpus_per_node,
        "cpus_per_task": cpus_per_task,
        "mem_gb": mem_gb,
        "slurm_partition": partition,
        "slurm_array_parallelism": parallel,
    }
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    chunks = [populations[i : i + per_job] for i in range(0, len(populations), per_job)]
    if not chunks:
        return []
    jobs = executor.map_array(PopulationsJob(), chunks, [opts] * len(chunks), [per_job] * len(chunks))
    print(
        f"submitted {len(jobs)} {cluster} job(s) ({jobs[0].job_id.split('_')[0]}); logs in {folder}",
        file=sys.stderr,
    )
    if not wait:
        return []
    errors = []
    pending = dict(zip(jobs, chunks, strict=True))
    while pending:
        for job in [j for j in pending if j.done()]:
            chunk = pending.pop(job)
            try:
                job.result()
            except Exception as err:  # submitit's FailedJobError and the job's own exception
                errors.append(f"job {job.job_id} ({len(chunk)} populations): {err}")
            for cfgs in chunk:
                if on_done is not None:
                    on_done(cfgs)
        if pending:
            time.sleep(poll_s)
    return errors
