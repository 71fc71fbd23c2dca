"""Warm starting (C1, C2): shrink-and-perturb by hand, the switch between phases, splits, resume."""

import pytest
import torch
from conftest import write_image_tree

from lop_core import config
from lop_core.errors import ConfigError
from lop_core.models.cnn import SmallCNN
from lop_core.models.resnet import ResNet18
from lop_core.warmstart import WarmStart, build_model, shrink_perturb_

CLASSES = 4


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """``tree/{train,test}/<class>/*.png``: 32 x 32 images, one colour per class plus noise."""
    return write_image_tree(
        tmp_path_factory.mktemp("warm"), CLASSES, {"train": 10, "test": 4}, size=32, noise=40
    )


def _cfg(seed=0, **kw):
    values = {
        "data_dir": "tree",
        "examples_per_task": 32,
        "test_per_class": 4,
        "batch_size": 8,
        "max_epochs": 3,
    }
    return config.resolve("warm_start", "smoke", seed=seed, **{**values, **kw})


def _finish(trainer):
    while trainer.task < trainer.total:
        trainer.train_task()
    return trainer


def test_shrink_perturb_by_hand():
    model, fresh = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
        model.bias.fill_(3.0)
        fresh.weight.copy_(torch.tensor([[0.5, 0.25]]))
        fresh.bias.fill_(-1.0)
    shrink_perturb_(model, fresh, 0.4, 0.1)
    assert torch.allclose(model.weight, torch.tensor([[0.4 + 0.05, -0.8 + 0.025]]))
    assert torch.allclose(model.bias, torch.tensor([1.2 - 0.1]))
    bn, bn_fresh = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    bn.running_mean.fill_(5.0)
    shrink_perturb_(bn, bn_fresh, 0.5, 0.1)
    assert bn.weight.tolist() == pytest.approx([0.6, 0.6]) and bn.running_mean.tolist() == [5.0, 5.0]


def test_the_switch_is_lambda_theta_plus_sigma_eps(tiny_root):
    cfg = _cfg(start="shrink_perturb", shrink=0.3, perturb=0.2)
    trainer = WarmStart([cfg], device="cpu", data_root=tiny_root)
    trainer.train_task()  # phase 0
    run = trainer.runs[0]
    theta = [p.detach().clone() for p in run.model.parameters()]
    eps = list(build_model(cfg, CLASSES, cfg.seed + 1_000_003).parameters())  # the fresh draw
    run.switch(1)
    for p, t, e in zip(run.model.parameters(), theta, eps, strict=True):
        assert torch.allclose(p, 0.3 * t + 0.2 * e, atol=1e-7)


def test_warm_continues_and_fresh_starts_from_the_initialization(tiny_root):
    warm = WarmStart([_cfg(start="warm")], device="cpu", data_root=tiny_root)
    init = [p.detach().clone() for p in warm.runs[0].model.parameters()]
    warm.train_task()
    trained = [p.detach().clone() for p in warm.runs[0].model.parameters()]
    warm.runs[0].switch(1)
    assert all(torch.equal(p, t) for p, t in zip(warm.runs[0].model.parameters(), trained, strict=True))
    assert not all(torch.equal(p, t) for p, t in zip(trained, init, strict=True))
    fresh = WarmStart([_cfg(start="fresh")], device="cpu", data_root=tiny_root)
    fresh.train_task()  # phase 0 is skipped
    assert all(torch.equal(p, t) for p, t in zip(fresh.runs[0].model.parameters(), init, strict=True))
    assert fresh.runs[0].rows == []
    _finish(fresh)
    phases = {v for _, m, _, v in fresh.runs[0].rows if m == "phase"}
    assert phases == {1.0} and fresh.summaries()[0]["epochs_phase0"] == 0


def test_phase_zero_is_the_first_half_of_every_class(tiny_root):
    run = WarmStart([_cfg()], device="cpu", data_root=tiny_root).runs[0]
    first, full = run.splits[0], run.splits[1]
    labels = run.data.train_y
    assert len(full) == 32 and len(first) == 16
    assert set(first.tolist()) <= set(full.tolist())
    assert torch.bincount(labels[first]).tolist() == [4] * CLASSES
    assert torch.bincount(labels[full]).tolist() == [8] * CLASSES


def test_a_phase_stops_when_it_fits(tiny_root):
    trainer = _finish(WarmStart([_cfg(fit_accuracy=0.01, max_epochs=5)], device="cpu", data_root=tiny_root))
    summary = trainer.summaries()[0]
    assert summary["epochs_phase0"] == 1 and summary["epochs_phase1"] == 1


@pytest.mark.parametrize("kw", [{"start": "shrink_perturb"}, {"model": "mlp", "width": 8, "norm": "batch"}])
def test_resume_and_population_give_the_same_numbers(tiny_root, kw):
    alone = _finish(WarmStart([_cfg(1, **kw)], device="cpu", data_root=tiny_root))
    pair = _finish(WarmStart([_cfg(0, **kw), _cfg(1, **kw)], device="cpu", data_root=tiny_root))
    assert pair.rows[1] == alone.rows[0] and pair.summaries()[1] == alone.summaries()[0]
    first = WarmStart([_cfg(1, **kw)], device="cpu", data_root=tiny_root)
    first.train_task()
    resumed = WarmStart([_cfg(1, **kw)], device="cpu", data_root=tiny_root)
    resumed.load_state_dict(first.state_dict())
    assert _finish(resumed).rows[0] == alone.rows[0]


@pytest.mark.parametrize(
    "override, message",
    [
        ({"start": "cold"}, "start 'cold'"),
        ({"model": "vit"}, "model 'vit'"),
        ({"shrink": 1.5}, "shrink"),
        ({"first_fraction": 1.0}, "first_fraction"),
        ({"method": "swr"}, "method base"),
    ],
)
def test_bad_values_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        config.resolve("warm_start", "smoke", **override)


def test_run_names_say_how_phase_one_starts():
    assert config.run_name(_cfg(start="shrink_perturb")).startswith("shrink_perturb0.4x0.1-cnn-w4-s0-")
    assert config.run_name(_cfg(start="fresh")).startswith("fresh-cnn-w4-s0-")


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_vision_models_shapes(norm):
    x = torch.randn(2, 3, 32, 32)
    cnn = SmallCNN(10, norm=norm, dropout=0.1)
    assert cnn(x).shape == (2, 10) and [f.shape[1] for f in cnn.features] == [16, 32, 64, 128]
    resnet = ResNet18(10, width=4, norm=norm)
    assert resnet(x).shape == (2, 10) and resnet.features[-1].shape == (2, 32)
    assert [f.shape[-1] for f in resnet.features[:4]] == [32, 16, 8, 4]


def test_resnet18_has_the_paper_size():
    assert sum(p.numel() for p in ResNet18(10).parameters()) == 11_173_962  # CIFAR ResNet-18, 10 classes
