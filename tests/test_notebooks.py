"""The notebooks end to end: the experiment on the smoke preset, then the chapters on its runs."""

import json
from pathlib import Path

import papermill
import pytest
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from lop_core import runs

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(REPO.glob("book/[0-9][0-9]_*.ipynb"))
#: Seconds a cell may take before its kernel is taken for lost. nbclient can miss a kernel's reply
#: and wait for ever (papermill issue 711): such a cell times out and the notebook runs once more.
CELL_TIMEOUT = 600


def _execute(source, out, **kwargs):
    """``papermill.execute_notebook`` with a cell timeout, again once after a lost kernel."""
    for attempt in (1, 2):
        try:
            return papermill.execute_notebook(
                str(source), str(out), progress_bar=False, execution_timeout=CELL_TIMEOUT, **kwargs
            )
        except (CellTimeoutError, DeadKernelError):
            if attempt == 2:
                raise


def _notebook_populations(sweeps):
    """The first population of the first sweep of every benchmark: these run through papermill."""
    from lop_core.sweep import expand

    chosen = {}
    for path in sweeps:
        first = expand(path, "smoke")[0]
        chosen.setdefault(first[0].benchmark, first)
    return list(chosen.values())


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, data_root):
    """Every sweep's smoke runs: one population per benchmark through its experiment notebook
    (papermill, one kernel each), the rest in-process by the same sweep command users run."""
    from lop_core.cli import main
    from lop_core.notebooks import execute_population

    runs_dir = tmp_path_factory.mktemp("runs")
    sweeps = sorted(str(p) for p in (REPO / "book/experiments/sweeps").glob("*.yaml"))
    for cfgs in _notebook_populations(sweeps):
        execute_population(cfgs, runs_dir, "cpu", data_root)
    argv = ["sweep", *sweeps, "--preset", "smoke", "--no-progress", "--runs-dir", str(runs_dir)]
    assert main([*argv, "--data", str(data_root)]) == 0
    bench = [
        "bench",
        "--widths",
        "10",
        "--layer-norm",
        "off",
        "--methods",
        "base",
        "--runs",
        "1,2",
        "--budget",
        "0.05",
        "--repeats",
        "1",
        "--data",
        str(data_root),
        "--out",
        str(runs_dir / "bench" / "cpu.json"),
    ]
    assert main(bench) == 0
    return runs_dir


def test_experiment_notebooks_store_themselves_with_the_runs(smoke_runs):
    sweeps = sorted(str(p) for p in (REPO / "book/experiments/sweeps").glob("*.yaml"))
    populations = _notebook_populations(sweeps)
    assert {cfgs[0].benchmark for cfgs in populations} >= {"permuted_mnist", "incremental_cifar"}
    folders = [runs.run_path(c, smoke_runs) for cfgs in populations for c in cfgs]
    for folder in folders:
        assert runs.is_done(folder)
        nb = json.loads((folder / "notebook.ipynb").read_text())
        tags = [t for c in nb["cells"] for t in c.get("metadata", {}).get("tags", [])]
        assert "injected-parameters" in tags


def test_experiment_notebook_with_papermill_parameters(tmp_path, data_root):
    out = tmp_path / "out.ipynb"
    params = {
        "preset": "smoke",
        "width": 10,
        "seeds": "[0, 1]",
        "runs_dir": str(tmp_path / "runs"),
        "data_root": str(data_root),
    }
    _execute(REPO / "book/experiments/permuted_mnist.ipynb", out, parameters=params, cwd=str(tmp_path))
    made = sorted(
        p.name for p in (tmp_path / "runs" / "permuted_mnist").iterdir() if p.name != ".checkpoints"
    )
    assert len(made) == 2 and all(name.startswith("base-w10-s") for name in made)
    assert all(runs.is_done(tmp_path / "runs" / "permuted_mnist" / name) for name in made)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_executes_on_smoke_runs(chapter, smoke_runs, tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("LOP_DATA", str(data_root))  # live demos read data; the kernel inherits it
    _execute(
        chapter,
        tmp_path / chapter.name,
        parameters={"preset": "smoke", "runs_dir": str(smoke_runs)},
        cwd=str(chapter.parent),
    )


def test_chapter_without_runs_names_the_command(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match="lop_core sweep a1 --preset smoke"):
        _execute(
            CHAPTERS[0],
            tmp_path / "x.ipynb",
            parameters={"preset": "smoke", "runs_dir": str(tmp_path / "empty")},
        )
