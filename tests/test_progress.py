"""Checkpoints landed in the repository: compact, resumable from a fresh clone, listed by status."""

import shutil

import pytest
import torch

from lop_core import experiment, progress, runs, sweep
from lop_core.train import Population


def test_rows_pack_into_tensors_and_unpack_to_the_same_values():
    rows = [
        (0, "online_accuracy", "all", 0.1 + 1e-17),
        (0, "dead_fraction", "1", 1 / 3),
        (1, "x", "all", -0.0),
    ]
    state = {"population": {"rows": [rows, []], "task": 2, "model": torch.ones(2)}, "wall_s": 3.5}
    packed = progress.pack_rows(state)
    assert isinstance(packed["population"]["rows"][0]["value"], torch.Tensor)
    assert packed["population"]["rows"][1] == [] and packed["population"]["task"] == 2
    back = progress.unpack_rows(packed)
    assert back["population"]["rows"][0] == rows  # exact floats, same order
    assert torch.equal(back["population"]["model"], torch.ones(2))
    assert progress.pack_rows([(1, 2, 3, 4)]) == [(1, 2, 3, 4)]  # not metric rows: left alone


SWEEP = """benchmark: permuted_mnist
seeds: {smoke: 0-1}
entries:
  - {method: cbp, width: 10, num_tasks: 3, examples_per_task: 300, maturity_threshold: 2}
"""


class _Stop(Exception):
    pass


def test_a_landed_checkpoint_resumes_in_a_fresh_clone_to_the_same_numbers(tmp_path, data_root, monkeypatch):
    (tmp_path / "s.yaml").write_text(SWEEP)
    (cfgs,) = sweep.expand(tmp_path / "s.yaml", "smoke")
    kw = {"data_root": data_root, "progress": False, "checkpoint_every": 0}
    experiment.run_or_load(cfgs, runs_dir=tmp_path / "straight", **kw)

    real, calls = Population.train_task, []

    def stop_after_one(self):
        if calls:
            raise _Stop
        calls.append(1)
        return real(self)

    monkeypatch.setattr(Population, "train_task", stop_after_one)
    with pytest.raises(_Stop):
        experiment.run_or_load(cfgs, runs_dir=tmp_path / "machine", land_progress=True, **kw)
    monkeypatch.undo()
    landed = progress.landed_checkpoint(cfgs, tmp_path / "machine")
    assert landed.is_file() and landed.read_bytes()[:2] == b"\x1f\x8b"  # gzip
    assert not progress.population_checkpoint(cfgs, tmp_path / "machine").exists()
    table = sweep.status([tmp_path / "s.yaml"], "smoke", tmp_path / "machine")
    assert table.progress.iloc[0].startswith("task 1 of 3, ") and table.progress.iloc[0].endswith("(landed)")
    assert table.partial.iloc[0] == 2 and table.done.iloc[0] == 0

    # a fresh clone: what git tracks (no .checkpoints/, no locks), on another path
    clone = tmp_path / "clone"
    shutil.copytree(tmp_path / "machine", clone, ignore=shutil.ignore_patterns(".checkpoints"))
    experiment.run_or_load(cfgs, runs_dir=clone, **kw)
    for c in cfgs:
        mine, twin = runs.run_path(c, clone), runs.run_path(c, tmp_path / "straight")
        assert runs.is_done(mine)
        assert (mine / "metrics.csv.gz").read_bytes() == (twin / "metrics.csv.gz").read_bytes()
    assert not progress.landed_checkpoint(cfgs, clone).exists()  # gone once the population is done
