import json

import pandas as pd
import pytest

from lop_core import config, experiment, runs
from lop_core.runs import RunError
from lop_core.train import Population


def _cfgs(seeds, **kw):
    return [config.resolve("permuted_mnist", "smoke", seed=s, **kw) for s in seeds]


def test_run_or_load_writes_the_run_folder(tmp_path, data_root):
    cfgs = _cfgs([0, 1])
    summary = experiment.run_or_load(cfgs, runs_dir=tmp_path, data_root=data_root, progress=False)
    assert list(summary.seed) == [0, 1]
    for cfg in cfgs:
        path = runs.run_path(cfg, tmp_path)
        assert path.parent == tmp_path / "permuted_mnist"
        assert {p.name for p in path.iterdir()} == {
            "config.json",
            "meta.json",
            "metrics.csv.gz",
            "summary.json",
            "DONE",
        }
        saved = json.loads((path / "config.json").read_text())
        assert saved == cfg.to_dict()
        s = json.loads((path / "summary.json").read_text())
        for key in ("benchmark", "method", "preset", "seed", "status", "mean_online_accuracy"):
            assert key in s
        assert s["status"] == "done" and 0.1 < s["mean_online_accuracy"] <= 1.0
        meta = json.loads((path / "meta.json").read_text())
        assert meta["status"] == "done" and meta["wall_s"] > 0 and meta["torch"]
        # DONE is written after everything else
        assert (path / "DONE").stat().st_mtime_ns >= max(p.stat().st_mtime_ns for p in path.iterdir())
        df = pd.read_csv(path / "metrics.csv.gz")
        assert list(df.columns) == ["task", "metric", "layer", "value"]
        assert sorted(df[df.metric == "online_accuracy"].task) == list(range(cfg.num_tasks))
    assert not (tmp_path / "permuted_mnist" / ".checkpoints").exists() or not any(
        (tmp_path / "permuted_mnist" / ".checkpoints").iterdir()
    )


def test_finished_runs_are_not_trained_again(tmp_path, data_root, monkeypatch):
    cfgs = _cfgs([0])
    experiment.run_or_load(cfgs, runs_dir=tmp_path, data_root=data_root, progress=False)

    def boom(*a, **k):
        raise AssertionError("trained a finished run")

    monkeypatch.setattr(experiment, "make_trainer", boom)
    experiment.run_or_load(cfgs, runs_dir=tmp_path, data_root=data_root, progress=False)


@pytest.mark.parametrize(
    ("method", "overrides"),
    [
        ("base", {}),
        ("base", {"optimizer": "adamw", "step_size": 0.001, "momentum": 0.9}),
        ("cbp", {"replacement_rate": 0.01, "maturity_threshold": 5}),
        ("swr", {"reinit_freq": 8, "reinit_factor": 0.01, "pruning": "proportional"}),
        ("redo", {"reinit_frequency": 8, "dormant_threshold": 0.1}),
        ("shrink_perturb", {"l2_factor": 1e-3, "noise_variance": 1e-4}),
        ("l2_init", {"l2_init_factor": 0.01}),
        ("reset", {}),
    ],
)
def test_resume_from_checkpoint_gives_the_same_numbers(tmp_path, data_root, monkeypatch, method, overrides):
    # every method's state, generators included, must survive the checkpoint
    cfgs = _cfgs([2, 4], num_tasks=4, method=method, width=10, examples_per_task=300, **overrides)
    straight = tmp_path / "straight"
    experiment.run_or_load(cfgs, runs_dir=straight, data_root=data_root, progress=False)

    interrupted = tmp_path / "interrupted"
    real = Population.train_task
    calls = {"n": 0}

    def dying(self):
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed after two tasks
        calls["n"] += 1
        return real(self)

    monkeypatch.setattr(Population, "train_task", dying)
    with pytest.raises(KeyboardInterrupt):
        experiment.run_or_load(
            cfgs, runs_dir=interrupted, data_root=data_root, progress=False, checkpoint_every=0
        )
    assert not any(runs.is_done(runs.run_path(c, interrupted)) for c in cfgs)
    monkeypatch.setattr(Population, "train_task", real)
    experiment.run_or_load(cfgs, runs_dir=interrupted, data_root=data_root, progress=False)
    for c in cfgs:
        a = runs.run_path(c, straight) / "metrics.csv.gz"
        b = runs.run_path(c, interrupted) / "metrics.csv.gz"
        assert a.read_bytes() == b.read_bytes()
        meta = json.loads((runs.run_path(c, interrupted) / "meta.json").read_text())
        assert meta["resumed_at"] == "task 2"


def test_load_names_the_command_for_missing_runs(tmp_path):
    with pytest.raises(RunError, match="python -m lop_core sweep a1"):
        runs.load(_cfgs([0]), tmp_path, command="python -m lop_core sweep a1 --preset smoke")


def test_corrupt_run_folder_is_reported(tmp_path, data_root):
    cfgs = _cfgs([0])
    experiment.run_or_load(cfgs, runs_dir=tmp_path, data_root=data_root, progress=False)
    path = runs.run_path(cfgs[0], tmp_path)
    (path / "metrics.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(RunError, match="corrupt"):
        runs.load(cfgs, tmp_path)
    (path / "DONE").unlink()
    with pytest.raises(RunError, match="missing or unfinished"):
        runs.load(cfgs, tmp_path)
