"""Why plasticity is lost: frozen units and cloned units (Joudaki et al. 2025, "Barriers").

*Frozen units* (finding B1): a ReLU unit that is zero on (almost) every input, or a tanh/sigmoid
unit stuck at a bound, passes back (almost) no gradient to its incoming weights
(``dL/dW_j = sum_n act'(z_nj) delta_nj x_n``, and ``act'`` is 0 or ~0 there), so gradient descent
cannot move it out. ``frozen_units`` finds them; ``incoming_grad_norms`` measures their gradient.

*Cloned units* (finding B2): ``widen_by_cloning`` makes every hidden unit of an MLP ``factor``
copies with the same incoming weights and its outgoing weights split among them. The function is
unchanged, and so is the gradient of every clone: gradient descent keeps the copies identical
(``clone_gap`` stays 0), so the wide network stays on a manifold of narrow networks. Noise
injection (``perturb_gradients``) or dropout breaks the symmetry. The manifold is invariant in exact
arithmetic, not attracting: in float32 two clones' sums may round differently by one ulp, and with
batch norm such a difference can grow (in float64 the clones stay bit-identical in the tests).
"""

from __future__ import annotations

import torch

from lop_core import metrics
from lop_core.models.feedforward import MLP

#: "Barriers" rule: a unit is frozen when it is dead/saturated on at least this share of inputs.
FROZEN_SHARE = 0.95


def unit_matrix(h: torch.Tensor) -> torch.Tensor:
    """Activations as [samples, units]: conv maps [B, C, H, W] -> [B*H*W, C]; [B, units] unchanged."""
    if h.dim() == 4:
        return h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])  # every position is a sample of unit c
    return h.reshape(-1, h.shape[-1])


def frozen_units(h: torch.Tensor, activation: str, share: float = FROZEN_SHARE) -> torch.Tensor:
    """Per unit (bool ``[units]``): dead (ReLU family: exactly 0) or saturated (tanh, sigmoid: within
    0.01 of a bound) on at least ``share`` of the inputs ``h`` [N, units] (post-activation)."""
    if activation in metrics.FROZEN_BOUNDS:
        return metrics.saturated_units(h, *metrics.FROZEN_BOUNDS[activation], share=share)
    return metrics.dead_units(h, inactive_share=share)


def incoming_grad_norms(model: MLP) -> list[torch.Tensor]:
    """Per hidden layer, the norm of every unit's incoming-weight and bias gradient, ``[width]``.

    Call after ``loss.backward()``. Row j of ``W_k.grad`` is unit j's incoming gradient.
    """
    return [
        torch.cat([lin.weight.grad, lin.bias.grad.unsqueeze(1)], dim=1).norm(dim=1) for lin in model.hidden
    ]


def persistence(before: torch.Tensor, after: torch.Tensor) -> float:
    """Share of the units flagged in ``before`` still flagged in ``after`` (nan if none were)."""
    n = int(before.sum())
    return float((before & after).sum()) / n if n else float("nan")


@torch.no_grad()
def widen_by_cloning(model: MLP, factor: int) -> MLP:
    """A ``factor``-times wider copy of ``model`` computing the same function.

    Hidden unit j of every layer becomes units ``j*factor ... j*factor + factor-1`` (clones): each
    gets unit j's incoming weights, bias and norm parameters (batch-norm running statistics too);
    every weight *leaving* unit j is divided by ``factor`` and given to each clone, so the next layer
    sums ``factor * (w / factor) h_j = w h_j``. A layer norm over the duplicated units sees the same
    mean and variance, so it is preserved as well.

    Args:
        model: a trained ``lop_core.models.feedforward.MLP``.
        factor: copies per unit (>= 1).

    Returns:
        The wide MLP, in the same train/eval mode, on the same device and dtype.
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    first = model.hidden[0]
    wide = MLP(
        first.in_features,
        model.width * factor,
        len(model.hidden),
        model.head.out_features,
        model.act_name,
        model.norm_kind,
        model.drop.p,
    ).to(device=first.weight.device, dtype=first.weight.dtype)
    for k, (src, dst) in enumerate(zip(model.hidden, wide.hidden, strict=True)):
        w = src.weight.repeat_interleave(factor, dim=0)  # [width*f, in]: clones of a unit are adjacent
        if k > 0:  # inputs come from the clones of the previous layer: split the weights leaving them
            w = w.repeat_interleave(factor, dim=1) / factor
        dst.weight.copy_(w)
        dst.bias.copy_(src.bias.repeat_interleave(factor))
    for src, dst in zip(model.norms, wide.norms, strict=True):
        for name, t in [*src.named_parameters(), *src.named_buffers()]:
            target = dst.get_parameter(name) if name in dict(dst.named_parameters()) else dst.get_buffer(name)
            target.copy_(t if t.dim() == 0 else t.repeat_interleave(factor))  # num_batches_tracked: scalar
    wide.head.weight.copy_(model.head.weight.repeat_interleave(factor, dim=1) / factor)
    wide.head.bias.copy_(model.head.bias)
    return wide.train(model.training)


def _spread(t: torch.Tensor, dim: int, factor: int) -> torch.Tensor:
    """Largest |difference| between an entry of a clone group (along ``dim``) and the group's first."""
    g = t.unflatten(dim, (-1, factor))  # [..., units, factor, ...]
    return (g - g.narrow(dim + 1, 0, 1)).abs().amax()


@torch.no_grad()
def clone_gap(model: MLP, factor: int) -> float:
    """How far the clones of ``widen_by_cloning(., factor)`` have drifted apart.

    The largest absolute difference, over every hidden layer and clone group, between a clone's
    incoming weights, bias, norm parameters or outgoing weights and those of its group's first
    member. 0 right after cloning; stays 0 (up to float rounding) under gradient descent.
    """
    gaps = []
    for k, lin in enumerate(model.hidden):
        gaps += [_spread(lin.weight, 0, factor), _spread(lin.bias, 0, factor)]
        if k > 0:
            gaps.append(_spread(lin.weight, 1, factor))
        gaps += [_spread(p, 0, factor) for p in model.norms[k].parameters()]
    gaps.append(_spread(model.head.weight, 1, factor))
    return float(torch.stack(gaps).max())


def feature_clone_gap(h: torch.Tensor, factor: int) -> float:
    """Largest |difference| between the activations of clones (``h`` [N, units], adjacent clones)."""
    return float(_spread(h.detach(), h.dim() - 1, factor))


@torch.no_grad()
def perturb_gradients(params, std: float, generator: torch.Generator | None = None) -> None:
    """Noise injection ("Barriers"' NoisySGD): ``g <- g + std * ||g|| * eps``, ``eps ~ N(0, I)``.

    The noise of every parameter tensor is scaled by that tensor's gradient norm, so it shrinks as
    training converges. Drawn on the CPU from ``generator`` (reproducible), then moved.
    """
    if std <= 0:
        return
    for p in params:
        if p.grad is None:
            continue
        eps = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        p.grad.add_(eps, alpha=std * float(p.grad.norm()))
