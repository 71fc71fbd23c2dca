"""One process per run: a second process started on a run that is training stops at once."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lop_core import config, experiment, locks, runs
from lop_core.errors import RunLocked

REPO = Path(__file__).resolve().parents[1]


def _cfgs(seeds, **kw):
    kw = {"width": 10, "num_tasks": 2, "examples_per_task": 300, **kw}
    return [config.resolve("permuted_mnist", "smoke", seed=s, **kw) for s in seeds]


def test_a_held_run_is_refused_and_nothing_is_written(tmp_path, data_root):
    cfgs = _cfgs([0, 1])
    with locks.locked([runs.run_path(cfgs[1], tmp_path)]):
        with pytest.raises(RunLocked, match="being trained by another process"):
            experiment.run_or_load(cfgs, runs_dir=tmp_path, data_root=data_root, progress=False)
        assert not any(runs.run_path(c, tmp_path).exists() for c in cfgs)
        assert not locks.lock_path(runs.run_path(cfgs[0], tmp_path)).exists()  # the one it took is freed
        assert runs.run_state(runs.run_path(cfgs[1], tmp_path)) == "running"
    assert runs.run_state(runs.run_path(cfgs[1], tmp_path)) == "missing"
    experiment.run_or_load(cfgs, runs_dir=tmp_path, data_root=data_root, progress=False)
    assert all(runs.is_done(runs.run_path(c, tmp_path)) for c in cfgs)


def test_a_child_may_train_under_its_parents_locks(tmp_path, monkeypatch):
    path = runs.run_path(_cfgs([0])[0], tmp_path)
    with locks.locked([path]) as owner:
        monkeypatch.setenv(locks.LOCK_OWNER_ENV, "someone else")
        with pytest.raises(RunLocked), locks.locked([path]):
            pass
        monkeypatch.setenv(locks.LOCK_OWNER_ENV, owner)
        with locks.locked([path]):  # what the experiment notebook's kernel does
            assert locks.is_locked(path)
        assert locks.is_locked(path)  # the child does not release the parent's lock
    assert not locks.is_locked(path) and not locks.lock_path(path).exists()


def test_a_second_process_on_a_training_run_stops_at_once(tmp_path, data_root):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "lop_core", "run", "permuted_mnist", "--preset", "smoke", "--no-progress"]
    argv += ["--set", "width=10", "--set", "num_tasks=5000", "--set", "examples_per_task=600"]
    argv += ["--runs-dir", str(tmp_path), "--data", str(data_root)]
    first = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = runs.run_path(
        config.resolve("permuted_mnist", "smoke", width=10, num_tasks=5000, examples_per_task=600), tmp_path
    )
    try:
        deadline = time.time() + 300
        while not (folder / "meta.json").exists():  # written under the lock
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.01)
        before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
        started = time.time()
        second = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True)
        assert second.returncode == 2
        assert "being trained by another process" in second.stderr and folder.name in second.stderr
        assert first.poll() is None, "the first process ended before the second one was refused"
        assert time.time() - started < 60
        assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before  # the second wrote nothing
    finally:
        first.kill()  # 5,000 tasks: it would outlive the test
        first.wait()
