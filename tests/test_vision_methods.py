"""The plasticity methods on the ViT: hand-made situations with a known answer."""

import math

import pytest
import torch
import torch.nn.functional as F

from lop_core import config
from lop_core.models.vit import BLOCK_PARAMS, ViT
from lop_core.vision.methods import make_method
from lop_core.vision.train import make_optimizer

WIDTH, MLP, DEPTH = 8, 6, 2


def _setup(method, **args):
    cfg = config.resolve(
        "incremental_cifar",
        "smoke",
        method=method,
        width=WIDTH,
        mlp=MLP,
        depth=DEPTH,
        heads=2,
        patch=4,
        **args,
    )
    vit = ViT(4, image_size=8, patch=4, width=WIDTH, depth=DEPTH, heads=2, mlp=MLP, dropout=0.0)
    sgd = make_optimizer(vit, cfg)
    vit.keep_features = True
    x, y = torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 0, 1, 1])
    F.cross_entropy(vit(x)[:, :2], y).backward()
    sgd.step()  # momentum buffers exist from here on
    return cfg, vit, sgd, make_method(cfg, vit, sgd), x


def test_swr_sees_every_tensor_of_every_block():
    _, vit, _, swr, _ = _setup("swr")
    per_block = len(BLOCK_PARAMS)
    others = len(list(vit.named_parameters())) - per_block
    assert len(swr.params) == others + per_block * DEPTH
    assert all(p.shape[0] == 1 for p in swr.params)


@pytest.mark.parametrize(("reinit", "state_reset"), [("resample", "none"), ("mean", "moments")])
def test_swr_reinitializes_entries_of_zero_utility_from_the_init(reinit, state_reset):
    _, vit, sgd, swr, _ = _setup(
        "swr", reinit=reinit, state_reset=state_reset, reinit_freq=1, reinit_factor=0.0
    )
    for p in vit.parameters():  # utility |g * theta| > 0 everywhere ...
        p.grad = torch.ones_like(p)
        with torch.no_grad():
            p.add_(1.0)
    vit.fc1_w.grad[1, 2, :3] = (
        0.0  # ... except three entries of block 1's fc1 (factor 0: only utility 0 goes)
    )
    before = {n: p.detach().clone() for n, p in vit.named_parameters()}
    momentum_before = sgd.state[vit.fc1_w]["momentum_buffer"].clone()
    out = swr.after_step(1)
    assert out["reset_weights"].tolist() == [3.0]
    for n, p in vit.named_parameters():
        changed = p != before[n]
        if n != "fc1_w":
            assert not changed.any(), n
    changed = vit.fc1_w != before["fc1_w"]
    assert changed[1, 2, :3].all() and changed.sum() == 3
    new = vit.fc1_w[1, 2, :3]
    if reinit == "mean":
        assert not new.any()  # the mean of U(-b, b)
    else:
        assert new.abs().max() <= 1 / math.sqrt(WIDTH)  # fc1's own init U(+-1/sqrt(width))
    momentum = sgd.state[vit.fc1_w]["momentum_buffer"]
    if state_reset == "none":
        assert torch.equal(momentum, momentum_before)  # the reference keeps the momentum
    else:
        assert not momentum[1, 2, :3].any() and torch.equal(momentum[0], momentum_before[0])


def test_redo_replaces_a_dormant_mlp_unit_of_one_block():
    _, vit, sgd, redo, x = _setup("redo", reinit_frequency=1, dormant_threshold=0.1, state_reset="moments")
    with torch.no_grad():
        vit.fc1_w[0, 4] = 0.0
        vit.fc1_b[0, 4] = -30.0  # GELU(-30) = 0 on every token: unit 4 of block 0 is dormant
        vit.fc2_w[0, :, 4] = 1.0
    vit(x)  # the batch whose features ReDo reads
    before = {n: p.detach().clone() for n, p in vit.named_parameters()}
    out = redo.after_step(1)
    assert out["reset_units"].tolist() == [1.0, 0.0]  # per block
    assert vit.fc1_w[0, 4].any() and vit.fc1_w[0, 4].abs().max() <= 1 / math.sqrt(WIDTH)
    assert vit.fc1_b[0, 4] == 0.0 and not vit.fc2_w[0, :, 4].any()  # bias 0, outgoing weights 0
    assert not sgd.state[vit.fc2_w]["momentum_buffer"][0, :, 4].any()
    keep = torch.ones(MLP, dtype=torch.bool)
    keep[4] = False
    assert torch.equal(vit.fc1_w[0, keep], before["fc1_w"][0, keep])
    assert torch.equal(vit.fc1_w[1], before["fc1_w"][1]) and torch.equal(vit.qkv_w, before["qkv_w"])


def test_cbp_replaces_the_lowest_contribution_unit_of_each_block():
    _, vit, _, cbp, x = _setup("cbp", maturity_threshold=0, replacement_rate=1 / MLP)
    with torch.no_grad():
        vit.fc2_w[:, :, 1] = 1e-4  # unit 1 of both blocks contributes least
    vit(x)
    out = cbp.after_step(1)
    assert out["reset_units"].tolist() == [1.0, 1.0]  # rate x eligible = 1 unit per block per step
    assert not vit.fc2_w[:, :, 1].any() and not vit.fc1_b[:, 1].any()
    assert vit.fc2_w[:, :, [0, 2, 3, 4, 5]].all()


def test_reset_draws_a_new_network_and_forgets_the_momentum():
    _, vit, sgd, reset, _ = _setup("reset")
    before = {n: p.detach().clone() for n, p in vit.named_parameters()}
    assert reset.on_task_start(0) is None
    out = reset.on_task_start(1)
    assert out["reset_weights"].item() == sum(p.numel() for p in vit.parameters())
    assert not torch.equal(vit.qkv_w, before["qkv_w"]) and not vit.head_w.any()
    assert len(sgd.state) == 0


def test_shrink_perturb_adds_noise_of_the_given_variance():
    _, vit, _, sp, _ = _setup("shrink_perturb", noise_variance=1e-2)
    before = torch.cat([p.detach().flatten().clone() for p in vit.parameters()])
    sp.after_step(1)
    noise = torch.cat([p.detach().flatten() for p in vit.parameters()]) - before
    assert noise.numel() > 1000 and abs(noise.std().item() - 0.1) < 0.01
    with pytest.raises(config.ConfigError, match="weight_decay"):
        config.resolve("incremental_cifar", "smoke", method="shrink_perturb", weight_decay=0.0)
