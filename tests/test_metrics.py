import math

import pytest
import torch

from lop_core import metrics


def test_dead_fraction_exact_and_share():
    h = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 2.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    # units 0 and 2 are zero on every input; unit 3 is zero on 3 of 4 inputs
    assert metrics.dead_fraction(h).item() == 0.5
    assert metrics.dead_fraction(h, inactive_share=0.75).item() == 0.75
    batched = torch.stack([h, torch.ones_like(h)])  # leading run dimension
    assert metrics.dead_fraction(batched).tolist() == [0.5, 0.0]


def test_saturated_fraction_counts_both_bounds():
    # tanh units: stuck low, stuck high, alive, mixed between bounds
    h = torch.tensor([[-1.0, 0.995, 0.1, -0.999], [-0.995, 1.0, -0.3, 0.999]])
    assert metrics.saturated_fraction(h, -1.0, 1.0).item() == 0.5


def test_duplicate_fraction_counts_one_member_per_pair():
    x = torch.randn(200, 1, generator=torch.Generator().manual_seed(0))
    y = torch.randn(200, 1, generator=torch.Generator().manual_seed(1))
    h = torch.cat([x, 2 * x, y, torch.zeros(200, 1)], dim=1)  # unit 1 is a scaled copy of unit 0
    assert metrics.duplicate_fraction(h).item() == 0.25


def test_duplicates_are_counted_within_a_layer_and_averaged_over_layers():
    """A unit of layer 1 that copies a unit of layer 3 is no duplicate (the "Barriers" definition)."""
    g = torch.Generator().manual_seed(0)
    x, y, z = (torch.randn(200, 1, generator=g) for _ in range(3))
    first = torch.cat([x, y], dim=1)  # no duplicate within it
    third = torch.cat([3 * x, z, 2 * z, -z], dim=1)  # its unit 1 and 2 are a pair; unit 0 copies layer 1
    both = metrics.layer_mean_duplicate_fraction([first, third])
    assert both.item() == (0.0 + 0.25) / 2
    assert metrics.duplicate_fraction(torch.cat([first, third], dim=1)).item() != both.item()
    batched = metrics.layer_mean_duplicate_fraction([first.expand(2, 200, 2), third.expand(2, 200, 4)])
    assert batched.tolist() == [0.125, 0.125]  # leading run dimension kept


def test_ranks_on_a_matrix_with_known_singular_values():
    s = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0])
    u, _ = torch.linalg.qr(torch.randn(50, 5, generator=torch.Generator().manual_seed(0)))
    v, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(1)))
    a = (u * s) @ v.T  # [50, 5] with singular values s
    p = s[:4] / s.sum()
    assert math.isclose(metrics.effective_rank(a).item(), math.exp(-(p * p.log()).sum().item()), rel_tol=1e-4)
    assert metrics.threshold_rank(a, 0.99).item() == 4  # 4, 3, 2 hold 90% of the sum; the fourth reaches 100%
    assert metrics.threshold_rank(a, 0.85).item() == 3  # 0.4, 0.7, 0.9 of the sum
    assert math.isclose(metrics.stable_rank(a).item(), (16 + 9 + 4 + 1) / 16, rel_tol=1e-5)
    assert math.isclose(metrics.participation_ratio(a).item(), 30**2 / (256 + 81 + 16 + 1), rel_tol=1e-5)


def test_rank_of_identity_and_zero():
    eye = torch.eye(6)
    assert math.isclose(metrics.effective_rank(eye).item(), 6.0, rel_tol=1e-6)
    assert metrics.threshold_rank(eye).item() == 6
    assert metrics.stable_rank(eye).item() == 6
    assert metrics.effective_rank(torch.zeros(4, 3)).item() == 0.0


def test_a_fully_dead_layer_has_threshold_rank_zero():
    assert metrics.threshold_rank(torch.zeros(1500, 10)).item() == 0
    mixed = torch.stack([torch.zeros(30, 4), torch.eye(30)[:, :4]])  # [R=2, 30, 4]: dead run, live run
    assert metrics.threshold_rank(mixed).tolist() == [0, 4]


def test_mean_abs_is_sum_over_count_per_run():
    a = torch.tensor([[1.0, -3.0], [0.0, 0.0]])  # [R=2, 2]
    b = torch.tensor([[[2.0]], [[-4.0]]])  # [R=2, 1, 1]
    assert metrics.mean_abs([a, b]).tolist() == pytest.approx([2.0, 4.0 / 3.0])
    assert metrics.mean_abs([a], run_dims=0).item() == 1.0
