"""Hand-worked tests of the newer remedies: weight clipping and the optimizer reset at task boundaries."""

import math

import pytest
import torch
from test_methods import make, sgd_step

from lop_core import config
from lop_core.errors import ConfigError


def test_weight_clipping_clips_to_kappa_times_the_initial_bound_per_run_and_layer():
    model, _, clip = make("weight_clipping", [{"kappa": 1.0}, {"kappa": 2.0}], width=3, depth=2)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.linspace(-5, 5, p.numel()).view_as(p))
    before = [p.detach().clone() for p in clip.params]
    out = clip.after_step(1)
    expected = torch.zeros(2)
    for p, p0, (_, layer) in zip(clip.params, before, clip.slots, strict=True):
        for r, kappa in enumerate((1.0, 2.0)):
            bound = kappa * math.sqrt(3.0) * model.stds[layer]  # normal init: the uniform of its variance
            assert torch.allclose(p[r], p0[r].clamp(-bound, bound))
            expected[r] += (p0[r].abs() > bound).sum()
    assert torch.equal(out["clipped_weights"], expected) and expected[0] > expected[1] > 0
    assert clip.after_step(2)["clipped_weights"].sum() == 0  # within bounds now: nothing to clip


def test_weight_clipping_uses_the_uniform_bound_itself_and_leaves_layer_norm_alone():
    model, _, clip = make("weight_clipping", [{"kappa": 1.0}], layer_norm=True, depth=1)
    model.uniform_init = True  # the bound is then model.stds (Kaiming-uniform's b)
    clip = type(clip)(model, clip.optimizer, clip.cfgs, clip.generators)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(10.0)
    clip.after_step(1)
    for p, (kind, layer) in zip(clip.params, clip.slots, strict=True):
        if kind in ("weight", "bias"):
            assert torch.allclose(p, torch.full_like(p, model.stds[layer]))
        else:
            assert torch.all(p == 10.0), kind


def test_weight_clipping_refuses_kappa_below_one():
    with pytest.raises(ConfigError, match="kappa must be >= 1"):
        config.resolve("permuted_mnist", "smoke", method="weight_clipping", kappa=0.5)


def test_optimizer_reset_forgets_adams_state_at_every_task_but_the_first():
    model, opt, reset = make("optimizer_reset", [{}, {}], optimizer="adam")
    for _ in range(3):
        sgd_step(model, opt)
    assert reset.on_task_start(0) is None and all(s["step"].max() == 3 for s in opt.state)
    out = reset.on_task_start(1)
    assert torch.equal(out["reset_optimizer"], torch.ones(2))
    for s in opt.state:
        assert s["m"].abs().sum() == 0 and s["v"].abs().sum() == 0 and s["step"].abs().sum() == 0
        assert torch.all(s["c1"] == 1) and torch.all(s["c2"] == 1)
    before = [p.detach().clone() for p in model.parameters()]
    sgd_step(model, opt)  # Adam's first step after the reset: every entry moves by about lr
    moved = [(p - b).abs() for p, b in zip(model.parameters(), before, strict=True)]
    assert all(torch.allclose(m[m > 1e-6], torch.tensor(1e-2), rtol=1e-3) for m in moved)


def test_optimizer_reset_zeroes_sgd_momentum_and_refuses_moments_under_adamw():
    model, opt, reset = make("optimizer_reset", [{"state_reset": "moments"}], momentum=0.9)
    sgd_step(model, opt)
    reset.on_task_start(3)
    assert all(s["momentum"].abs().sum() == 0 for s in opt.state)
    with pytest.raises(ConfigError, match="under AdamW"):
        config.resolve(
            "permuted_mnist", "smoke", method="optimizer_reset", optimizer="adamw", state_reset="moments"
        )


def test_parseval_adds_the_penalty_gradient_of_the_hidden_layers_before_the_step():
    model, _, par = make(
        "parseval", [{"parseval_lambda": 0.1, "parseval_s": 1.0}, {"parseval_lambda": 0.0}], depth=2
    )
    for p in par.params:
        p.grad = torch.zeros_like(p)
    weights = [i for i, (kind, _) in enumerate(par.slots) if kind == "weight"]
    assert par.layers == weights[:-1]  # the output layer is left free
    par.before_step(1)
    for i, p in enumerate(par.params):
        if i in par.layers:
            w = p[0].detach()
            want = 4 * 0.1 * (w @ w.T - torch.eye(w.shape[0])) @ w
            assert torch.allclose(p.grad[0], want, atol=1e-7) and p.grad[0].abs().sum() > 0
            assert torch.all(p.grad[1] == 0)  # lambda 0: nothing
            s0 = p[1].detach().pow(2).sum(-1).mean()  # parseval_s 0: the layer's initial scale
            assert torch.isclose(par.scales[i][1].squeeze(), s0)
        else:
            assert torch.all(p.grad == 0)


def test_parseval_drives_a_layer_towards_scaled_orthogonal_rows():
    model, opt, par = make(
        "parseval", [{"parseval_lambda": 0.05, "parseval_s": 1.0, "parseval_output": True}]
    )
    w = par.params[par.layers[0]]
    start = (w[0] @ w[0].T - torch.eye(w.shape[1])).norm()
    for step in range(200):
        for p in par.params:
            p.grad = torch.zeros_like(p)
        par.before_step(step + 1)
        opt.step()
    assert (w[0] @ w[0].T - torch.eye(w.shape[1])).norm() < 0.01 * start


def test_spectral_power_iteration_finds_the_largest_singular_value_with_the_bias_as_a_column():
    model, _, spec = make("spectral", [{"spectral_lambda": 0.1}, {"spectral_lambda": 0.0}], width=4, depth=1)
    w_index, b_index = spec.layers[0]
    a = torch.cat([spec.params[w_index], spec.params[b_index].unsqueeze(-1)], dim=-1).detach()
    for _ in range(200):
        sigma, u, v = spec.sigma(0)
    assert torch.allclose(sigma, torch.linalg.svdvals(a)[:, 0], rtol=1e-4)


def test_spectral_adds_the_gradient_of_its_penalty_by_hand_and_autograd():
    model, _, spec = make("spectral", [{"spectral_lambda": 0.3, "spectral_k": 2.0}], width=3, depth=1)
    for _ in range(300):  # converge the power iteration first
        spec.sigma(0)
        spec.sigma(1)
    for p in spec.params:
        p.grad = torch.zeros_like(p)
    spec.before_step(1)
    for layer, (w_index, b_index) in enumerate(spec.layers):
        a = torch.cat([spec.params[w_index], spec.params[b_index].unsqueeze(-1)], dim=-1).detach()[0]
        a.requires_grad_(True)
        penalty = 0.3 * (torch.linalg.matrix_norm(a, ord=2) ** 2 - 1) ** 2
        (want,) = torch.autograd.grad(penalty, a)
        got = torch.cat([spec.params[w_index].grad[0], spec.params[b_index].grad[0].unsqueeze(-1)], dim=-1)
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-6), layer


def test_spectral_and_parseval_refuse_impossible_values():
    with pytest.raises(ConfigError, match="spectral_k must be >= 1"):
        config.resolve("permuted_mnist", "smoke", method="spectral", spectral_k=0.5)
    with pytest.raises(ConfigError, match="parseval_lambda must be >= 0"):
        config.resolve("permuted_mnist", "smoke", method="parseval", parseval_lambda=-1.0)


def test_nap_projects_every_weight_matrix_back_to_its_initial_norm_per_run():
    model, _, nap = make("nap", [{}, {}], layer_norm=True, depth=2)
    start = {i: nap.params[i].detach().flatten(1).norm(dim=1) for i in nap.layers}
    with torch.no_grad():
        for p in nap.params:
            p.mul_(torch.tensor([3.0, 0.5]).view(-1, *[1] * (p.dim() - 1)))  # grow run 0, shrink run 1
    direction = {
        i: nap.params[i].detach() / nap.params[i].detach().flatten(1).norm(dim=1).view(-1, 1, 1)
        for i in nap.layers
    }
    nap.after_step(1)
    for i, p in enumerate(nap.params):
        if i in nap.layers:
            assert torch.allclose(p.detach().flatten(1).norm(dim=1), start[i])
            assert torch.allclose(
                p / start[i].view(-1, 1, 1), direction[i], atol=1e-6
            )  # the direction is kept
    bias = nap.slot("bias", 0)
    assert bias not in nap.layers


def test_nap_needs_layer_norm():
    with pytest.raises(ConfigError, match="set layer_norm=true"):
        config.resolve("permuted_mnist", "smoke", method="nap")
