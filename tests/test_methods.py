"""Hand-worked tests of the weight-level methods: SWR, shrink-and-perturb, L2, L2-init, reset.

The helpers ``make`` and ``sgd_step`` build tiny populations without data; the unit methods
(tests/test_methods_units.py) and the population tests reuse them.
"""

import math

import pytest
import torch

from lop_core import config
from lop_core.errors import ConfigError
from lop_core.methods import METHODS
from lop_core.models import PopulationMLP
from lop_core.optim import COUNTS, POWERS, SGDW, AdamW


def make(
    method,
    args=({},),
    *,
    width=2,
    depth=1,
    in_features=3,
    out_features=2,
    layer_norm=False,
    activation="relu",
    optimizer="sgd",
    momentum=0.0,
    l2_factor=None,
    seed=10,
):
    """A population of ``len(args)`` runs: model, optimizer and method; ``args``: per-run method args."""
    runs = len(args)
    if l2_factor is None:
        l2_factor = 1e-4 if method in ("l2", "shrink_perturb") else 0.0
    cfgs = [
        config.resolve(
            "permuted_mnist",
            "smoke",
            seed=r,
            method=method,
            width=width,
            depth=depth,
            layer_norm=layer_norm,
            l2_factor=l2_factor,
            **a,
        )
        for r, a in enumerate(args)
    ]
    gens = [torch.Generator().manual_seed(seed + r) for r in range(runs)]
    model = PopulationMLP(gens, in_features, width, depth, out_features, activation, layer_norm)
    params = [p for _, p in model.parameter_groups()]
    if optimizer == "adam":
        opt = AdamW(params, [1e-2] * runs, [0.0] * runs)
    else:
        opt = SGDW(params, [0.1] * runs, [0.0] * runs, momentum=[momentum] * runs)
    generators = [torch.Generator().manual_seed(100 + seed + r) for r in range(runs)]
    return model, opt, METHODS[method](model, opt, cfgs, generators)


def sgd_step(model, opt, batch=5, seed=0):
    """One optimizer step on a random batch (fills grads, features and the optimizer state)."""
    g = torch.Generator().manual_seed(seed)
    r, fan_in = model.weights[0].shape[0], model.weights[0].shape[-1]
    x = torch.randn(r, batch, fan_in, generator=g)
    y = torch.randint(0, model.weights[-1].shape[1], (r, batch), generator=g)
    opt.zero_grad()
    logits = model(x)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
    opt.step()


def snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


# ---- SWR ------------------------------------------------------------------------------------------


def _set_swr_example(model):
    """Parameters and gradients whose utilities |g * theta| are worked out in the test below."""
    w0, w1, b0, b1 = model.weights[0], model.weights[1], model.biases[0], model.biases[1]
    with torch.no_grad():
        w0.copy_(torch.tensor([[1.0, 2, 3], [4, 5, 6]]).expand_as(w0))  # u = 1..6, mean 3.5
        w0.grad = torch.ones_like(w0)
        w1.copy_(torch.tensor([[1.0, -2], [3, -4]]).expand_as(w1))  # u = .5, 1, 1.5, 2, mean 1.25
        w1.grad = torch.full_like(w1, 0.5)
        b0.fill_(0.3)  # gradient 0: utility 0, always selected
        b0.grad = torch.zeros_like(b0)
        b1.fill_(0.7)  # u = 0, .7, mean .35
        b1.grad = torch.tensor([0.0, 1.0]).expand_as(b1).clone()
        model.ln_gains[0].fill_(2.0)  # gradient 0: back to 1
        model.ln_gains[0].grad = torch.zeros_like(model.ln_gains[0])
        model.ln_biases[0].fill_(0.5)  # u = .5, 1.5, mean 1
        model.ln_biases[0].grad = torch.tensor([1.0, 3.0]).expand_as(model.ln_biases[0]).clone()


def test_swr_threshold_resets_exactly_the_entries_below_factor_times_mean():
    args = [
        {"reinit_freq": 2, "reinit_factor": 0.5},
        {"reinit_freq": 2, "reinit_factor": 0.9},
        {"reinit_freq": 3, "reinit_factor": 0.9},  # not due at step 2
    ]
    model, _, swr = make("swr", args, layer_norm=True)
    _set_swr_example(model)
    before = snapshot(model)
    info = swr.after_step(2)
    changed = [p.detach() != q for p, q in zip(model.parameters(), before, strict=True)]
    named = dict(zip(["w0", "w1", "b0", "b1", "g0", "lb0"], changed, strict=True))
    t, f = True, False
    # run 0, f = 0.5: w0 u <= 1.75; w1 u <= 0.625; b1 u <= 0.175; ln bias u <= 0.5
    assert named["w0"][0].tolist() == [[t, f, f], [f, f, f]]
    assert named["w1"][0].tolist() == [[t, f], [f, f]]
    # run 1, f = 0.9: w0 u <= 3.15; w1 u <= 1.125
    assert named["w0"][1].tolist() == [[t, t, t], [f, f, f]]
    assert named["w1"][1].tolist() == [[t, t], [f, f]]
    for r in (0, 1):
        assert named["b0"][r].all() and (model.biases[0][r] == 0).all()
        assert named["b1"][r].tolist() == [t, f] and model.biases[1][r, 0] == 0
        assert (model.ln_gains[0][r] == 1).all()
        assert named["lb0"][r].tolist() == [t, f] and model.ln_biases[0][r, 0] == 0
    assert not any(c[2].any() for c in changed)  # run 2 is not due
    assert info["reset_weights"].tolist() == [1 + 1 + 2 + 1 + 2 + 1, 3 + 2 + 2 + 1 + 2 + 1, 0]


@pytest.mark.parametrize("pruning", ["threshold", "proportional"])
def test_swr_leaves_a_tensor_without_gradient_alone(pruning):
    """A tensor that took no part in the backward pass has no gradient utility (None, not 0):
    it is skipped, where a utility of 0 would have reinitialized all of it."""
    args = [{"reinit_freq": 1, "reinit_factor": 0.5, "pruning": pruning}]
    model, _, swr = make("swr", args, layer_norm=True)
    _set_swr_example(model)
    model.weights[0].grad = None
    before = snapshot(model)
    info = swr.after_step(1)
    assert torch.equal(model.weights[0], before[0])  # untouched
    assert not torch.equal(model.weights[1], before[1])  # the others are still pruned
    expected = {"threshold": 1 + 2 + 1 + 2 + 1, "proportional": 2 + 1 + 1 + 1 + 1}[pruning]
    assert info["reset_weights"].tolist() == [expected]


def test_swr_not_due_does_nothing():
    model, _, swr = make("swr", [{"reinit_freq": 4, "reinit_factor": 0.9}], layer_norm=True)
    _set_swr_example(model)
    before = snapshot(model)
    assert swr.after_step(3)["reset_weights"].tolist() == [0]
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_swr_proportional_resets_exactly_n_lowest():
    # w0 has 8 * 3 = 24 entries; f = 0.25 -> exactly 6 (no fractional part), the 6 smallest |theta|
    model, _, swr = make(
        "swr",
        [{"pruning": "proportional", "utility": "magnitude", "reinit_factor": 0.25, "reinit_freq": 1}],
        width=8,
    )
    w0 = model.weights[0]
    with torch.no_grad():
        w0.copy_(torch.randperm(24, generator=torch.Generator().manual_seed(1)).float().add(1).view_as(w0))
    before = w0.detach().clone()
    swr.after_step(1)
    changed = w0.detach() != before
    assert changed.sum() == 6
    assert torch.equal(changed, before <= 6)


def test_swr_proportional_bernoulli_rounding_has_the_right_mean():
    _, _, swr = make("swr", [{"pruning": "proportional", "reinit_factor": 0.1}])
    counts = [swr._proportional_counts(33, [True])[0] for _ in range(4000)]  # N f = 3.3
    assert set(counts) == {3, 4}
    mean = sum(counts) / len(counts)
    assert abs(mean - 3.3) < 4 * math.sqrt(0.3 * 0.7 / len(counts))


def _ks_normal(x, std):
    """Kolmogorov-Smirnov distance between the sample ``x`` and N(0, std)."""
    x, _ = torch.sort(x.double().flatten() / std)
    n = x.numel()
    cdf = torch.special.ndtr(x)
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n
    return torch.maximum(upper - cdf, cdf - (upper - 1 / n)).max().item()


def test_swr_resample_draws_from_the_models_initial_distribution():
    # tanh: std (5/3)/sqrt(400) = 0.0833, not the reference's ReLU-gain sqrt(2)/20 = 0.0707 (bug 9)
    model, _, swr = make(
        "swr",
        [{"utility": "magnitude", "reinit_factor": 1e9, "reinit_freq": 1}],
        width=300,
        in_features=400,
        activation="tanh",
        layer_norm=True,
    )
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    swr.after_step(1)
    w = model.weights[0].detach()
    std = model.stds[0]
    assert std == pytest.approx(5 / 3 / 20)
    assert _ks_normal(w, std) < 1.95 / math.sqrt(w.numel())  # KS test at the 0.1% level
    assert abs(w.std().item() - std) < 0.01 * std
    assert (model.biases[0] == 0).all() and (model.ln_gains[0] == 1).all() and (model.ln_biases[0] == 0).all()


def test_swr_mean_reinit_sets_the_distribution_mean():
    model, _, swr = make(
        "swr",
        [{"utility": "magnitude", "reinit_factor": 1e9, "reinit": "mean", "reinit_freq": 1}],
        layer_norm=True,
    )
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    swr.after_step(1)
    assert all((w == 0).all() for w in model.weights) and all((b == 0).all() for b in model.biases)
    assert (model.ln_gains[0] == 1).all() and (model.ln_biases[0] == 0).all()


def test_swr_running_average_of_the_utility():
    model, _, swr = make(
        "swr", [{"utility": "magnitude", "decay_rate": 0.5, "reinit_freq": 3, "reinit_factor": 0.5}]
    )
    w0 = model.weights[0]
    with torch.no_grad():
        w0.copy_(torch.tensor([[1.0, 2, 3], [4, 5, 6]]).expand_as(w0))
    swr.after_step(1)  # avg = 0.5 * |w|
    with torch.no_grad():
        w0.mul_(3.0)
    swr.after_step(2)  # avg = 0.5 * 0.5 |w| + 0.5 * 3 |w| = 1.75 |w|
    assert torch.allclose(swr.avg[0], 1.75 * w0.detach().abs() / 3)
    swr.after_step(3)  # avg = 0.875 + 1.5 = 2.375 |w|; only the entry 1 <= 0.5 * 3.5 is reset
    assert swr.avg[0][0, 0, 0] == 0 and torch.allclose(swr.avg[0][0, 0, 1], torch.tensor(2.375 * 2))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("state_reset", ["none", "moments", "all"])
def test_swr_resets_the_optimizer_state_of_exactly_the_reinitialized_entries(optimizer, state_reset):
    model, opt, swr = make(
        "swr",
        [{"reinit_freq": 1, "reinit_factor": 0.9, "state_reset": state_reset}],
        optimizer=optimizer,
        momentum=0.9,
        layer_norm=True,
    )
    sgd_step(model, opt)
    _set_swr_example(model)
    before = snapshot(model)
    state_before = [{k: v.clone() for k, v in s.items()} for s in opt.state]
    if optimizer == "adam" and state_reset == "moments":  # refused: see test_optim
        with pytest.raises(ValueError, match="under AdamW"):
            swr.after_step(1)
        return
    swr.after_step(1)
    for p, old, s, s_old in zip(model.parameters(), before, opt.state, state_before, strict=True):
        touched = p.detach() != old  # in this example every reinitialized entry changes value
        for key, buf in s.items():
            if state_reset == "none" or (key in COUNTS and state_reset == "moments"):
                assert torch.equal(buf, s_old[key])
            else:  # zeroed; Adam's running powers b^t restart at b^0 = 1 with the step count
                assert (buf[touched] == (1.0 if key in POWERS else 0.0)).all(), key
                assert torch.equal(buf[~touched], s_old[key][~touched]), key
    assert set(opt.state[0]) == ({"momentum"} if optimizer == "sgd" else {"m", "v", "step", *POWERS})


# ---- shrink-and-perturb, L2, L2-init, reset -----------------------------------------------------


def test_shrink_perturb_adds_noise_of_the_right_variance():
    model, _, sp = make(
        "shrink_perturb",
        [{"noise_variance": 1e-2}, {"noise_variance": 1e-4}],
        width=200,
        in_features=100,
        layer_norm=True,
    )
    before = snapshot(model)
    sp.after_step(1)
    diff = torch.cat(
        [(p.detach() - q).flatten(1) for p, q in zip(model.parameters(), before, strict=True)], 1
    )
    n = diff.shape[1]
    for r, var in enumerate([1e-2, 1e-4]):
        assert abs(diff[r].var().item() / var - 1) < 5 * math.sqrt(2 / n)
        assert abs(diff[r].mean().item()) < 5 * math.sqrt(var / n)
    assert (diff != 0).all()  # every parameter, biases and layer norm included


def test_l2_init_pulls_toward_the_initial_parameters_by_the_factor():
    model, _, l2i = make("l2_init", [{"l2_init_factor": 0.1}, {"l2_init_factor": 0.5}], layer_norm=True)
    init = snapshot(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    moved = snapshot(model)
    l2i.after_step(1)
    for p, p0, p1 in zip(model.parameters(), init, moved, strict=True):
        for r, f in enumerate([0.1, 0.5]):
            assert torch.allclose(p[r], p1[r] - f * (p1[r] - p0[r]))
    state = l2i.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(state["anchors"], init, strict=True))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_reset_gives_a_fresh_init_and_a_fresh_optimizer_state(optimizer):
    model, opt, reset = make(
        "reset", [{}, {}], width=300, in_features=400, layer_norm=True, optimizer=optimizer, momentum=0.9
    )
    init = snapshot(model)
    assert reset.on_task_start(0) is None
    sgd_step(model, opt)
    assert all(opt.state)
    reset.on_task_start(1)
    # momentum, m, v, step: 0; Adam's running powers b^t: b^0 = 1
    assert all((buf == (1.0 if key in POWERS else 0.0)).all() for s in opt.state for key, buf in s.items())
    w = model.weights[0].detach()
    assert abs(w.std().item() - model.stds[0]) < 0.01 * model.stds[0]
    assert not torch.equal(w, init[0]) and not torch.equal(w[0], w[1])  # new draws, per run
    assert all((b == 0).all() for b in model.biases) and (model.ln_gains[0] == 1).all()
    assert (model.ln_biases[0] == 0).all()
    if optimizer == "adam":  # the first step of a fresh Adam moves every entry by lr = 0.01
        before = snapshot(model)
        sgd_step(model, opt, seed=1)
        for p, q in zip(model.parameters(), before, strict=True):
            g = p.grad.abs()
            assert torch.allclose((p.detach() - q).abs(), 0.01 * g / (g + 1e-8), atol=1e-7)


@pytest.mark.parametrize(
    ("method", "overrides", "words"),
    [
        ("swr", {"reinit_factor": -1.0}, "reinit_factor"),
        ("swr", {"reinit_freq": 0}, "reinit_freq"),
        ("swr", {"pruning": "proportional", "reinit_factor": 1.5}, "proportional"),
        ("swr", {"utility": "weird"}, "gradient"),
        ("swr", {"reinit": "zero"}, "resample"),
        ("swr", {"decay_rate": 1.0}, "decay_rate"),
        ("swr", {"state_reset": "some"}, "moments"),
        ("cbp", {"replacement_rate": -0.1}, "replacement_rate"),
        ("cbp", {"replacement_rate": 2.0}, "replacement_rate"),
        ("cbp", {"maturity_threshold": -1}, "maturity_threshold"),
        ("cbp", {"decay_rate": 1.0}, "decay_rate"),
        ("cbp", {"utility": "weight"}, "contribution"),
        ("cbp", {"utility_average": "ema"}, "instantaneous"),
        ("cbp", {"bias_correction": True}, "bias_correction needs"),
        ("cbp", {"optimizer": "adamw", "state_reset": "moments"}, "under AdamW"),
        ("swr", {"optimizer": "adamw", "state_reset": "moments"}, "under AdamW"),
        ("redo", {"optimizer": "adamw", "state_reset": "moments"}, "under AdamW"),
        ("redo", {"reinit_frequency": 0}, "reinit_frequency"),
        ("redo", {"dormant_threshold": -1.0}, "dormant_threshold"),
        ("redo", {"utility": "x"}, "activation"),
        ("shrink_perturb", {"noise_variance": -1.0, "l2_factor": 1e-4}, "noise_variance"),
        ("shrink_perturb", {}, "l2_factor"),
        ("l2", {}, "l2_factor"),
        ("l2_init", {"l2_init_factor": 2.0}, "l2_init_factor"),
        ("reset", {"state_reset": "everything"}, "all"),
    ],
)
def test_impossible_hyperparameters_raise_config_errors(method, overrides, words):
    with pytest.raises(ConfigError, match=words):
        config.resolve("permuted_mnist", "smoke", method=method, **overrides)


def test_permuted_mnist_defaults_are_the_swr_papers_code():
    """CBP is the SWR paper's instantaneous variant, and no method resets optimizer state
    (reference_code.md §1.6, §3.1); Dohare's running variant is an explicit option."""
    cbp = config.resolve("permuted_mnist", "smoke", method="cbp").method_args
    assert cbp["utility_average"] == "instantaneous" and not cbp["bias_correction"]
    for method in ("swr", "cbp", "redo"):
        assert config.resolve("permuted_mnist", "smoke", method=method).method_args["state_reset"] == "none"
    dohare = config.resolve(
        "permuted_mnist",
        "smoke",
        method="cbp",
        optimizer="adamw",
        utility_average="running",
        utility="adaptable_contribution",
        state_reset="all",
    )
    assert dohare.method_args["utility"] == "adaptable_contribution"


def test_string_choices_must_be_shared_by_the_runs_of_a_population():
    with pytest.raises(ValueError, match="utility"):
        make("swr", [{"utility": "gradient"}, {"utility": "magnitude"}])


@pytest.mark.parametrize("method", ["swr", "redo"])
def test_state_reset_changes_nothing_under_plain_sgd(method, data_root):
    """Plain SGD keeps no optimizer state, so ``state_reset`` cannot change a run: the runs made with
    ``moments`` before the default became ``none`` are exactly the runs of the new default."""
    from lop_core.train import Population

    args = {
        "swr": {"reinit_freq": 5, "reinit_factor": 0.5},
        "redo": {"reinit_frequency": 5, "dormant_threshold": 0.5},
    }
    pops = []
    for state_reset in ("none", "moments"):
        cfg = config.resolve(
            "permuted_mnist", "smoke", method=method, width=10, state_reset=state_reset, **args[method]
        )
        pop = Population([cfg], device="cpu", data_root=data_root)
        pop.train_task()
        pops.append(pop)
    assert pops[0].rows == pops[1].rows and any(
        m.startswith("reset_") and v > 0 for _, m, _, v in pops[0].rows[0]
    )
    assert all(
        torch.equal(p, q) for p, q in zip(pops[0].model.parameters(), pops[1].model.parameters(), strict=True)
    )
