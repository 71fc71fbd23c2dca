"""The class-incremental trainer on a tiny synthetic image tree: protocol details and resume."""

import json
import math

import pytest
import torch
from conftest import write_image_tree

from lop_core import config, experiment, runs
from lop_core.vision import train as vtrain
from lop_core.vision.train import IncrementalCIFAR, Run

CLASSES = 4


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """A data root with ``tree/{train,test}/<class>/*.png``: 16 x 16 images, one colour per class plus noise."""
    return write_image_tree(
        tmp_path_factory.mktemp("vision"), CLASSES, {"train": 14, "test": 5}, size=16, noise=30
    )


def _cfg(seed=0, **kw):
    values = {
        "data_dir": "tree",
        "image_size": 16,
        "patch": 8,
        "width": 16,
        "depth": 2,
        "heads": 2,
        "mlp": 8,
        "num_tasks": 2,
        "epochs_per_task": 3,
        "train_per_class": 8,
        "val_per_class": 4,
        "test_per_class": 4,
        "batch_size": 4,
        "probe_size": 8,
        **kw,
    }
    return config.resolve("incremental_cifar", "smoke", seed=seed, **values)


def _trainer(cfgs, root, epochs=None):
    trainer = IncrementalCIFAR(cfgs, device="cpu", data_root=root)
    for _ in range(trainer.total if epochs is None else epochs):
        trainer.train_task()
    return trainer


@pytest.mark.parametrize(
    ("method", "args"), [("base", {}), ("cbp", {"maturity_threshold": 1, "replacement_rate": 0.3})]
)
def test_population_equals_single_runs(tiny_root, method, args):
    both = _trainer([_cfg(3, method=method, **args), _cfg(5, method=method, **args)], tiny_root)
    for r, seed in enumerate((3, 5)):
        alone = _trainer([_cfg(seed, method=method, **args)], tiny_root)
        assert both.rows[r] == alone.rows[0]
    assert both.rows[0] != both.rows[1]
    assert both.runs[0].class_order != both.runs[1].class_order


def test_logits_are_restricted_to_the_classes_seen(tiny_root):
    trainer = _trainer([_cfg()], tiny_root, epochs=3)  # task 0: 2 of the 4 classes
    run = trainer.runs[0]
    assert run.seen == 2
    assert not run.model.head_w[2:].any() and not run.model.head_b[2:].any()  # never a gradient
    assert run.model.head_w[:2].any()
    labels = run.rank[run.data.train_y[run.task_train]]
    assert set(labels.tolist()) == {0, 1} and len(run.task_train) == 2 * 8
    seen = {run.class_order[0], run.class_order[1]}
    assert set(run.data.train_y[run.task_train].tolist()) == seen
    trainer.train_task()
    assert run.seen == 4 and len(run.task_train) == 4 * 8 and run.model.head_w[2:].any()


def test_best_validation_weights_are_carried(tiny_root, monkeypatch):
    scripted = {"val": iter([0.2, 0.9, 0.5]), "test": iter([0.4, 0.3, 0.8])}
    snapshots = []
    real = Run.accuracy

    def fake(self, idx, train):
        if train:
            real(self, idx, train)  # evaluation still runs (no effect on the weights)
            snapshots.append({n: p.detach().clone() for n, p in self.model.named_parameters()})
            return next(scripted["val"])
        return next(scripted["test"])

    monkeypatch.setattr(Run, "accuracy", fake)
    run = _trainer([_cfg()], tiny_root, epochs=3).runs[0]
    for n, p in run.model.named_parameters():
        assert torch.equal(p, snapshots[1][n]), n  # epoch 1 had the best validation accuracy
    rows = {m: v for (e, m, _, v) in run.rows if e == 2}
    assert rows["best_val_accuracy"] == 0.9
    assert rows["carried_test_accuracy"] == pytest.approx(0.3)  # test accuracy of the carried weights
    assert rows["best_test_accuracy"] == pytest.approx(0.8)  # the reference's headline: max over epochs


def test_one_cycle_schedule_restarts_every_task_and_decay_follows_it(tiny_root):
    trainer = IncrementalCIFAR([_cfg(step_size=0.01, weight_decay=6e-6)], device="cpu", data_root=tiny_root)
    run = trainer.runs[0]
    seen = []
    run.sgd.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append(
            (
                run.task,
                opt.param_groups[0]["lr"],
                opt.param_groups[0]["weight_decay"],
                opt.param_groups[0]["momentum"],
            )
        )
    )
    for _ in range(trainer.total):
        trainer.train_task()
    for task, steps in ((0, 3 * (2 * 8 // 4)), (1, 3 * (4 * 8 // 4))):
        lrs = [lr for t, lr, _, _ in seen if t == task]
        assert len(lrs) == steps
        assert lrs[0] == pytest.approx(0.01 / 25)  # a fresh warm-up from max_lr / 25
        assert 0.9 * 0.01 < max(lrs) <= 0.01 and lrs.index(max(lrs)) < steps / 2  # warm-up, then decay
        assert lrs[-1] < 0.01 / 25
    for _, lr, wd, _ in seen:
        assert lr * wd == pytest.approx(6e-6)  # not rescaled: the per-step decay lr * wd is constant
    momenta = [m for _, _, _, m in seen]
    assert max(momenta) == pytest.approx(0.95) and min(momenta) < 0.9  # cycled, as in the reference


def test_rescaled_decay_and_no_decay_on_1d_parameters(tiny_root):
    run = _trainer([_cfg(rescaled_wd=True, wd_on_1d_params=False, weight_decay=1e-3)], tiny_root, 1).runs[0]
    decayed, other = run.sgd.param_groups
    assert decayed["weight_decay"] == 1e-3 and other["weight_decay"] == 0.0
    names = {id(p): n for n, p in run.model.named_parameters()}
    assert {names[id(p)] for p in other["params"]} == {
        "patch_b", "ln1_w", "ln1_b", "qkv_b", "proj_b", "ln2_w", "ln2_b", "fc1_b", "fc2_b", "ln_w", "ln_b", "head_b",
    }  # fmt: skip


def test_augmentation_never_touches_validation_or_test_images(tiny_root, monkeypatch):
    augmented = []
    real = vtrain.augment

    def counting(x, generator):
        augmented.append(len(x))
        return real(x, generator)

    monkeypatch.setattr(vtrain, "augment", counting)
    run = _trainer([_cfg()], tiny_root, epochs=1).runs[0]
    assert sum(augmented) == run.steps_per_epoch * 4 == len(run.task_train)  # training batches only
    val = [v for (_, m, _, v) in run.rows if m == "val_accuracy"]
    assert val == [run.accuracy(run.task_val, train=True)]  # evaluation is deterministic: no augmentation


def test_a_non_finite_loss_marks_the_run_diverged(tiny_root, monkeypatch):
    trainer = IncrementalCIFAR([_cfg(0), _cfg(1)], device="cpu", data_root=tiny_root)
    trainer.train_task()
    bad = trainer.runs[0]
    bad.forward = lambda x: bad.model(x) * math.nan
    out = trainer.train_task()
    assert math.isnan(out["online_accuracy"][0]) and not math.isnan(out["online_accuracy"][1])
    assert trainer.diverged[0]["diverged_epoch"] == 1 and trainer.diverged[1] is None
    assert {e for (e, *_) in bad.rows} == {0}
    assert "mean_best_test_accuracy" not in bad.summary()


@pytest.mark.parametrize(
    ("method", "overrides", "killed_after"),
    [
        ("base", {}, 2),  # mid-task
        ("swr", {"reinit_freq": 3, "reinit_factor": 0.5, "state_reset": "moments"}, 3),  # at a task boundary
        ("cbp", {"maturity_threshold": 2, "replacement_rate": 0.2}, 4),
        ("redo", {"reinit_frequency": 2, "dormant_threshold": 0.5}, 2),
        ("shrink_perturb", {"noise_variance": 1e-4}, 2),
        ("reset", {}, 4),
    ],
)
def test_a_killed_run_resumes_to_the_same_numbers(
    tiny_root, tmp_path, monkeypatch, method, overrides, killed_after
):
    cfgs = [_cfg(s, method=method, **overrides) for s in (0, 1)]
    straight = tmp_path / "straight"
    experiment.run_or_load(cfgs, runs_dir=straight, data_root=tiny_root, progress=False)
    interrupted = tmp_path / "interrupted"
    real, calls = IncrementalCIFAR.train_task, {"n": 0}

    def dying(self):
        if calls["n"] == killed_after:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(self)

    monkeypatch.setattr(IncrementalCIFAR, "train_task", dying)
    with pytest.raises(KeyboardInterrupt):
        experiment.run_or_load(
            cfgs, runs_dir=interrupted, data_root=tiny_root, progress=False, checkpoint_every=0
        )
    monkeypatch.setattr(IncrementalCIFAR, "train_task", real)
    experiment.run_or_load(cfgs, runs_dir=interrupted, data_root=tiny_root, progress=False)
    for c in cfgs:
        a = runs.run_path(c, straight)
        b = runs.run_path(c, interrupted)
        assert (a / "metrics.csv.gz").read_bytes() == (b / "metrics.csv.gz").read_bytes()
        assert (a / "summary.json").read_text() == (b / "summary.json").read_text()


def test_bench_vit_writes_a_table(tmp_path):
    from lop_core.cli import main

    out = tmp_path / "vit.json"
    argv = ["bench", "vit", "--device", "cpu", "--methods", "base,swr", "--budget", "0.05", "--repeats", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    table = json.loads(out.read_text())
    assert [r["method"] for r in table["rows"]] == ["base", "swr"]
    assert all(r["images_per_s"] > 0 and r["width"] == 48 for r in table["rows"])  # the quick ViT on a CPU
