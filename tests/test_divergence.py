"""A run whose loss stops being finite is marked diverged and stopped; its population goes on."""

import json
import math

import pandas as pd
import pytest

from lop_core import chapters, config, experiment, runs
from lop_core.cli import main
from lop_core.train import Population

HUGE = 1e30  # the weights overflow float32 in the first steps: the loss is NaN by step 2


def _cfg(seed, step_size=0.01, **kw):
    kw = {"width": 10, "num_tasks": 3, "examples_per_task": 300, **kw}
    return config.resolve("permuted_mnist", "smoke", seed=seed, step_size=step_size, **kw)


def _json(path, name):
    return json.loads((path / name).read_text())


def test_a_diverged_run_is_marked_and_the_survivor_is_untouched(tmp_path, data_root):
    ok, bad, sane = _cfg(0), _cfg(1, HUGE), _cfg(1)
    experiment.run_or_load([ok, bad], runs_dir=tmp_path / "mixed", data_root=data_root, progress=False)
    experiment.run_or_load([ok, sane], runs_dir=tmp_path / "sane", data_root=data_root, progress=False)

    path = runs.run_path(bad, tmp_path / "mixed")
    meta, summary = _json(path, "meta.json"), _json(path, "summary.json")
    assert runs.is_done(path) and runs.run_state(path) == "diverged"
    assert meta["status"] == summary["status"] == "diverged"
    assert meta["diverged_step"] == summary["diverged_step"]
    assert 1 <= summary["diverged_step"] <= ok.steps_per_task and summary["diverged_task"] == 0
    assert "mean_online_accuracy" not in summary and summary["tasks_done"] == 0
    assert pd.read_csv(path / "metrics.csv.gz").empty  # it diverged in its first task

    # the survivor computes exactly what it computes beside a run that does not diverge
    survivor = [runs.run_path(ok, tmp_path / d) for d in ("mixed", "sane")]
    assert (survivor[0] / "metrics.csv.gz").read_bytes() == (survivor[1] / "metrics.csv.gz").read_bytes()
    assert _json(survivor[0], "summary.json") == _json(survivor[1], "summary.json")
    assert _json(survivor[0], "meta.json")["status"] == "done"

    metrics, summaries = runs.load([ok, bad], tmp_path / "mixed")
    assert set(metrics.run) == {survivor[0].name} and metrics.value.notna().all()
    assert list(summaries.status) == ["done", "diverged"]
    assert math.isnan(summaries.set_index("status").loc["diverged", "mean_online_accuracy"])
    assert chapters.diverged_note(summaries) == "1 of 2 runs diverged (non-finite loss) and is excluded"


def test_divergence_later_in_a_run_keeps_the_tasks_before_it(data_root):
    cfgs = [_cfg(0), _cfg(1)]
    pop, reference = Population(cfgs, "cpu", data_root), Population(cfgs, "cpu", data_root)
    for p in (pop, reference):
        p.train_task()
    pop.model.weights[0].data[1, 0, 0] = float("nan")  # run 1 breaks between tasks 0 and 1
    for p in (pop, reference):
        p.train_task()
        p.train_task()
    steps = cfgs[0].steps_per_task
    assert pop.diverged == [None, {"diverged_step": steps + 1, "diverged_task": 1}]
    assert pop.rows[0] == reference.rows[0]
    assert pop.rows[1] == [row for row in reference.rows[1] if row[0] == 0]
    assert pop.summaries()[1] == {"tasks_done": 1}
    assert all(p[1].isfinite().all() for p in pop.optimizer.params)  # frozen: no NaN reaches the SVDs


@pytest.mark.parametrize("method", ["cbp", "swr", "redo", "l2_init", "reset"])
def test_methods_survive_a_diverged_run_in_their_population(data_root, method):
    pop = Population([_cfg(0, method=method), _cfg(1, HUGE, method=method)], "cpu", data_root)
    for _ in range(3):
        pop.train_task()
    assert pop.diverged[0] is None and pop.diverged[1]["diverged_task"] == 0
    assert all(math.isfinite(v) for (_, _, _, v) in pop.rows[0])


def test_a_population_whose_runs_all_diverge_stops(tmp_path, data_root):
    bad = _cfg(0, HUGE, num_tasks=50)
    experiment.run_or_load([bad], runs_dir=tmp_path, data_root=data_root, progress=False)
    path = runs.run_path(bad, tmp_path)
    assert _json(path, "summary.json")["status"] == "diverged"
    metrics, summaries = runs.load([bad], tmp_path)
    assert metrics.empty and list(summaries.status) == ["diverged"]
    assert chapters.diverged_note(summaries) == "1 of 1 run diverged (non-finite loss) and is excluded"


def test_a_sweep_with_diverging_step_sizes_reaches_the_chapters_as_a_count(tmp_path, data_root, capsys):
    sweep = tmp_path / "steps.yaml"
    sweep.write_text(
        "benchmark: permuted_mnist\n"
        "seeds: {smoke: 0-1}\n"
        "entries:\n"
        "  - {method: base, width: 10, num_tasks: 2, examples_per_task: 300, step_size: [0.01, 1.0e30]}\n"
    )
    store = tmp_path / "runs"
    argv = ["--preset", "smoke", "--runs-dir", str(store)]
    assert main(["sweep", str(sweep), *argv, "--data", str(data_root), "--no-progress"]) == 0
    assert "2 run(s) diverged" in capsys.readouterr().err
    metrics, summaries, _ = chapters.load_finding(str(sweep), "smoke", store)
    assert set(metrics.step_size) == {0.01} and metrics.run.nunique() == 2
    assert chapters.diverged_note(summaries) == "2 of 4 runs diverged (non-finite loss) and are excluded"
    assert main(["status", str(sweep), *argv]) == 0
    out = capsys.readouterr().out
    assert "4 runs in 1 population(s): 2 done, 2 diverged" in out


#: Methods that would move a frozen run's zeros: noise, weight resets, unit resets, a pull to the init.
MOVERS = {
    "shrink_perturb": {"l2_factor": 1e-3, "noise_variance": 1e-2},
    "swr": {"reinit_freq": 3, "reinit_factor": 0.5},
    "cbp": {"maturity_threshold": 1, "replacement_rate": 0.5},
    "l2_init": {"l2_init_factor": 1e-2},
}


@pytest.mark.parametrize("method", sorted(MOVERS))
def test_a_diverged_run_stays_frozen_through_noise_resets_and_a_resume(data_root, method):
    """Noise, resets and decay never touch a diverged run again, and a resumed population does not
    train it: its weights stay exactly 0 and its step size 0."""
    import io

    import torch

    kw = {"method": method, **MOVERS[method]}
    cfgs = [_cfg(0, **kw), _cfg(1, HUGE, **kw)]
    pop = Population(cfgs, "cpu", data_root)
    pop.train_task()
    assert pop.diverged[1] is not None
    pop.train_task()
    assert all(not p[1].any() for p in pop.optimizer.params)
    buffer = io.BytesIO()
    torch.save(pop.state_dict(), buffer)
    buffer.seek(0)
    resumed = Population(cfgs, "cpu", data_root)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    assert all(lr[1].item() == 0 for lr in resumed.optimizer.lr)
    resumed.train_task()
    assert all(not p[1].any() for p in resumed.optimizer.params)
    assert any(p[0].any() for p in resumed.optimizer.params)
