"""Runs survive being killed: a real process killed with SIGKILL resumes to the same numbers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lop_core import config, experiment, progress, runs
from lop_core.errors import RunError

REPO = Path(__file__).resolve().parents[1]


def _cfgs(seeds, **kw):
    kw = {"width": 10, "num_tasks": 2, "examples_per_task": 300, **kw}
    return [config.resolve("permuted_mnist", "smoke", seed=s, **kw) for s in seeds]


def _command(runs_dir, data_root, *extra):
    # cbp: method state (utilities, ages, a heap of maturing units) and random draws to restore
    sets = [
        "width=10",
        "num_tasks=60",
        "examples_per_task=600",
        "replacement_rate=0.01",
        "maturity_threshold=5",
    ]
    argv = [sys.executable, "-m", "lop_core", "run", "permuted_mnist", "--preset", "smoke", "--method", "cbp"]
    argv += [arg for s in sets for arg in ("--set", s)]
    return argv + [
        "--seeds",
        "0-1",
        "--runs-dir",
        str(runs_dir),
        "--data",
        str(data_root),
        "--no-progress",
        *extra,
    ]


def test_a_run_killed_with_sigkill_resumes_to_the_same_numbers(tmp_path, data_root):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_command(straight, data_root), env=env, cwd=REPO, check=True, capture_output=True)

    proc = subprocess.Popen(
        _command(killed, data_root, "--checkpoint-every", "0"),  # a checkpoint at every task boundary
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = killed / "permuted_mnist" / ".checkpoints"
    deadline = time.time() + 300
    while not list(checkpoints.glob("*.pt")):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.005)
    time.sleep(0.1)  # somewhere in a later task, or in the middle of writing a checkpoint
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    folders = sorted((killed / "permuted_mnist").glob("cbp-*"))
    assert len(folders) == 2 and not any(runs.is_done(f) for f in folders)

    again = subprocess.run(_command(killed, data_root), env=env, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    for folder in folders:
        twin = straight / "permuted_mnist" / folder.name
        assert (folder / "metrics.csv.gz").read_bytes() == (twin / "metrics.csv.gz").read_bytes()
        assert json.loads((folder / "summary.json").read_text()) == json.loads(
            (twin / "summary.json").read_text()
        )
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["status"] == "done" and meta["resumed_at"].startswith("task ")
    assert not list(checkpoints.iterdir())  # checkpoint, locks and interrupted writes are cleaned up


def test_an_unreadable_checkpoint_is_refused_before_anything_is_written(tmp_path, data_root):
    cfgs = _cfgs([0])
    ckpt = progress.population_checkpoint(cfgs, tmp_path)
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"half a checkpoint")
    with pytest.raises(RunError, match="is not a valid checkpoint.*delete it and run again"):
        experiment.run_or_load(cfgs, runs_dir=tmp_path, data_root=data_root, progress=False)
    assert not runs.run_path(cfgs[0], tmp_path).exists()


class Payload:
    """Anything but tensors and plain containers: ``weights_only=True`` must refuse to build it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_is_loaded_with_weights_only(tmp_path, data_root):
    cfgs = _cfgs([0])
    ckpt = progress.population_checkpoint(cfgs, tmp_path)
    ckpt.parent.mkdir(parents=True)
    torch.save({"population": Payload(tmp_path / "pwned"), "wall_s": 0.0}, ckpt)
    with pytest.raises(RunError, match="is not a valid checkpoint \\(UnpicklingError\\)"):
        experiment.run_or_load(cfgs, runs_dir=tmp_path, data_root=data_root, progress=False)
    assert not (tmp_path / "pwned").exists()
    assert not runs.run_path(cfgs[0], tmp_path).exists()


def test_a_checkpoint_of_other_runs_is_refused(tmp_path, data_root):
    cfgs = _cfgs([0, 1])
    ckpt = progress.population_checkpoint(cfgs, tmp_path)
    progress.save_checkpoint(ckpt, {"population": {"task": 1}, "wall_s": 1.0})
    with pytest.raises(RunError, match="does not fit"):
        experiment.run_or_load(cfgs, runs_dir=tmp_path, data_root=data_root, progress=False)


def test_checkpoint_interval(monkeypatch):
    assert experiment.checkpoint_interval(5) == 5.0
    monkeypatch.setenv("LOP_CHECKPOINT_EVERY", "7")
    assert experiment.checkpoint_interval() == 7.0
    monkeypatch.delenv("LOP_CHECKPOINT_EVERY")
    assert experiment.checkpoint_interval() == experiment.CHECKPOINT_EVERY
    for bad in (-1, "soon", float("nan")):
        with pytest.raises(config.ConfigError, match="checkpoint interval"):
            experiment.checkpoint_interval(bad)


def test_a_population_killed_between_its_done_markers_resumes_whole(tmp_path, data_root, monkeypatch):
    cfgs = _cfgs([0, 1], num_tasks=3)
    kw = {"data_root": data_root, "progress": False, "checkpoint_every": 0}
    experiment.run_or_load(cfgs, runs_dir=tmp_path / "straight", **kw)
    real_finalize, real_make = runs.finalize, experiment.make_trainer
    done = []

    def dying(path):
        if done:
            raise KeyboardInterrupt  # killed right after the first DONE
        done.append(path)
        real_finalize(path)

    monkeypatch.setattr(runs, "finalize", dying)
    with pytest.raises(KeyboardInterrupt):
        experiment.run_or_load(cfgs, runs_dir=tmp_path / "killed", **kw)
    monkeypatch.setattr(runs, "finalize", real_finalize)
    assert [runs.is_done(runs.run_path(c, tmp_path / "killed")) for c in cfgs] == [True, False]
    trained = []
    monkeypatch.setattr(
        experiment, "make_trainer", lambda c, **k: trained.append(len(c)) or real_make(c, **k)
    )
    experiment.run_or_load(cfgs, runs_dir=tmp_path / "killed", **kw)
    assert trained == [2]  # the population it was, from its checkpoint, not the one run left alone
    for c in cfgs:
        a, b = (runs.run_path(c, tmp_path / d) / "metrics.csv.gz" for d in ("straight", "killed"))
        assert a.read_bytes() == b.read_bytes()
    assert not list((tmp_path / "killed" / "permuted_mnist" / ".checkpoints").iterdir())
