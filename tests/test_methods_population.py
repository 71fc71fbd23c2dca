"""Every method trains a population exactly like separate runs, and resumes exactly from a checkpoint.

A population and a run trained alone differ by float rounding only: a batched matrix product and a
single one sum in other orders, and the order depends on the torch build and its kernels. A method
that takes discrete choices by comparing numbers (SWR's threshold u <= f * mean(u), the unit
rankings of CBP and ReDo) can turn one rounding difference into a different reset, so the
population-equivalence cases train in float64 (``Population(dtype=torch.float64)``): the rounding
difference is then ~1e-16 relative, far below any gap between a utility and its threshold, and the
runs must agree to 1e-9. A method that mixes runs, or draws from another run's generator, fails
that by orders of magnitude. The float32 test below checks the same for the methods that take no
discrete choices, at float32 tolerances.
"""

import io
import math

import pytest
import torch

from lop_core import config
from lop_core.train import Population

# (method, shared overrides, per-run overrides): the runs mix seeds and hyperparameter values.
CASES = {
    "l2": ("l2", {}, [{"seed": 0, "l2_factor": 1e-3}, {"seed": 1, "l2_factor": 1e-4}]),
    "shrink_perturb": (
        "shrink_perturb",
        {"l2_factor": 1e-3},
        [{"seed": 0, "noise_variance": 1e-4}, {"seed": 2, "noise_variance": 1e-3}],
    ),
    "l2_init": ("l2_init", {}, [{"seed": 0, "l2_init_factor": 1e-2}, {"seed": 1, "l2_init_factor": 1e-3}]),
    "cbp": (
        "cbp",
        {
            "optimizer": "adamw",
            "step_size": 1e-3,
            "utility_average": "running",
            "bias_correction": True,
            "utility": "adaptable_contribution",
            "state_reset": "all",
        },
        [
            {"seed": 0, "maturity_threshold": 3, "replacement_rate": 0.05},
            {"seed": 1, "maturity_threshold": 5, "replacement_rate": 0.1, "decay_rate": 0.9},
        ],
    ),
    "cbp_instantaneous_ln": (
        "cbp",
        {"utility_average": "instantaneous", "layer_norm": True, "utility": "gradient"},
        [
            {"seed": 0, "maturity_threshold": 2, "replacement_rate": 0.05},
            {"seed": 3, "maturity_threshold": 4, "replacement_rate": 0.1},
        ],
    ),
    "redo": (
        "redo",
        {"momentum": 0.9, "step_size": 0.01},
        [{"seed": 0, "reinit_frequency": 4, "dormant_threshold": 0.5}, {"seed": 1, "reinit_frequency": 5}],
    ),
    "swr": (
        "swr",
        {"layer_norm": True},
        [
            {"seed": 0, "reinit_freq": 4, "reinit_factor": 0.01},
            {"seed": 1, "reinit_freq": 6, "reinit_factor": 0.1, "decay_rate": 0.5},
        ],
    ),
    "swr_proportional": (
        "swr",
        {"pruning": "proportional", "utility": "random", "reinit": "mean"},
        [
            {"seed": 0, "reinit_freq": 4, "reinit_factor": 0.1},
            {"seed": 1, "reinit_freq": 3, "reinit_factor": 0.3},
        ],
    ),
    "reset": ("reset", {"optimizer": "adamw", "step_size": 1e-3}, [{"seed": 0}, {"seed": 4}]),
    "weight_clipping": (
        "weight_clipping",
        {"step_size": 0.3},
        [{"seed": 0, "kappa": 1.0}, {"seed": 1, "kappa": 1.5}],
    ),
    "optimizer_reset": (
        "optimizer_reset",
        {"optimizer": "adamw", "step_size": 1e-3},
        [{"seed": 0}, {"seed": 2}],
    ),
    "parseval": ("parseval", {}, [{"seed": 0, "parseval_lambda": 1e-2}, {"seed": 1, "parseval_s": 1.0}]),
    "spectral": ("spectral", {}, [{"seed": 0, "spectral_lambda": 1e-2}, {"seed": 1, "spectral_k": 1.0}]),
    "nap": ("nap", {"layer_norm": True, "step_size": 0.1}, [{"seed": 0}, {"seed": 1, "nap_output": True}]),
}


def _cfg(method, shared, run):
    kw = dict(width=10, num_tasks=2, examples_per_task=600, probe_size=100, method=method)
    kw.update(shared)
    kw.update(run)
    return config.resolve("permuted_mnist", "smoke", **kw)


#: Tolerances (relative, absolute) of a run's numbers in a population against the run alone.
TOLERANCE = {torch.float64: (1e-9, 1e-12), torch.float32: (1e-4, 1e-5)}


def _train(cfgs, data_root, tasks=2, dtype=torch.float32):
    pop = Population(cfgs, device="cpu", data_root=data_root, dtype=dtype)
    for _ in range(tasks):
        pop.train_task()
    return pop


def _assert_same_run(pop_a, ra, pop_b, rb, dtype=torch.float32):
    rel, tol = TOLERANCE[dtype]
    for (t1, m1, l1, v1), (t2, m2, l2, v2) in zip(pop_a.rows[ra], pop_b.rows[rb], strict=True):
        assert (t1, m1, l1) == (t2, m2, l2)
        if m1.startswith("reset_"):  # a count: the same choices, exactly
            assert v1 == v2, (m1, l1, v1, v2)
        assert math.isclose(v1, v2, rel_tol=rel, abs_tol=tol), (m1, l1, v1, v2)
    for p, q in zip(pop_a.model.parameters(), pop_b.model.parameters(), strict=True):
        assert torch.allclose(p[ra], q[rb], rtol=rel, atol=tol)


@pytest.mark.parametrize("case", sorted(CASES))
def test_population_matches_single_runs(case, data_root):
    method, shared, runs = CASES[case]
    cfgs = [_cfg(method, shared, run) for run in runs]
    pop = _train(cfgs, data_root, dtype=torch.float64)
    assert pop.model.weights[0].dtype == torch.float64 and pop.stream.images.dtype == torch.float64
    for r, cfg in enumerate(cfgs):
        _assert_same_run(pop, r, _train([cfg], data_root, dtype=torch.float64), 0, torch.float64)
    metrics = {m for (_, m, _, _) in pop.rows[0]}
    if method in ("cbp", "redo", "swr"):  # the resets happened and were logged
        counts = [v for (_, m, _, v) in pop.rows[0] + pop.rows[1] if m.startswith("reset_")]
        assert counts and all(v > 0 for v in counts), metrics
    if method == "weight_clipping":  # it clipped, in both runs
        for rows in pop.rows:
            assert sum(v for (_, m, _, v) in rows if m == "clipped_weights") > 0


@pytest.mark.parametrize(
    "case", ["l2", "shrink_perturb", "l2_init", "reset", "optimizer_reset", "parseval", "spectral"]
)
def test_float32_population_matches_single_runs(case, data_root):
    """Methods without comparisons: float32 (what the committed runs use) agrees to float32 rounding."""
    method, shared, runs = CASES[case]
    cfgs = [_cfg(method, shared, run) for run in runs]
    pop = _train(cfgs, data_root)
    for r, cfg in enumerate(cfgs):
        _assert_same_run(pop, r, _train([cfg], data_root), 0)


def _straight_and_resumed(cfgs, data_root):
    """Two tasks straight, and one task, a checkpoint, a fresh population loading it, one more task."""
    straight = _train(cfgs, data_root, tasks=2)
    first = _train(cfgs, data_root, tasks=1)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = Population(cfgs, device="cpu", data_root=data_root)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    resumed.train_task()
    return straight, resumed


@pytest.mark.parametrize(
    "case",
    ["cbp", "swr", "l2_init", "redo", "shrink_perturb", "cbp_instantaneous_ln", "parseval", "spectral"],
)
def test_checkpointed_population_resumes_exactly(case, data_root):
    method, shared, runs = CASES[case]
    cfgs = [_cfg(method, shared, run) for run in runs]
    straight, resumed = _straight_and_resumed(cfgs, data_root)
    for r in range(len(cfgs)):
        _assert_same_run(straight, r, resumed, r)


#: One setting (h = 10, plain SGD), every method: what a mixed population trains together.
MIXED = [
    ("base", {"seed": 0}),
    ("l2", {"seed": 1, "l2_factor": 1e-3}),
    ("shrink_perturb", {"seed": 2, "l2_factor": 1e-3, "noise_variance": 1e-4}),
    ("l2_init", {"seed": 3, "l2_init_factor": 1e-2}),
    ("cbp", {"seed": 4, "maturity_threshold": 3, "replacement_rate": 0.05}),
    ("cbp", {"seed": 5, "maturity_threshold": 4, "replacement_rate": 0.1}),
    ("cbp", {"seed": 6, "utility_average": "running", "maturity_threshold": 3, "replacement_rate": 0.05}),
    ("redo", {"seed": 7, "reinit_frequency": 4, "dormant_threshold": 0.5}),
    ("swr", {"seed": 8, "reinit_freq": 4, "reinit_factor": 0.01}),
    ("swr", {"seed": 9, "reinit_freq": 3, "reinit_factor": 0.3, "pruning": "proportional", "reinit": "mean"}),
    ("reset", {"seed": 10}),
    ("weight_clipping", {"seed": 11, "kappa": 1.0}),
    ("optimizer_reset", {"seed": 12}),  # plain SGD keeps no state: it reports, and changes nothing
    ("parseval", {"seed": 13, "parseval_lambda": 1e-2}),
    ("spectral", {"seed": 14, "spectral_lambda": 1e-2}),
]


def test_a_mixed_population_gives_every_method_its_solo_numbers(data_root):
    """Runs of different methods train in one population; each method acts on its own runs only."""
    from lop_core import config as cfg_module

    cfgs = [_cfg(method, {}, run) for method, run in MIXED]
    assert len({cfg_module.population_key(c) for c in cfgs}) == 1  # one setting, one population
    pop = _train(cfgs, data_root, dtype=torch.float64)
    assert len(pop.methods) == 14  # the two CBP variants are two blocks
    for r, cfg in enumerate(cfgs):
        alone = _train([cfg], data_root, dtype=torch.float64)
        _assert_same_run(pop, r, alone, 0, torch.float64)
        names = {m for (_, m, _, _) in pop.rows[r]}
        assert ("reset_weights" in names) == (cfg.method in ("cbp", "redo", "swr", "reset")), cfg.method
        assert ("clipped_weights" in names) == (cfg.method == "weight_clipping"), cfg.method
        assert ("reset_optimizer" in names) == (cfg.method == "optimizer_reset"), cfg.method


def test_a_mixed_population_needs_each_methods_runs_together(data_root):
    cfgs = [_cfg(m, {}, run) for m, run in (MIXED[4], MIXED[0], MIXED[5])]
    with pytest.raises(ValueError, match="next to each other"):
        Population(cfgs, device="cpu", data_root=data_root)


def test_a_mixed_population_resumes_exactly(data_root):
    cfgs = [_cfg(method, {}, run) for method, run in MIXED]
    straight, resumed = _straight_and_resumed(cfgs, data_root)
    for r in range(len(cfgs)):
        assert straight.rows[r] == resumed.rows[r]  # the same process and kernels: bit for bit
