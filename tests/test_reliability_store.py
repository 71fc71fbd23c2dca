"""The run store under damage: corrupt files, failed writes, leftovers of kills, finished sweeps."""

import errno
import json
import os
import random
import shutil

import pytest
import torch

from lop_core import experiment, locks, notebooks, progress, runs, sweep
from lop_core.cli import main
from lop_core.errors import RunError

SWEEP = """benchmark: permuted_mnist
seeds: {smoke: 0-1}
presets: {smoke: {num_tasks: 1, examples_per_task: 300}}
entries:
  - {method: base, width: 10}
  - {method: base, width: 12}
"""
QUIET = ["--preset", "smoke", "--no-progress"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_root):
    """A sweep file and a store in which all its runs are done (copy it before changing it)."""
    root = tmp_path_factory.mktemp("finished")
    (root / "two.yaml").write_text(SWEEP)
    assert (
        main(
            [
                "sweep",
                str(root / "two.yaml"),
                *QUIET,
                "--runs-dir",
                str(root / "runs"),
                "--data",
                str(data_root),
            ]
        )
        == 0
    )
    return root / "two.yaml", root / "runs"


@pytest.fixture
def store(finished, tmp_path):
    sweep_file, runs_dir = finished
    shutil.copytree(runs_dir, tmp_path / "runs")
    return sweep_file, tmp_path / "runs"


def _paths(sweep_file, runs_dir):
    return [runs.run_path(c, runs_dir) for p in sweep.expand(sweep_file, "smoke") for c in p]


def _flip(path, start=12, count=23):
    """XOR ``count`` bytes of ``path`` from ``start`` (inside a gzip file's deflate stream)."""
    data = bytearray(path.read_bytes())
    for i in range(start, min(start + count, len(data) - 8)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# D3: a finished sweep needs no data, and --notebook starts no notebook for it


@pytest.mark.parametrize("notebook", [False, True])
def test_a_finished_sweep_needs_no_data(store, tmp_path, monkeypatch, capsys, notebook):
    sweep_file, runs_dir = store
    monkeypatch.setenv("LOP_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr(notebooks, "_execute", lambda *a: pytest.fail("executed a notebook"))
    monkeypatch.setattr(experiment, "make_trainer", lambda *a, **k: pytest.fail("trained"))
    argv = ["sweep", str(sweep_file), *QUIET, "--runs-dir", str(runs_dir)]
    assert main(argv + (["--notebook"] if notebook else [])) == 0, capsys.readouterr().err
    assert "4 runs (4 already done)" in capsys.readouterr().err
    assert main([*argv, "--data", str(tmp_path / "empty")]) == 0


# D4: store write failures and a bit-flipped metrics file


def _read_only(monkeypatch, only: str = ""):
    """Make writes into run folders whose name starts with ``only`` fail as on a read-only store."""
    real = runs.write_atomic

    def write_atomic(path, data):
        if path.parent.name.startswith(only) and path.parent.name != ".checkpoints":
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        real(path, data)

    monkeypatch.setattr(runs, "write_atomic", write_atomic)


def test_a_read_only_store_is_one_line_naming_the_run(tmp_path, data_root, monkeypatch, capsys):
    _read_only(monkeypatch)
    argv = ["run", "permuted_mnist", *QUIET, "--set", "width=10", "--set", "num_tasks=1"]
    assert main([*argv, "--runs-dir", str(tmp_path), "--data", str(data_root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: base-w10-s0-") and "Read-only file system" in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_one_populations_write_failure_does_not_end_the_sweep(tmp_path, data_root, monkeypatch, capsys):
    (tmp_path / "two.yaml").write_text(SWEEP)
    _read_only(monkeypatch, only="base-w10-")
    argv = ["sweep", str(tmp_path / "two.yaml"), *QUIET, "--runs-dir", str(tmp_path / "runs")]
    assert main([*argv, "--data", str(data_root)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "base-w10-s0-" in errors[0] and "Read-only" in errors[0]
    done = {p.name.split("-s")[0]: runs.is_done(p) for p in _paths(tmp_path / "two.yaml", tmp_path / "runs")}
    assert done == {"base-w10": False, "base-w12": True}


def test_a_runs_dir_that_is_a_file_is_one_line(tmp_path, data_root, capsys):
    (tmp_path / "afile").write_text("")
    argv = ["run", "permuted_mnist", *QUIET, "--runs-dir", str(tmp_path / "afile"), "--data", str(data_root)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: base-w100-s0-" in err and "Not a directory" in err and "Traceback" not in err


def test_a_bit_flipped_metrics_file_names_the_run(store):
    sweep_file, runs_dir = store
    path = _paths(sweep_file, runs_dir)[0]
    _flip(path / "metrics.csv.gz")
    with pytest.raises(RunError, match=f"{path.name} is corrupt \\(zlib.error: .*delete the folder"):
        runs.read_run(path)
    with pytest.raises(RunError, match=path.name):
        runs.load(sweep.expand(sweep_file, "smoke")[0], runs_dir)


# D6: status and sweep look past DONE


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: (p / "metrics.csv.gz").unlink(),
        lambda p: os.truncate(p / "metrics.csv.gz", (p / "metrics.csv.gz").stat().st_size // 2),
        lambda p: _flip(p / "metrics.csv.gz"),
        lambda p: (p / "config.json").write_text("{garbage"),
        lambda p: (p / "summary.json").write_text("{garbage"),
    ],
    ids=["no-metrics", "truncated-metrics", "flipped-metrics", "garbage-config", "garbage-summary"],
)
def test_a_damaged_finished_run_is_corrupt_for_status_and_sweep(store, damage, capsys):
    sweep_file, runs_dir = store
    path = _paths(sweep_file, runs_dir)[1]
    damage(path)
    assert runs.run_state(path) == "corrupt"
    table = sweep.status([sweep_file], "smoke", runs_dir)
    assert table.corrupt.sum() == 1 and table.done.sum() == 3
    assert main(["sweep", str(sweep_file), *QUIET, "--runs-dir", str(runs_dir)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(path) in lines[0] and "delete the folder and run it again" in lines[0]


# D7: temporary files and stale locks


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        runs.write_atomic(tmp_path / "big.pt", b"x" * 100_000)
    assert not list(tmp_path.iterdir())


def test_a_resumed_run_drops_the_temporary_files_of_a_killed_process(tmp_path, data_root):
    cfgs = sweep.expand(_write(tmp_path), "smoke")[0]
    folder = runs.run_path(cfgs[0], tmp_path / "runs")
    ckpt = progress.population_checkpoint(cfgs, tmp_path / "runs")
    folder.mkdir(parents=True)
    ckpt.parent.mkdir()
    for stale in (
        folder / ".summary.json.tmp999999",
        folder / ".DONE.tmp1",
        ckpt.parent / f".{ckpt.name}.tmp7",
    ):
        stale.write_text("half")
    experiment.run_or_load(cfgs, runs_dir=tmp_path / "runs", data_root=data_root, progress=False)
    assert not list(folder.glob(".*")) and not list(ckpt.parent.iterdir())


def test_a_finished_runs_stale_lock_is_removed_but_not_a_held_one(store):
    sweep_file, runs_dir = store
    cfgs = sweep.expand(sweep_file, "smoke")[0]
    stale, held = (locks.lock_path(runs.run_path(c, runs_dir)) for c in cfgs)
    stale.write_text("12345@gone")  # left by a process killed after it finished the run
    with locks.locked([runs.run_path(cfgs[1], runs_dir)]):
        experiment.run_or_load(cfgs, runs_dir=runs_dir, progress=False)
        assert not stale.exists() and held.exists()


# D9: checkpoints


def _write(tmp_path, num_tasks=1):
    path = tmp_path / "one.yaml"
    path.write_text(
        SWEEP.replace("num_tasks: 1", f"num_tasks: {num_tasks}").replace(
            "  - {method: base, width: 12}\n", ""
        )
    )
    return path


def test_an_unreadable_checkpoint_has_the_tools_own_words(tmp_path, data_root):
    cfgs = sweep.expand(_write(tmp_path), "smoke")[0]
    ckpt = progress.population_checkpoint(cfgs, tmp_path)
    ckpt.parent.mkdir(parents=True)
    # fixed garbage: random bytes fail as UnpicklingError or, now and then, UnicodeDecodeError
    ckpt.write_bytes(random.Random(0).randbytes(5000))
    with pytest.raises(RunError) as err:
        experiment.run_or_load(cfgs, runs_dir=tmp_path, data_root=data_root, progress=False)
    assert str(err.value) == f"{ckpt} is not a valid checkpoint (UnpicklingError); delete it and run again"


@pytest.fixture
def real_checkpoint(tmp_path, data_root, monkeypatch):
    """A population's checkpoint after its first task, with its runs not done yet."""
    cfgs = sweep.expand(_write(tmp_path, num_tasks=3), "smoke")[0]
    kw = {"runs_dir": tmp_path / "runs", "data_root": data_root, "progress": False, "checkpoint_every": 0}
    monkeypatch.setattr(progress, "remove_checkpoint", lambda path: None)
    experiment.run_or_load(cfgs, **kw)
    monkeypatch.undo()
    for c in cfgs:
        shutil.rmtree(runs.run_path(c, tmp_path / "runs"))
    ckpt = progress.population_checkpoint(cfgs, tmp_path / "runs")
    return cfgs, ckpt, kw


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s.update(task=999),
        lambda s: s.update(task=-1),
        lambda s: s.update(rows=[*s["rows"], []]),
    ],
    ids=["task-past-the-end", "negative-task", "one-run-more"],
)
def test_a_checkpoint_that_does_not_fit_is_refused(real_checkpoint, tamper):
    cfgs, ckpt, kw = real_checkpoint
    state = torch.load(ckpt, weights_only=True)
    tamper(state["population"])
    torch.save(state, ckpt)
    with pytest.raises(RunError, match="does not fit these runs.*delete it"):
        experiment.run_or_load(cfgs, **kw)
    assert not any(runs.is_done(runs.run_path(c, kw["runs_dir"])) for c in cfgs)


def test_a_fitting_checkpoint_resumes(real_checkpoint):
    cfgs, ckpt, kw = real_checkpoint
    experiment.run_or_load(cfgs, **kw)
    meta = json.loads((runs.run_path(cfgs[0], kw["runs_dir"]) / "meta.json").read_text())
    assert meta["resumed_at"] == "task 2" and not ckpt.exists()


# D10: run folders printed only for runs that exist


def test_a_refused_run_prints_no_folder(tmp_path, data_root, capsys):
    cfg = sweep.expand(_write(tmp_path), "smoke")[0][0]
    argv = ["run", "permuted_mnist", *QUIET, "--set", "width=10", "--set", "num_tasks=1"]
    argv += ["--set", "examples_per_task=300", "--runs-dir", str(tmp_path), "--data", str(data_root)]
    with locks.locked([runs.run_path(cfg, tmp_path)]):
        assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "being trained by another process" in err and out == ""
