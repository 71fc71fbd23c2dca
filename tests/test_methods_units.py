"""Hand-worked tests of the unit methods (CBP, ReDo) and their shared primitives (methods/units.py)."""

import pytest
import torch
from test_methods import make, sgd_step, snapshot

from lop_core.methods.units import layer_output_mean, reset_units, unit_utility
from lop_core.optim import COUNTS, POWERS


def _features(model, per_unit, runs=None, batch=4):
    """Set ``model.features`` by hand: every hidden layer's unit j outputs ``per_unit[j]`` on every example."""
    runs = runs or model.weights[0].shape[0]
    h = torch.tensor(per_unit, dtype=torch.float32).expand(runs, batch, len(per_unit)).clone()
    model.features = [h.clone() for _ in range(model.depth)]


def test_unit_utilities_by_hand():
    model, _, _ = make("redo", width=2, depth=1, out_features=2)
    w = model.weights[1]
    with torch.no_grad():
        w.copy_(torch.tensor([[1.0, -2], [3, 4]]).expand_as(w))
    w.grad = torch.tensor([[1.0, -1], [1, 1]]).expand_as(w).clone()
    model.features = [torch.tensor([[[1.0, -2], [3, 0]]])]  # mean |h| = [2, 1]
    assert unit_utility("activation", model, 0).tolist() == [[2, 1]]
    assert unit_utility("magnitude", model, 0).tolist() == [[2, 3]]  # mean |W_out[:, j]|
    assert unit_utility("contribution", model, 0).tolist() == [[4, 3]]
    assert unit_utility("gradient", model, 0).tolist() == [[4, 6]]  # |1 + 3|, |2 + 4|
    centre = torch.tensor([[2.0, -1]])  # |h - centre| means: [1, 1]
    assert unit_utility("contribution", model, 0, centre).tolist() == [[2, 3]]
    with torch.no_grad():  # incoming weights [R, width, in=3]: mean |W_in[j, :]| = [2, 0.5]
        model.weights[0].copy_(torch.tensor([[1.0, -2, 3], [0.5, 0.5, -0.5]]).expand_as(model.weights[0]))
    assert unit_utility("adaptable_contribution", model, 0).tolist() == [[2, 6]]  # [4, 3] / [2, 0.5]
    assert unit_utility("adaptable_contribution", model, 0, centre).tolist() == [[1, 6]]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("state_reset", ["none", "moments", "all"])
def test_reset_units_touches_exactly_the_units_entries(optimizer, state_reset):
    args = [{"state_reset": state_reset}] * 2
    model, opt, cbp = make("cbp", args, width=4, depth=2, layer_norm=True, optimizer=optimizer, momentum=0.9)
    sgd_step(model, opt)
    if optimizer == "adam" and state_reset == "moments":  # refused: see test_optim
        with pytest.raises(ValueError, match="under AdamW"):
            reset_units(cbp, 0, torch.ones(2, 4, dtype=torch.bool), [4, 4])
        return
    with torch.no_grad():
        model.ln_gains[0].fill_(2.0)
        model.ln_biases[0].fill_(0.5)
        model.biases[0].fill_(0.3)
    before = snapshot(model)
    state_before = [{k: v.clone() for k, v in s.items()} for s in opt.state]
    mask = torch.tensor([[False, True, False, True], [True, False, False, False]])
    reset_units(cbp, 0, mask, [2, 1])
    w0, w1, w2, b0, b1, b2, g0, g1, lb0, lb1 = (p.detach() for p in model.parameters())
    o = dict(zip(["w0", "w1", "w2", "b0", "b1", "b2", "g0", "g1", "lb0", "lb1"], before, strict=True))
    rows, cols = mask.unsqueeze(-1).expand_as(w0), mask.unsqueeze(1).expand_as(w1)
    assert ((w0 != o["w0"]) == rows).all()  # fresh incoming weights, only for the replaced units
    assert (w1[cols] == 0).all() and torch.equal(w1[~cols], o["w1"][~cols])  # outgoing weights 0
    assert (b0[mask] == 0).all() and torch.equal(b0[~mask], o["b0"][~mask])
    assert (g0[mask] == 1).all() and (g0[~mask] == 2).all()
    assert (lb0[mask] == 0).all() and (lb0[~mask] == 0.5).all()
    for name, p in [("w2", w2), ("b1", b1), ("b2", b2), ("g1", g1), ("lb1", lb1)]:
        assert torch.equal(p, o[name]), name
    touched = [rows, cols, None, mask, None, None, mask, None, mask, None]
    for where, s, s_old in zip(touched, opt.state, state_before, strict=True):
        for key, buf in s.items():
            keep = where is None or state_reset == "none" or (key in COUNTS and state_reset == "moments")
            if keep:
                assert torch.equal(buf, s_old[key])
            else:  # zeroed; Adam's running powers b^t restart at b^0 = 1 with the step count
                fresh = 1.0 if key in POWERS else 0.0
                assert (buf[where] == fresh).all() and torch.equal(buf[~where], s_old[key][~where])


def test_bias_correction_keeps_the_next_layers_mean_output():
    model, opt, cbp = make("cbp", [{}, {}], width=6, depth=1, in_features=5, out_features=3)
    sgd_step(model, opt)
    x = torch.rand(2, 50, 5)
    before = model(x).mean(dim=1)  # [R, 3] batch mean of the logits
    mask = torch.tensor([[True, False, True, False, False, False], [False] * 5 + [True]])
    reset_units(cbp, 0, mask, [2, 1], output_mean=layer_output_mean(model, 0))
    assert torch.allclose(model(x).mean(dim=1), before, atol=1e-5)
    reset_units(cbp, 0, ~mask, [4, 5])  # without the correction the mean moves
    assert not torch.allclose(model(x).mean(dim=1), before, atol=1e-3)


def test_cbp_bias_correction_keeps_the_mean_output_on_the_batch():
    # decay 0: the running mean is the current batch's mean, so the correction is exact on it
    args = [
        {
            "decay_rate": 0.0,
            "maturity_threshold": 0,
            "replacement_rate": 0.5,
            "utility_average": "running",
            "bias_correction": True,
        }
    ]
    model, opt, cbp = make("cbp", args, width=4, depth=1, in_features=5)
    x = torch.rand(1, 30, 5)
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()
    before = model(x).mean(dim=1)
    info = cbp.after_step(1)
    assert info["reset_units"].tolist() == [2]
    assert torch.allclose(model(x).mean(dim=1), before, atol=1e-5)


@pytest.mark.parametrize("average", ["running", "instantaneous"])
def test_cbp_replaces_rho_times_eligible_and_never_an_immature_unit(average):
    args = [
        {"replacement_rate": 0.01, "maturity_threshold": 10, "utility_average": average},
        {"replacement_rate": 0.03, "maturity_threshold": 3, "utility_average": average},
    ]
    model, _, cbp = make("cbp", args, width=20, depth=2)
    g = torch.Generator().manual_seed(0)
    eligible_sum = torch.zeros(2, 2)  # [R, depth]
    replaced = torch.zeros(2, 2)
    maturity = torch.tensor([[10], [3]])
    for t in range(1, 1501):
        model.features = [torch.rand(2, 4, 20, generator=g) for _ in range(2)]
        ages = t - cbp.born  # [depth, R, width], the ages this step sees
        eligible = ages > maturity
        cbp.after_step(t)
        new = cbp.born == t
        assert not (new & ~eligible).any()  # never an immature unit
        # outgoing weights of new units are 0, except into new units of the next layer (fresh rows)
        cols = new[0].unsqueeze(1) & ~new[1].unsqueeze(-1)  # [R, width, width]
        assert (model.weights[1][cols] == 0).all()
        assert (model.weights[2][new[1].unsqueeze(1).expand_as(model.weights[2])] == 0).all()
        eligible_sum += eligible.sum(-1).T
        replaced += new.sum(-1).T
    expected = eligible_sum * torch.tensor([[0.01], [0.03]])
    assert (replaced - expected).abs().max() < 1  # the accumulator keeps the fractions
    assert replaced.min() >= 10


def test_cbp_instantaneous_ranks_by_the_current_batch_and_running_by_the_average():
    picked = {}
    for average in ("running", "instantaneous"):
        # m = 4, rho = 1/4: no unit is eligible before step 5, then exactly one is replaced
        args = [
            {
                "maturity_threshold": 4,
                "replacement_rate": 0.25,
                "decay_rate": 0.9,
                "utility": "activation",
                "utility_average": average,
            }
        ]
        model, _, cbp = make("cbp", args, width=4, depth=1)
        for t in range(1, 5):
            _features(model, [0.1, 1.0, 2.0, 3.0])
            assert cbp.after_step(t)["reset_units"].tolist() == [0]
        _features(model, [0.5, 0.2, 2.0, 3.0])  # unit 1 is the least active on this batch only
        before = model.weights[1].detach().clone()
        assert cbp.after_step(5)["reset_units"].tolist() == [1]
        zeroed = (model.weights[1] == 0).all(dim=1)[0] & (before != 0).any(dim=1)[0]
        picked[average] = zeroed.nonzero().flatten().tolist()
    assert picked == {"running": [0], "instantaneous": [1]}


def test_cbp_running_averages_are_bias_corrected_by_age():
    args = [
        {"decay_rate": 0.5, "utility": "activation", "maturity_threshold": 100, "utility_average": "running"}
    ]
    model, _, cbp = make("cbp", args, width=3, depth=1)
    for t in range(1, 4):
        _features(model, [0.5, 1.0, 2.0])
        cbp.after_step(t)
    correction = 1 - 0.5**3
    assert torch.allclose(cbp.util[0] / correction, torch.tensor([[0.5, 1.0, 2.0]]))
    assert torch.allclose(cbp.mean_act[0] / correction, torch.tensor([[0.5, 1.0, 2.0]]))
    running = {"decay_rate": 0.5, "maturity_threshold": 100, "utility_average": "running"}
    model2, _, cbp2 = make("cbp", [running], width=3, depth=1)
    for t in range(1, 4):  # constant features: the mean-corrected contribution is 0
        _features(model2, [0.5, 1.0, 2.0])
        cbp2.after_step(t)
    assert torch.allclose(cbp2.util[0], torch.zeros(1, 3), atol=1e-6)


def test_redo_resets_exactly_the_dormant_units():
    args = [
        {"reinit_frequency": 2, "dormant_threshold": 0.1},  # u <= 0.1 * 0.7625: units 0 and 1
        {"reinit_frequency": 2, "dormant_threshold": 0.01},  # u <= 0.007625: unit 0
        {"reinit_frequency": 4, "dormant_threshold": 0.1},  # not due at step 2
    ]
    model, _, redo = make("redo", args, width=4, depth=1)
    _features(model, [0.0, 0.05, 1.0, 2.0])
    assert redo.after_step(1)["reset_units"].tolist() == [0, 0, 0]
    before = snapshot(model)
    info = redo.after_step(2)
    assert info["reset_units"].tolist() == [2, 1, 0]
    assert info["reset_weights"].tolist() == [2 * (3 + 2), 3 + 2, 0]
    rows_changed = (model.weights[0].detach() != before[0]).all(dim=-1)  # [R, width]
    cols_zero = (model.weights[1] == 0).all(dim=1)
    expected = [[True, True, False, False], [True, False, False, False], [False] * 4]
    assert rows_changed.tolist() == expected and cols_zero.tolist() == expected


def test_redo_resets_every_unit_when_all_utilities_are_zero():
    model, _, redo = make("redo", [{"reinit_frequency": 1, "dormant_threshold": 0.0}], width=5, depth=2)
    model.features = [torch.zeros(1, 3, 5), torch.rand(1, 3, 5) + 0.1]
    info = redo.after_step(1)
    assert info["reset_units"].tolist() == [5]  # all of layer 1 (0 <= 0 * mean), none of layer 2
    assert (model.weights[1] == 0).all()


def test_cbp_ranks_by_the_age_corrected_utility():
    # unit 0 is 2 steps old with activation 1, unit 1 is 99 steps old with activation 0.5. The raw
    # running utilities are 0.19 and ~0.5; corrected by age they are 1 and 0.5: unit 1 goes.
    args = [
        {
            "decay_rate": 0.9,
            "utility": "activation",
            "maturity_threshold": 0,
            "replacement_rate": 0.5,
            "utility_average": "running",
        }
    ]
    model, _, cbp = make("cbp", args, width=2, depth=1)
    cbp.t = 99
    cbp.born[0, 0] = torch.tensor([97, 0])
    raw = torch.tensor([1 - 0.9**2, 0.5 * (1 - 0.9**99)])
    cbp.util[0, 0] = raw
    cbp.mean_act[0, 0] = raw
    _features(model, [1.0, 0.5])
    assert cbp.after_step(100)["reset_units"].tolist() == [1]
    assert cbp.born[0, 0].tolist() == [97, 100]


def test_kaiming_uniform_init_and_redraws_follow_dohares_network():
    """Dohare's init: U(-b, b), b = sqrt(2) sqrt(3 / fan_in) in the hidden layers, sqrt(3 / fan_in)
    (the linear gain) at the output; CBP redraws a replaced unit's weights from the same law."""
    import math

    from lop_core import config
    from lop_core.methods import METHODS
    from lop_core.models import PopulationMLP
    from lop_core.optim import SGDW

    gens = [torch.Generator().manual_seed(0)]
    model = PopulationMLP(gens, 300, 200, 2, 10, "relu", init="kaiming_uniform")
    assert model.stds == pytest.approx([math.sqrt(6 / 300), math.sqrt(6 / 200), math.sqrt(3 / 200)])
    for w, b in zip(model.weights, model.stds, strict=True):
        assert w.abs().max() <= b and w.abs().max() > 0.99 * b  # uniform up to the bound
        assert w.std().item() == pytest.approx(b / math.sqrt(3), rel=0.05)
    opt = SGDW([p for _, p in model.parameter_groups()], [0.1], [0.0])
    cfg = config.resolve("permuted_mnist", "smoke", method="cbp", width=200, depth=2)
    cbp = METHODS["cbp"](model, opt, [cfg], [torch.Generator().manual_seed(1)])
    mask = torch.zeros(1, 200, dtype=torch.bool)
    mask[0, :100] = True
    with torch.no_grad():
        model.weights[0].zero_()
    reset_units(cbp, 0, mask, [100])
    fresh = model.weights[0][0, :100]
    assert fresh.abs().max() <= model.stds[0] and fresh.abs().max() > 0.99 * model.stds[0]
    assert fresh.std().item() == pytest.approx(model.stds[0] / math.sqrt(3), rel=0.05)
    assert not model.weights[0][0, 100:].any()
