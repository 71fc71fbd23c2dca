import math

import pytest
import torch

from lop_core import config
from lop_core.data import PermutedMNIST
from lop_core.models import PopulationMLP
from lop_core.train import Population


def _cfgs(seeds, **kw):
    kw.setdefault("num_tasks", 2)
    kw.setdefault("examples_per_task", 600)
    kw.setdefault("probe_size", 200)
    return [config.resolve("permuted_mnist", "smoke", seed=s, **kw) for s in seeds]


def _train(cfgs, data_root, tasks):
    pop = Population(cfgs, device="cpu", data_root=data_root)
    for _ in range(tasks):
        pop.train_task()
    return pop


def test_population_matches_single_runs(data_root):
    seeds = [3, 0, 7, 1]
    pop = _train(_cfgs(seeds), data_root, 2)
    for r, seed in enumerate(seeds):
        single = _train(_cfgs([seed]), data_root, 2)
        for (t1, m1, l1, v1), (t2, m2, l2, v2) in zip(pop.rows[r], single.rows[0], strict=True):
            assert (t1, m1, l1) == (t2, m2, l2)
            assert math.isclose(v1, v2, rel_tol=1e-4, abs_tol=1e-5), (m1, l1, v1, v2)
        for p, q in zip(pop.model.parameters(), single.model.parameters(), strict=True):
            assert torch.allclose(p[r], q[0], atol=1e-5)


def test_population_mixes_step_sizes(data_root):
    mixed = _train(_cfgs([0], step_size=0.05) + _cfgs([0], step_size=0.01), data_root, 1)
    alone = _train(_cfgs([0], step_size=0.01), data_root, 1)
    acc_mixed = [v for (_, m, _, v) in mixed.rows[1] if m == "online_accuracy"]
    acc_alone = [v for (_, m, _, v) in alone.rows[0] if m == "online_accuracy"]
    assert acc_mixed == pytest.approx(acc_alone, abs=1e-5)
    assert mixed.rows[0] != mixed.rows[1]


def test_same_seed_same_numbers_and_other_seed_differs(data_root):
    a = _train(_cfgs([5]), data_root, 2).rows[0]
    b = _train(_cfgs([5]), data_root, 2).rows[0]
    c = _train(_cfgs([6]), data_root, 2).rows[0]
    assert a == b
    assert a != c


def test_first_task_online_accuracy_of_the_paper_network(data_root):
    # the paper's task: one epoch of 60,000 permuted images, batch 30, h = 100, SGD 0.05
    pop = _train([config.resolve("permuted_mnist", "paper", seed=0)], data_root, 1)
    acc = [v for (_, m, _, v) in pop.rows[0] if m == "online_accuracy"][0]
    assert acc > 0.85


def test_stream_permutes_every_task_and_each_run(data_root):
    stream = PermutedMNIST([0, 1], batch_size=30, root=data_root)
    stream.new_task()
    first = stream.perms.clone()
    assert not torch.equal(first[0], torch.arange(784))  # the first task is permuted too
    assert not torch.equal(first[0], first[1])
    stream.new_task()
    assert not torch.equal(first, stream.perms)
    x, y = stream.batch(0)
    assert x.shape == (2, 30, 784) and y.shape == (2, 30)
    idx = stream.order[0, 0]
    assert torch.equal(x[0, 0], stream.images[idx][stream.perms[0]])


def test_mlp_init_and_forward_match_nn_linear():
    g = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    model = PopulationMLP(g, in_features=784, width=100, depth=3, layer_norm=True)
    assert model.weights[0].shape == (2, 100, 784) and model.weights[-1].shape == (2, 10, 100)
    assert abs(model.weights[0].std().item() - math.sqrt(2 / 784)) < 0.002
    assert abs(model.weights[1].std().item() - math.sqrt(2 / 100)) < 0.005
    assert sum(p[0].numel() for p in model.parameters()) == 99710 + 3 * 200
    x = torch.randn(2, 5, 784)
    out = model(x)
    h = x[1]
    for k in range(3):
        h = torch.relu(torch.nn.functional.linear(h, model.weights[k][1], model.biases[k][1]))
        h = torch.nn.functional.layer_norm(h, (100,), model.ln_gains[k][1], model.ln_biases[k][1])
    ref = torch.nn.functional.linear(h, model.weights[3][1], model.biases[3][1])
    assert torch.allclose(out[1], ref, atol=1e-5)


def test_crelu_and_skip_connections_by_hand():
    g = [torch.Generator().manual_seed(0)]
    model = PopulationMLP(g, in_features=6, width=4, depth=3, out_features=3, activation="crelu")
    # CReLU: width/2 pre-activations per layer, width features out (the reference's 50,360 for h=100)
    assert [tuple(w.shape) for w in model.weights] == [(1, 2, 6), (1, 2, 4), (1, 2, 4), (1, 3, 4)]
    big = PopulationMLP(g, width=100, activation="crelu")
    assert sum(p[0].numel() for p in big.parameters()) == 50360
    x = torch.randn(1, 5, 6)
    h, feats = x[0], []
    for k in range(3):
        z = torch.nn.functional.linear(h, model.weights[k][0], model.biases[k][0])
        h = torch.cat([z.clamp(min=0), (-z).clamp(min=0)], dim=-1)
        feats.append(h)
    ref = torch.nn.functional.linear(h, model.weights[3][0], model.biases[3][0])
    assert torch.allclose(model(x)[0], ref, atol=1e-6)
    assert all(torch.allclose(f[0], r, atol=1e-6) for f, r in zip(model.features, feats, strict=True))

    # post-activation skips from layer 2 on, layer norm after the sum; features before both
    model = PopulationMLP(
        g, in_features=6, width=4, depth=3, out_features=3, layer_norm=True, skip_connections=True
    )
    h, feats = x[0], []
    for k in range(3):
        a = torch.relu(torch.nn.functional.linear(h, model.weights[k][0], model.biases[k][0]))
        feats.append(a)
        s = a + h if k > 0 else a
        h = torch.nn.functional.layer_norm(s, (4,), model.ln_gains[k][0], model.ln_biases[k][0])
    ref = torch.nn.functional.linear(h, model.weights[3][0], model.biases[3][0])
    assert torch.allclose(model(x)[0], ref, atol=1e-5)
    assert all(torch.allclose(f[0], r, atol=1e-6) for f, r in zip(model.features, feats, strict=True))
    with pytest.raises(ValueError, match="even width"):
        PopulationMLP(g, width=5, activation="crelu")


def test_compiled_step_computes_the_eager_numbers(data_root):
    cfgs = _cfgs([0, 1], width=16, num_tasks=1, examples_per_task=300, probe_size=50)
    eager = Population(cfgs, device="cpu", data_root=data_root)
    captured = Population(cfgs, device="cpu", data_root=data_root, compile=True)
    eager.train_task()
    captured.train_task()
    for a, b in zip(eager.rows, captured.rows, strict=True):
        for (t1, m1, l1, v1), (t2, m2, l2, v2) in zip(a, b, strict=True):
            assert (t1, m1, l1) == (t2, m2, l2)
            assert math.isclose(v1, v2, rel_tol=1e-4, abs_tol=1e-5), (m1, v1, v2)
