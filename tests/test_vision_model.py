"""The ViT against hand-worked examples and torch's own layers; the batched augmentation."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn
from torchvision.transforms import InterpolationMode

from lop_core.models.vit import ViT, layer_norm
from lop_core.vision import augment


def test_reparameterized_layer_norm_is_ln_times_one_plus_w_plus_b():
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    w, b = torch.tensor([0.5, 0.0, -1.0, 2.0]), torch.tensor([0.0, 1.0, 0.0, -1.0])
    mean, var = 3.0, (4 + 1 + 0 + 9) / 4  # biased variance, as layer norm uses
    normed = (x - mean) / math.sqrt(var + 1e-6)
    assert torch.allclose(layer_norm(x, w, b, "reparam"), normed * (1 + w) + b, atol=1e-6)
    normed5 = (x - mean) / math.sqrt(var + 1e-5)
    assert torch.allclose(layer_norm(x, w, b, "regular"), normed5 * w + b, atol=1e-6)
    # at init (w = 0 reparam, g = 1 regular) both are the plain normalization
    zero, one = torch.zeros(4), torch.ones(4)
    assert torch.allclose(
        layer_norm(x, zero, zero, "reparam"), layer_norm(x, one, zero, "regular"), atol=1e-5
    )


def test_paper_vit_has_the_reference_size_and_init():
    vit = ViT(100, generator=torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in vit.parameters()) == 14_279_140  # reference §4.1
    assert vit.tokens == 65
    assert not vit.head_w.any() and not vit.head_b.any() and not vit.cls_token.any()
    assert not vit.ln1_w.any()  # reparam: the gain 1 + w starts at 1
    assert abs(vit.pos_embedding.std().item() - 0.02) < 1e-3
    bound = 1 / math.sqrt(384)
    assert vit.fc1_w.abs().max() <= bound and vit.fc1_w.abs().max() > 0.99 * bound
    assert vit.fc2_b.abs().max() <= 1 / math.sqrt(1536)
    assert vit.qkv_w.abs().max() <= math.sqrt(6 / (384 + 1152))
    regular = ViT(10, width=8, depth=1, heads=2, mlp=16, layer_norm="regular")
    assert torch.equal(regular.ln_w, torch.ones(8))


def test_forward_equals_torch_layers_with_the_same_weights():
    torch.manual_seed(0)
    vit = ViT(5, image_size=8, patch=4, width=8, depth=1, heads=2, mlp=12, dropout=0.0, layer_norm="regular")
    with torch.no_grad():
        for p in vit.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(3, 3, 8, 8)
    conv = nn.Conv2d(3, 8, 4, stride=4)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    with torch.no_grad():
        conv.weight.copy_(vit.patch_w)
        conv.bias.copy_(vit.patch_b)
        mha.in_proj_weight.copy_(vit.qkv_w[0])
        mha.in_proj_bias.copy_(vit.qkv_b[0])
        mha.out_proj.weight.copy_(vit.proj_w[0])
        mha.out_proj.bias.copy_(vit.proj_b[0])
    tokens = conv(x).flatten(2).transpose(1, 2)
    h = torch.cat([vit.cls_token.expand(3, -1, -1), tokens], 1) + vit.pos_embedding
    y = F.layer_norm(h, (8,), vit.ln1_w[0], vit.ln1_b[0], eps=1e-5)
    h = h + mha(y, y, y, need_weights=False)[0]
    y = F.layer_norm(h, (8,), vit.ln2_w[0], vit.ln2_b[0], eps=1e-5)
    h = h + F.linear(F.gelu(F.linear(y, vit.fc1_w[0], vit.fc1_b[0])), vit.fc2_w[0], vit.fc2_b[0])
    y = F.layer_norm(h, (8,), vit.ln_w, vit.ln_b, eps=1e-5)
    expected = F.linear(y[:, 0], vit.head_w, vit.head_b)
    assert torch.allclose(vit(x), expected, atol=1e-5)


def test_hidden_units_are_the_gelu_outputs_in_eval_mode():
    vit = ViT(4, image_size=8, patch=4, width=8, depth=2, heads=2, mlp=6, dropout=0.5)
    vit.train()
    feats = vit.hidden_units(torch.randn(2, 3, 8, 8))
    assert [tuple(f.shape) for f in feats] == [(2, 5, 6), (2, 5, 6)]
    assert vit.training and vit.features == []  # the mode and the stored features are restored
    again = vit.hidden_units(torch.randn(2, 3, 8, 8) * 0 + 1)
    assert torch.equal(again[1], vit.hidden_units(torch.ones(2, 3, 8, 8))[1])  # no dropout: deterministic


def test_weight_decay_groups_follow_the_reference_dim_rule():
    vit = ViT(4, image_size=8, patch=4, width=8, depth=2, heads=2, mlp=6)
    decayed = sorted(n for n, _ in vit.named_parameters() if vit.decayed(n))
    assert decayed == sorted(
        ["patch_w", "cls_token", "pos_embedding", "qkv_w", "proj_w", "fc1_w", "fc2_w", "head_w"]
    )


def test_crop_flip_and_rotation_by_hand():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(augment.flip(x, torch.tensor([True]))[0, 0, 0], torch.tensor([3.0, 2, 1, 0]))
    same = augment.reflect_crop(x, torch.tensor([1]), torch.tensor([1]), pad=1)
    assert torch.equal(same, x)  # the centred window is the image
    corner = augment.reflect_crop(x, torch.tensor([0]), torch.tensor([0]), pad=1)
    # reflection (no edge repeat): row -1 is row 1, column -1 is column 1
    assert corner[0, 0, 0].tolist() == [5.0, 4, 5, 6] and corner[0, 0, 1].tolist() == [1.0, 0, 1, 2]
    quarter = augment.rotate(x, torch.tensor([90.0]))
    assert torch.equal(quarter, torch.rot90(x, 1, dims=(2, 3)))  # counter-clockwise


@pytest.mark.parametrize("degrees", [3.3, 10.0, 15.0])
def test_rotation_equals_torchvision(degrees):
    x = torch.randn(2, 3, 32, 32)
    ours = augment.rotate(x, torch.full((2,), degrees))
    ref = TF.rotate(x, degrees, interpolation=InterpolationMode.NEAREST, fill=0)
    assert torch.equal(ours, ref)


def test_augment_draws_per_image_from_the_generator():
    x = torch.randn(64, 3, 32, 32)
    a = augment.augment(x, torch.Generator().manual_seed(0))
    b = augment.augment(x, torch.Generator().manual_seed(0))
    c = augment.augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    changed = (a != x).flatten(1).any(dim=1)
    assert changed.float().mean() > 0.9  # almost every image is moved somehow
    normed = augment.normalize(
        torch.full((1, 3, 2, 2), 255, dtype=torch.uint8), torch.zeros(3), torch.full((3,), 2.0)
    )
    assert torch.equal(normed, torch.full((1, 3, 2, 2), 0.5))


def test_dormant_rule_is_h_at_most_one_hundredth_on_every_input():
    """GELU units are dormant when h <= 0.01 on every input (the reference's rule, as for permuted
    MNIST's GELU): a unit stuck in GELU's negative trough (about -0.16) is dormant, one that is
    ever above 0.01 is not."""
    from lop_core.vision import measure

    vit = ViT(4, image_size=8, patch=4, width=8, depth=2, heads=2, mlp=6, dropout=0.0)
    with torch.no_grad():
        vit.fc1_w[0, 0].zero_()
        vit.fc1_b[0, 0] = -1.0  # block 1, unit 0: GELU(-1) = -0.159 on every token
        vit.fc1_w[0, 1].zero_()
        vit.fc1_b[0, 1] = -30.0  # unit 1: GELU(-30) = 0
        vit.fc1_w[0, 2:].zero_()
        vit.fc1_b[0, 2:] = 1.0  # units 2-5: GELU(1) = 0.84
    out = measure.hidden_units(vit, [torch.randn(3, 3, 8, 8)])
    assert out[("dormant_fraction", "1")] == pytest.approx(2 / 6)
