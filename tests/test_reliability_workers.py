"""``sweep --jobs N`` survives a dead worker, and its workers do not outlive a killed parent."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lop_core import config, locks, runs

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _sweep(tmp_path, entries: list[dict]):
    """A one-seed smoke sweep file of ``entries`` and the configs of its populations, in order."""
    path = tmp_path / "jobs.yaml"
    lines = ["benchmark: permuted_mnist", "seeds: {smoke: 0}", "entries:"]
    lines += ["  - {" + ", ".join(f"{k}: {v}" for k, v in e.items()) + "}" for e in entries]
    path.write_text("\n".join(lines) + "\n")
    return path, [config.resolve("permuted_mnist", "smoke", **e) for e in entries]


def _start(sweep_file, runs_dir, data_root) -> subprocess.Popen:
    argv = [sys.executable, "-m", "lop_core", "sweep", str(sweep_file), "--preset", "smoke", "--jobs", "2"]
    argv += ["--runs-dir", str(runs_dir), "--data", str(data_root), "--no-progress"]
    return subprocess.Popen(
        argv, env=ENV, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _holder(cfg, runs_dir, proc, deadline) -> int:
    """The pid of the process training ``cfg`` (written in its lock), once it trains."""
    folder = runs.run_path(cfg, runs_dir)
    while not (folder / "meta.json").exists():  # written under the lock, just before training
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the worker never started training"
        time.sleep(0.05)
    return int(locks.lock_path(folder).read_text().split("@")[0])


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie trains nothing and holds no lock


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_a_dead_worker_is_named_and_the_other_populations_still_train(tmp_path, data_root):
    slow = {"width": 10, "num_tasks": 10**6, "examples_per_task": 600}  # killed long before its end
    sweep_file, (doomed, other, queued) = _sweep(
        tmp_path,
        [slow, {"width": 12, "num_tasks": 200, "examples_per_task": 300}, {"width": 14, "num_tasks": 2}],
    )
    proc = _start(sweep_file, tmp_path / "runs", data_root)
    try:
        worker = _holder(doomed, tmp_path / "runs", proc, time.time() + 300)
        _holder(other, tmp_path / "runs", proc, time.time() + 300)  # both workers train
        os.kill(worker, signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and runs.run_name(doomed) in lines[0], err
    assert "worker process died" in lines[0] and "SIGKILL" in lines[0]
    assert runs.is_done(runs.run_path(other, tmp_path / "runs")), err  # not killed with it
    assert runs.is_done(runs.run_path(queued, tmp_path / "runs")), err  # started after it
    assert runs.run_state(runs.run_path(doomed, tmp_path / "runs")) == "partial"


def test_workers_die_with_a_killed_parent_and_free_their_locks(tmp_path, data_root):
    slow = {"num_tasks": 10**6, "examples_per_task": 600}  # never ends by itself
    sweep_file, cfgs = _sweep(tmp_path, [{"width": 10, **slow}, {"width": 12, **slow}])
    proc = _start(sweep_file, tmp_path / "runs", data_root)
    workers = []
    try:
        workers = [_holder(c, tmp_path / "runs", proc, time.time() + 300) for c in cfgs]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while any(_alive(pid) for pid in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), "the workers outlived their parent"
        paths = [runs.run_path(c, tmp_path / "runs") for c in cfgs]
        while any(runs.run_state(p) == "running" for p in paths) and time.time() < deadline + 20:
            time.sleep(0.2)  # a loaded machine may take a moment to close a killed process's files
        assert [runs.run_state(p) for p in paths] == ["partial", "partial"]
        with locks.locked(paths):  # what the re-run does first: it is not refused
            pass
    finally:
        proc.kill()
        for pid in workers:
            _kill(pid)
