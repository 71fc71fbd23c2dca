"""The continual_mnist benchmark: config checks, the trainer's records, resume and populations."""

import pytest

from lop_core import config
from lop_core.continual import ContinualMNIST
from lop_core.errors import ConfigError

SMALL = {"num_tasks": 3, "examples_per_task": 200, "probe_size": 100, "batch_size": 50}


def _cfg(seed=0, **kw):
    return config.resolve("continual_mnist", "smoke", seed=seed, **{**SMALL, **kw})


def _finish(trainer):
    while trainer.task < trainer.total:
        trainer.train_task()
    return trainer


@pytest.mark.parametrize(
    "override, message",
    [
        ({"method": "cbp"}, "method base"),
        ({"norm": "group"}, "norm 'group'"),
        ({"task": "split"}, "task 'split'"),
        ({"dropout": 1.0}, "dropout"),
        ({"probe_size": 10_000}, "probe_size"),
        ({"noise": -1}, "noise"),
    ],
)
def test_bad_values_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        config.resolve("continual_mnist", "smoke", **override)


def test_layer_norm_label_follows_norm_and_names_are_readable():
    cfg = _cfg(norm="layer", dropout=0.1)
    assert cfg.layer_norm and not _cfg().layer_norm
    assert config.run_name(cfg).startswith("relu-layer-d0.1-n0-w16-s0-")


def test_trainer_records_every_metric(data_root):
    trainer = _finish(ContinualMNIST([_cfg(activation="tanh")], device="cpu", data_root=data_root))
    rows = trainer.rows[0]
    metrics = {(m, layer) for _, m, layer, _ in rows}
    for key in [
        ("online_accuracy", "all"),
        ("train_accuracy", "all"),
        ("frozen_fraction", "1"),
        ("frozen_fraction", "all"),
        ("duplicate_fraction", "all"),
        ("effective_rank", "2"),
        ("threshold_rank", "2"),
        ("weight_magnitude", "all"),
        ("live_grad", "all"),
    ]:
        assert key in metrics
    assert sorted({t for t, *_ in rows}) == [0, 1, 2]
    assert all(0 <= v <= 1 for _, m, _, v in rows if m.endswith(("accuracy", "fraction")))
    summary = trainer.summaries()[0]
    assert summary["tasks_done"] == 3 and summary["activation"] == "tanh"


@pytest.mark.parametrize(
    "kw", [{}, {"norm": "batch", "dropout": 0.1, "noise": 0.01, "task": "shuffled_labels"}]
)
def test_resume_and_population_give_the_same_numbers(data_root, kw):
    alone = _finish(ContinualMNIST([_cfg(1, **kw)], device="cpu", data_root=data_root)).rows[0]
    pair = _finish(ContinualMNIST([_cfg(0, **kw), _cfg(1, **kw)], device="cpu", data_root=data_root))
    assert pair.rows[1] == alone
    first = ContinualMNIST([_cfg(1, **kw)], device="cpu", data_root=data_root)
    first.train_task()
    resumed = ContinualMNIST([_cfg(1, **kw)], device="cpu", data_root=data_root)
    resumed.load_state_dict(first.state_dict())
    assert _finish(resumed).rows[0] == alone


def test_held_out_accuracy_is_the_test_split_under_the_tasks_permutation(data_root):
    import torch

    from lop_core.data import load_mnist

    trainer = ContinualMNIST([_cfg(num_tasks=2)], device="cpu", data_root=data_root)
    run = trainer.runs[0]
    perms = []
    real_new_task = run.new_task

    def remember():
        x, y, perm = real_new_task()
        perms.append(perm)
        return x, y, perm

    run.new_task = remember
    _finish(trainer)
    images, labels = load_mnist(data_root, train=False)
    with torch.no_grad():
        run.model.eval()
        want = (run.model(images.float().div(255.0)[:, perms[-1]]).argmax(1) == labels).float().mean()
    got = [v for t, m, _, v in trainer.rows[0] if m == "test_accuracy"]
    assert len(got) == 2 and got[-1] == pytest.approx(float(want), abs=1e-6)
    assert len(labels) == 10_000 and not torch.equal(perms[0], perms[1])
    shuffled = _finish(ContinualMNIST([_cfg(task="shuffled_labels")], device="cpu", data_root=data_root))
    assert not [m for _, m, _, _ in shuffled.rows[0] if m == "test_accuracy"]
