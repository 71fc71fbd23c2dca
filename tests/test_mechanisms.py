"""Frozen and cloned units (findings B1, B2) against hand-worked cases."""

import pytest
import torch
import torch.nn.functional as F

from lop_core import mechanisms, metrics
from lop_core.models.feedforward import MLP


def _data(n=64, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def _net(norm="none", width=5, depth=3, seed=0, dropout=0.0, activation="relu"):
    torch.manual_seed(seed)
    return MLP(6, width, depth, 3, activation, norm, dropout)


def _train(model, x, y, steps, noise=0.0, opt="sgd", seed=0):
    gen = torch.Generator().manual_seed(seed)
    optim = (
        torch.optim.SGD(model.parameters(), lr=0.1) if opt == "sgd" else torch.optim.Adam(model.parameters())
    )
    for _ in range(steps):
        optim.zero_grad()
        F.cross_entropy(model(x), y).backward()
        mechanisms.perturb_gradients(model.parameters(), noise, gen)
        optim.step()
    return model


def test_cloning_by_hand():
    model = MLP(2, 1, 2, 1).double()
    with torch.no_grad():
        model.hidden[0].weight.copy_(torch.tensor([[1.0, -2.0]]))
        model.hidden[0].bias.fill_(0.5)
        model.hidden[1].weight.fill_(3.0)
        model.hidden[1].bias.fill_(-1.0)
        model.head.weight.fill_(4.0)
        model.head.bias.fill_(0.25)
    wide = mechanisms.widen_by_cloning(model, 2)
    assert wide.hidden[0].weight.tolist() == [[1.0, -2.0], [1.0, -2.0]]  # incoming weights copied
    assert wide.hidden[0].bias.tolist() == [0.5, 0.5]
    assert wide.hidden[1].weight.tolist() == [[1.5, 1.5], [1.5, 1.5]]  # 3 split over 2 clones, copied
    assert wide.hidden[1].bias.tolist() == [-1.0, -1.0]
    assert wide.head.weight.tolist() == [[2.0, 2.0]]  # 4 split over the 2 clones
    assert wide.head.bias.tolist() == [0.25]
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    # h1 = relu(1 + .5) = 1.5; h2 = relu(3 * 1.5 - 1) = 3.5; out = 4 * 3.5 + .25 = 14.25
    assert model(x).item() == wide(x).item() == 14.25


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("factor", [1, 2, 3])
def test_cloning_preserves_the_function(norm, factor):
    model = _net(norm).double()
    x, y = _data()
    _train(model, x.double(), y, 5)  # trained weights and batch-norm statistics
    wide = mechanisms.widen_by_cloning(model, factor)
    assert wide.width == factor * model.width and mechanisms.clone_gap(wide, factor) == 0.0
    for mode in (True, False):  # batch statistics and running statistics
        model.train(mode), wide.train(mode)
        assert torch.allclose(wide(x.double()), model(x.double()), atol=1e-12, rtol=0)
        for h_wide, h in zip(wide.features, model.features, strict=True):
            assert torch.allclose(h_wide, h.repeat_interleave(factor, dim=1), atol=1e-12, rtol=0)


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_clones_stay_identical_without_noise_and_diverge_with_it(norm, opt):
    # float64: in float32 the rounding of different rows can differ by an ulp, and with batch norm
    # such a seed of asymmetry grows (the manifold is invariant, not attracting)
    x, y = _data()
    x = x.double()
    model = _train(_net(norm).double(), x, y, 20)
    plain = _train(mechanisms.widen_by_cloning(model, 2), x, y, 200, opt=opt)
    assert mechanisms.clone_gap(plain, 2) <= 1e-12  # machine precision
    plain(x)
    assert mechanisms.feature_clone_gap(plain.features[-1], 2) <= 1e-12
    assert metrics.threshold_rank(plain.features[-1]) <= model.width  # no new directions
    noisy = _train(mechanisms.widen_by_cloning(model, 2), x, y, 200, noise=0.05, opt=opt)
    assert mechanisms.clone_gap(noisy, 2) > 1e-3


def test_clones_stay_identical_in_float32_without_norm():
    x, y = _data()
    model = _train(_net(), x, y, 20)
    plain = _train(mechanisms.widen_by_cloning(model, 3), x, y, 200)
    assert mechanisms.clone_gap(plain, 3) <= 1e-6


def test_dropout_breaks_the_symmetry():
    x, y = _data()
    model = _train(_net(), x, y, 20)
    wide = mechanisms.widen_by_cloning(model, 2)
    wide.drop.p = 0.2
    torch.manual_seed(0)
    _train(wide, x, y, 100)
    assert mechanisms.clone_gap(wide, 2) > 1e-3


def test_perturb_gradients_by_hand():
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([3.0, 0.0, 4.0])  # ||g|| = 5
    mechanisms.perturb_gradients([p], 0.1, torch.Generator().manual_seed(7))
    eps = torch.randn(3, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(p.grad, torch.tensor([3.0, 0.0, 4.0]) + 0.1 * 5.0 * eps)
    q = torch.nn.Parameter(torch.zeros(2))
    q.grad = torch.ones(2)
    mechanisms.perturb_gradients([q], 0.0)  # no noise: untouched
    assert q.grad.tolist() == [1.0, 1.0]


def test_a_dead_relu_unit_gets_no_gradient_and_stays_dead():
    x, y = _data()
    model = _net()
    with torch.no_grad():
        model.hidden[1].bias[2] = -1e3  # unit 2 of layer 2: pre-activation < 0 on every input
    before = model.hidden[1].weight[2].clone()
    F.cross_entropy(model(x), y).backward()
    norms = mechanisms.incoming_grad_norms(model)
    assert norms[1][2] == 0.0 and (norms[1][[0, 1, 3, 4]] > 0).all()
    assert mechanisms.frozen_units(model.features[1], "relu").tolist() == [False, False, True, False, False]
    _train(model, x, y, 50)
    assert torch.equal(model.hidden[1].weight[2], before)  # never moved
    model(x)
    assert mechanisms.frozen_units(model.features[1], "relu")[2]


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_a_saturated_unit_gets_almost_no_gradient(activation):
    x, y = _data()
    model = _net(activation=activation)
    with torch.no_grad():
        model.hidden[1].bias[0] = 8.0  # act'(z) ~ e^-8 or less on every input
    F.cross_entropy(model(x), y).backward()
    norms = mechanisms.incoming_grad_norms(model)[1]
    assert norms[0] < 1e-3 * norms[1:].mean()
    assert mechanisms.frozen_units(model.features[1], activation)[0]
    assert not mechanisms.frozen_units(model.features[1], activation)[1:].any()


def test_frozen_rules_and_persistence():
    h = torch.zeros(20, 3)
    h[:, 1] = 1.0
    h[0, 2] = 1.0  # unit 2 is zero on 95% of inputs: frozen by the 0.95 rule, not by the exact one
    assert mechanisms.frozen_units(h, "relu").tolist() == [True, False, True]
    assert metrics.dead_units(h).tolist() == [True, False, False]
    t = torch.full((20, 2), 0.995)
    t[:2, 1] = 0.0  # unit 1 at the bound on 90% of inputs: not frozen
    assert mechanisms.frozen_units(t, "sigmoid").tolist() == [True, False]
    assert metrics.saturated_fraction(t, 0.0, 1.0, share=0.9).item() == 1.0
    before, after = torch.tensor([True, True, False, True]), torch.tensor([True, False, False, True])
    assert mechanisms.persistence(before, after) == pytest.approx(2 / 3)
    assert mechanisms.unit_matrix(torch.ones(2, 3, 4, 5)).shape == (40, 3)


def test_cloning_demo_keeps_plain_clones_and_separates_noisy_ones(data_root):
    from lop_core.mechanism_demos import CloningDemo, cloning_demo

    cfg = CloningDemo(examples=200, base_steps=30, steps=40, every=20)
    demo = cloning_demo((0,), cfg, data_root=data_root)
    after = demo[demo.step > cfg.base_steps]
    plain = after[after.variant == "cloned"]
    assert (plain.clone_gap <= 1e-6).all() and (plain["rank"] <= cfg.width).all()
    assert (after[after.variant == "narrow (no cloning)"]["rank"] <= cfg.width).all()
    assert after[after.variant == "cloned + noise"].clone_gap.iloc[-1] > 1e-3
    assert after[after.variant == "cloned + dropout"].clone_gap.iloc[-1] > 1e-3
    assert set(demo.step) == {30, 50, 70}


def test_setting_names():
    from lop_core.mechanism_figures import setting_name, start_name

    row = {"activation": "relu", "norm": "batch", "dropout": 0.1, "noise": 0.0}
    assert setting_name(row) == "ReLU + batch norm + dropout 0.1"
    assert setting_name({**row, "activation": "tanh", "norm": "none", "dropout": 0}) == "tanh"
    assert (
        start_name({"start": "shrink_perturb", "shrink": 0.4, "perturb": 0.1})
        == "shrink & perturb (λ=0.4, σ=0.1)"
    )
