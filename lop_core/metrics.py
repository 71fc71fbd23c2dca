"""Plasticity metrics: pure functions on tensors.

Activation matrices are ``[..., N, units]`` (any leading dimensions, e.g. the run dimension R of a
population); every function reduces the last two dimensions and keeps the leading ones. Three
different quantities are called "stable rank" in the sources; here they have three names:

* ``threshold_rank`` (Kumar et al.'s srank_delta; the reference code's "stable rank"): the number
  of singular values that hold 99% of their sum;
* ``stable_rank``: ``||A||_F^2 / ||A||_2^2`` (the classical definition);
* ``participation_ratio``: ``(sum s^2)^2 / sum s^4`` (what the "Barriers" code computes).
"""

from __future__ import annotations

import math

import torch

#: For each bounded activation, the bounds a *saturated* unit sits at (the ReLU family has none:
#: its frozen units are dead, exactly zero). reference_code.md §1.5, with its bug 2 (the sign) fixed.
FROZEN_BOUNDS = {
    "tanh": (-1.0, 1.0),
    "sigmoid": (0.0, 1.0),
    "gelu": (0.0, math.inf),
    "silu": (0.0, math.inf),
}


def _svdvals(a: torch.Tensor) -> torch.Tensor:
    """Singular values in float64 (small matrices; float32 SVD can fail to converge)."""
    return torch.linalg.svdvals(a.double())


def dead_units(h: torch.Tensor, inactive_share: float = 1.0, eps: float = 0.0) -> torch.Tensor:
    """Per unit ``[..., units]`` (bool): ``|h| <= eps`` on at least ``inactive_share`` of the N inputs."""
    zero = (h.abs() <= eps).to(h.dtype).mean(dim=-2)  # [..., units] share of inputs at zero
    return zero >= inactive_share


def dead_fraction(h: torch.Tensor, inactive_share: float = 1.0, eps: float = 0.0) -> torch.Tensor:
    """Share of units that are (almost) never active on the probe batch.

    Args:
        h: post-activation outputs ``[..., N, units]``.
        inactive_share: a unit is dead if ``|h| <= eps`` on at least this share of the N inputs.
            1.0 (exact zero on the whole batch) is the reference's MNIST rule; 0.95 is the
            "Barriers" rule.
        eps: what counts as zero.

    Returns:
        ``[...]`` fraction of dead units.
    """
    return dead_units(h, inactive_share, eps).to(h.dtype).mean(dim=-1)


def saturated_units(
    h: torch.Tensor, low: float, high: float, eps: float = 0.01, share: float = 1.0
) -> torch.Tensor:
    """Per unit ``[..., units]`` (bool): within ``eps`` of one bound on at least ``share`` of the inputs.

    The bound is the same for those inputs: a unit at ``low`` on half the inputs and at ``high`` on
    the other half passes gradient between them and is not saturated.
    """
    at_low = (h <= low + eps).to(h.dtype).mean(dim=-2) >= share
    at_high = (h >= high - eps).to(h.dtype).mean(dim=-2) >= share
    return at_low | at_high


def saturated_fraction(
    h: torch.Tensor, low: float, high: float, eps: float = 0.01, share: float = 1.0
) -> torch.Tensor:
    """Share of units of a bounded activation stuck at one of its bounds (``saturated_units``).

    With ``share=1`` a unit must be within ``eps`` of the bound on every input; the "Barriers"
    rule is ``share=0.95``. (The reference tests ``>= high + eps``, which never holds;
    reference_code.md §8 bug 2.) Use ``low, high = 0, 1`` for sigmoid and ``-1, 1`` for tanh.
    """
    return saturated_units(h, low, high, eps, share).to(h.dtype).mean(dim=-1)


def duplicate_fraction(h: torch.Tensor, threshold: float = 0.95) -> torch.Tensor:
    """Share of the units of *one layer* whose activations nearly equal a later unit's (uncentred cosine).

    Unit j is a duplicate if some unit k > j of the same layer has ``cos(h[:, j], h[:, k]) >
    threshold``, so one member of each near-identical pair counts. All-zero units are never
    duplicates. Units of different layers are never compared (the "Barriers" paper's definition:
    a duplicate is a unit that computes what another unit of its layer computes); for a whole
    network use ``layer_mean_duplicate_fraction``.
    """
    norms = h.norm(dim=-2, keepdim=True)  # [..., 1, units]
    unit = h / norms.clamp_min(1e-12)
    cos = unit.mT @ unit  # [..., units, units]
    upper = torch.triu(torch.ones_like(cos, dtype=torch.bool), diagonal=1)
    dup = ((cos > threshold) & upper).any(dim=-1)
    return dup.to(h.dtype).mean(dim=-1)


def layer_mean_duplicate_fraction(layers: list[torch.Tensor], threshold: float = 0.95) -> torch.Tensor:
    """The network's duplicate share: ``duplicate_fraction`` of every layer ``[..., N, units]``, averaged."""
    if not layers:
        raise ValueError("layer_mean_duplicate_fraction needs at least one layer")
    return sum(duplicate_fraction(h, threshold) for h in layers) / len(layers)


def effective_rank(h: torch.Tensor) -> torch.Tensor:
    """``exp(-sum p log p)`` with ``p = s / sum s`` (Roy & Vetterli 2007); 0 for a zero matrix."""
    s = _svdvals(h)
    total = s.sum(dim=-1, keepdim=True)
    p = s / total.clamp_min(1e-300)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(dim=-1)
    return torch.where(total.squeeze(-1) > 0, entropy.exp(), torch.zeros_like(entropy)).to(h.dtype)


def threshold_rank(h: torch.Tensor, share: float = 0.99) -> torch.Tensor:
    """Smallest k such that the k largest singular values hold ``share`` of their sum.

    This is Kumar et al.'s srank with delta = 1 - share, and what the reference code calls
    "stable rank" (reference_code.md §1.5): uncentred, not normalised. A zero matrix (a fully
    dead layer) has rank 0: no singular value holds anything.
    """
    s = _svdvals(h)
    total = s.sum(dim=-1, keepdim=True)
    cum = s.cumsum(dim=-1) / total.clamp_min(1e-300)
    # count of prefixes still below the share, plus one: the first index reaching it
    k = ((cum < share - 1e-12).sum(dim=-1) + 1).clamp(max=s.shape[-1])
    return torch.where(total.squeeze(-1) > 0, k, torch.zeros_like(k)).to(h.dtype)


def stable_rank(h: torch.Tensor) -> torch.Tensor:
    """``||A||_F^2 / ||A||_2^2 = sum s^2 / max s^2``; 0 for a zero matrix."""
    s2 = _svdvals(h) ** 2
    return (s2.sum(dim=-1) / s2[..., 0].clamp_min(1e-300)).to(h.dtype)


def participation_ratio(h: torch.Tensor) -> torch.Tensor:
    """``(sum s^2)^2 / sum s^4`` (the "Barriers" code's "stable rank", without centring)."""
    s2 = _svdvals(h) ** 2
    return (s2.sum(dim=-1) ** 2 / (s2**2).sum(dim=-1).clamp_min(1e-300)).to(h.dtype)


def mean_abs(tensors: list[torch.Tensor], run_dims: int = 1) -> torch.Tensor:
    """Mean |x| over all entries of ``tensors``, per leading run index: ``sum |x| / #entries``.

    With ``run_dims=1`` every tensor is ``[R, ...]`` and the result is ``[R]``; with
    ``run_dims=0`` the result is a scalar. Used for the weight magnitude (all parameters), the
    gradient magnitude (all gradients) and the layer-norm gain magnitude (the gains only).
    """
    if not tensors:
        raise ValueError("mean_abs needs at least one tensor")
    total = sum(t.abs().flatten(run_dims).sum(-1) for t in tensors)
    count = sum(t[(0,) * run_dims].numel() for t in tensors)
    return total / count
