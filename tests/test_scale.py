"""Sweeps scale out: local worker processes, Slurm through submitit, and a status table."""

import json

import pytest

from lop_core import executors, locks, runs, slurm, sweep
from lop_core.cli import main

SWEEP = """\
benchmark: permuted_mnist
seeds: {smoke: 0-1}
entries:
  - {method: base, width: 10, num_tasks: 2, examples_per_task: 300}
  - {method: l2, width: 12, num_tasks: 2, examples_per_task: 300, l2_factor: 1.0e-3}
"""


@pytest.fixture
def sweep_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweeps") / "tiny.yaml"
    path.write_text(SWEEP)
    return path


def _metrics(runs_dir, populations):
    return {
        runs.run_path(c, runs_dir).name: (runs.run_path(c, runs_dir) / "metrics.csv.gz").read_bytes()
        for cfgs in populations
        for c in cfgs
    }


def test_worker_environments_shard_gpus_and_share_cores():
    envs = executors.worker_envs(5, "auto", gpus=["0", "3"], cpus=16)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "3", "0", "3", "0"]  # 3 jobs pack GPU 0
    assert {e["OMP_NUM_THREADS"] for e in envs} == {"3"}
    assert all("CUDA_VISIBLE_DEVICES" not in e for e in executors.worker_envs(2, "cpu", gpus=["0"], cpus=4))
    assert all("CUDA_VISIBLE_DEVICES" not in e for e in executors.worker_envs(2, "auto", gpus=[], cpus=4))
    assert executors.worker_envs(4, "cuda:1", gpus=["0", "1"], cpus=2) == [{"OMP_NUM_THREADS": "1"}] * 4


def test_local_jobs_make_the_numbers_of_one_process(tmp_path, sweep_file, data_root):
    populations = sweep.expand(sweep_file, "smoke")
    assert len(populations) == 2
    common = ["--preset", "smoke", "--data", str(data_root), "--no-progress"]
    assert main(["sweep", str(sweep_file), *common, "--runs-dir", str(tmp_path / "one")]) == 0
    assert main(["sweep", str(sweep_file), *common, "--runs-dir", str(tmp_path / "two"), "--jobs", "2"]) == 0
    assert _metrics(tmp_path / "one", populations) == _metrics(tmp_path / "two", populations)


def test_submitit_jobs_train_the_sweep_and_report_failures(tmp_path, sweep_file, data_root):
    populations = sweep.expand(sweep_file, "smoke")
    opts = executors.TrainOptions(runs_dir=str(tmp_path), data_root=str(data_root), progress=False)
    blocked = runs.run_path(populations[1][0], tmp_path)
    finished = []
    with locks.locked([blocked]):  # another process is training one run of the second population
        errors = slurm.submit(
            populations, opts, cluster="local", folder=tmp_path / "logs", poll_s=0.2, on_done=finished.append
        )
    assert len(errors) == 1 and "being trained by another process" in errors[0]
    assert len(finished) == 2 and all(p in finished for p in populations)  # in the order they end
    assert all(runs.is_done(runs.run_path(c, tmp_path)) for c in populations[0])
    assert not runs.is_done(blocked)
    # started again, the failed population resumes
    assert slurm.submit(populations[1:], opts, cluster="local", folder=tmp_path / "logs", poll_s=0.2) == []
    assert all(runs.is_done(runs.run_path(c, tmp_path)) for cfgs in populations for c in cfgs)


class FakeExecutor:
    """Stands in for submitit's AutoExecutor: records what would reach Slurm."""

    seen: dict = {}

    def __init__(self, folder, cluster):
        FakeExecutor.seen = {"folder": str(folder), "cluster": cluster}

    def update_parameters(self, **params):
        FakeExecutor.seen["params"] = params

    def map_array(self, fn, chunks, opts, jobs):
        FakeExecutor.seen.update(chunks=chunks, per_job=jobs, opts=opts[0])
        return [type("Job", (), {"job_id": f"42_{i}"})() for i in range(len(chunks))]


def test_slurm_options_reach_submitit(tmp_path, sweep_file, monkeypatch, capsys):
    monkeypatch.setattr(slurm.submitit, "AutoExecutor", FakeExecutor)
    argv = ["sweep", str(sweep_file), "--preset", "smoke", "--runs-dir", str(tmp_path), "--executor", "slurm"]
    argv += ["--partition", "gpu", "--time", "90", "--gpus-per-node", "1", "--cpus-per-task", "4"]
    argv += ["--mem-gb", "16", "--per-job", "2", "--jobs", "8", "--no-wait", "--checkpoint-every", "60"]
    assert main(argv) == 0
    seen = FakeExecutor.seen
    assert seen["cluster"] == "slurm" and seen["folder"] == str(tmp_path / ".submitit" / "%j")
    assert seen["params"] == {
        "name": "lop_core-sweep",
        "timeout_min": 90,
        "gpus_per_node": 1,
        "cpus_per_task": 4,
        "mem_gb": 16.0,
        "slurm_partition": "gpu",
        "slurm_array_parallelism": 8,
    }
    assert [len(chunk) for chunk in seen["chunks"]] == [2] and seen["per_job"] == [2]
    assert seen["opts"].checkpoint_every == 60.0 and seen["opts"].runs_dir == str(tmp_path)
    assert "submitted 1 slurm job(s) (42)" in capsys.readouterr().err
    assert not (tmp_path / "permuted_mnist").exists()  # nothing trained here


def test_status_counts_every_state(tmp_path, sweep_file, data_root, capsys):
    base, l2 = sweep.expand(sweep_file, "smoke")
    from lop_core.experiment import run_or_load

    run_or_load(base[:1], runs_dir=tmp_path, data_root=data_root, progress=False)  # done
    partial = runs.run_path(base[1], tmp_path)
    partial.mkdir(parents=True)
    (partial / "config.json").write_text(json.dumps(base[1].to_dict()))
    diverged = runs.run_path(l2[0], tmp_path)
    diverged.mkdir(parents=True)
    (diverged / "config.json").write_text(json.dumps(l2[0].to_dict()))  # what a diverged run has
    runs.write_results(diverged, [], {"status": "diverged", "diverged_step": 3}, {"status": "diverged"})
    runs.finalize(diverged)
    with locks.locked([runs.run_path(l2[1], tmp_path)]):  # running
        assert main(["status", str(sweep_file), "--preset", "smoke", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4 runs in 2 population(s): 1 done, 1 diverged, 1 running, 1 partial" in out
    table = sweep.status([sweep_file], "smoke", tmp_path)
    assert list(table.population) == [
        "base width=10 num_tasks=2 examples_per_task=300",
        "l2 width=12 num_tasks=2 examples_per_task=300",
    ]
    assert table[["done", "partial", "missing"]].values.tolist() == [[1, 1, 0], [0, 0, 1]]
    assert not locks.lock_path(partial).exists()  # status never leaves a lock behind


def test_an_entry_can_change_its_grid_at_one_preset(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(
        "benchmark: permuted_mnist\nseeds: {smoke: 0, quick: 0-1}\npresets: {smoke: {num_tasks: 2}}\n"
        "entries:\n"
        "  - {method: swr, width: 10, reinit_factor: [1.0e-6, 1.0e-5, 1.0e-4],\n"
        "     presets: {smoke: {reinit_factor: [1.0e-3, 1.0e-2], num_tasks: 4}}}\n"
        "  - {method: base, width: 10}\n"
    )
    swr, base = sweep.expand(path, "smoke")
    assert [c.method_args["reinit_factor"] for c in swr] == [1e-3, 1e-2]
    assert {c.num_tasks for c in swr} == {4} and {c.num_tasks for c in base} == {2}
    (both,) = sweep.expand(path, "quick")  # one setting at quick: one population of both methods
    swr = [c for c in both if c.method == "swr"]
    assert sorted({c.method_args["reinit_factor"] for c in swr}) == [1e-6, 1e-5, 1e-4] and len(swr) == 6
    assert [c.method for c in both] == ["swr"] * 6 + ["base"] * 2
    path.write_text(path.read_text().replace("presets: {smoke: {reinit", "presets: {smok: {reinit"))
    with pytest.raises(sweep.ConfigError, match="unknown presets"):
        sweep.expand(path, "smoke")


def test_training_takes_the_free_cores_only(monkeypatch):
    """With a core kept busy by another process, training takes one thread, not one per core."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(executors.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(executors.os, "getloadavg", lambda: (1.2, 1.0, 1.0))
    assert executors.free_cores() == 1 and executors.training_threads() == 1
    assert executors.worker_envs(2, "cpu", gpus=[])[0]["OMP_NUM_THREADS"] == "1"
    monkeypatch.setattr(executors.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert executors.training_threads() == 2 and executors.training_threads(jobs=2) == 1
    monkeypatch.setattr(executors.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert executors.training_threads() == 1  # never fewer than one
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert executors.training_threads() == 2  # the user's choice wins
