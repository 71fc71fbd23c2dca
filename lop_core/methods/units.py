"""Unit primitives shared by CBP and ReDo: unit utilities and the reset of a unit.

A *unit* j of hidden layer k owns row j of ``weights[k]`` (its incoming weights), ``biases[k][j]``,
column j of ``weights[k + 1]`` (its outgoing weights) and, with layer norm, entry j of
``ln_gains[k]`` and ``ln_biases[k]``. Everything is batched over the R runs of the population.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lop_core.methods.base import Method, fill_masked

UNIT_UTILITIES = ("contribution", "adaptable_contribution", "activation", "gradient", "magnitude")


def outgoing_magnitude(model, layer: int) -> torch.Tensor:
    """Mean |outgoing weight| of every unit of hidden layer ``layer``: [R, width]."""
    return model.weights[layer + 1].detach().abs().mean(dim=1)  # [R, out, width] -> [R, width]


def incoming_magnitude(model, layer: int) -> torch.Tensor:
    """Mean |incoming weight| of every unit of hidden layer ``layer``: [R, width]."""
    return model.weights[layer].detach().abs().mean(dim=-1)  # [R, width, in] -> [R, width]


def unit_utility(kind: str, model, layer: int, centre: torch.Tensor | None = None) -> torch.Tensor:
    """Instantaneous utility [R, width] of the units of hidden layer ``layer`` (reference §3.1).

    Reads the features of the last forward pass (the current batch) and, for ``gradient``, the
    gradient still held in ``weights[layer + 1].grad``. Means run over the batch (features) or the
    next layer's units (outgoing weights). The hooks run after the optimizer step, so the weights
    are the updated ones; the reference, inside ``backward``, reads them before the update.

    Args:
        kind: ``contribution`` mean|W_out[:, j]| * mean_b|h_bj|; ``adaptable_contribution`` the
            same divided by mean|W_in[j, :]| (Dohare's ``adaptable_contribution``, peer_code.md
            §2.2 step 4: a unit whose incoming weights are large adapts slowly); ``activation``
            mean_b|h_bj|; ``gradient`` |sum_i dL/dW_out[i, j] * W_out[i, j]|; ``magnitude``
            mean|W_out[:, j]|.
        model: the population MLP.
        layer: hidden layer index k (0-based).
        centre: [R, width] subtracted from the features before |.| in ``contribution`` and
            ``adaptable_contribution``: Dohare's mean-corrected contributions use the unit's
            bias-corrected running mean activation here.
    """
    if kind == "magnitude":
        return outgoing_magnitude(model, layer)
    if kind == "gradient":
        w = model.weights[layer + 1]
        return (w.grad * w.detach()).sum(dim=1).abs()  # [R, out, width] -> [R, width]
    h = model.features[layer].detach()  # [R, B, width]
    if centre is not None:
        h = h - centre.unsqueeze(1)
    activation = h.abs().mean(dim=1)  # [R, width]
    if kind == "activation":
        return activation
    contribution = outgoing_magnitude(model, layer) * activation
    if kind == "adaptable_contribution":
        return contribution / incoming_magnitude(model, layer)
    return contribution


def layer_output_mean(model, layer: int) -> torch.Tensor:
    """Batch mean [R, width] of what hidden layer ``layer`` passes to the next layer.

    Without layer norm this is the activation; with it, the normalized and scaled activation
    ``LN(h) * gain + bias`` (with the parameters as they are now), which is what the outgoing
    weights multiply.
    """
    h = model.features[layer].detach()  # [R, B, width]
    if model.layer_norm:
        h = F.layer_norm(h, (model.width,), eps=1e-5)
        h = torch.addcmul(model.ln_biases[layer].unsqueeze(1), h, model.ln_gains[layer].unsqueeze(1))
    return h.mean(dim=1)


@torch.no_grad()
def reset_units(
    method: Method, layer: int, mask: torch.Tensor, counts: list[int], output_mean: torch.Tensor | None = None
) -> None:
    """Replace the units ``mask`` of hidden layer ``layer`` by fresh ones (reference §3.1, Dohare §2.2).

    Incoming weights are redrawn from the layer's initial distribution N(0, ``model.stds[k]``)
    with each run's own generator, the bias is set to 0, the outgoing weights to 0 (so the new
    unit does not change the network's output yet), layer-norm gain and bias to 1 and 0. The
    optimizer state of exactly these entries is reset as the method's ``state_reset`` says.

    Args:
        method: the calling method (model, optimizer, generators, ``state_reset``).
        layer: hidden layer index k.
        mask: bool [R, width], True for the units to replace.
        counts: number of replaced units of every run (host ints).
        output_mean: if given, [R, width] mean output of every unit; the next layer's bias absorbs
            ``W_out[:, j] * output_mean[j]`` of each replaced unit j, which keeps the mean of the
            next layer's pre-activation unchanged (Dohare's bias correction, §2.2 step 8).
    """
    model = method.model
    w_in, w_out = model.weights[layer], model.weights[layer + 1]
    if output_mean is not None:
        kept = torch.where(mask, output_mean, torch.zeros_like(output_mean)).unsqueeze(-1)  # [R, width, 1]
        model.biases[layer + 1].add_(torch.bmm(w_out.detach(), kept).squeeze(-1))  # [R, out]
    rows, cols = mask.unsqueeze(-1), mask.unsqueeze(1)  # [R, width, 1] rows of w_in, [R, 1, width] cols
    fill_masked(method, method.slot("weight", layer), rows, [c * w_in.shape[-1] for c in counts])
    w_out.masked_fill_(cols, 0.0)
    touched = [(("weight", layer), rows), (("bias", layer), mask), (("weight", layer + 1), cols)]
    if model.layer_norm:
        touched += [(("ln_gain", layer), mask), (("ln_bias", layer), mask)]
    for kind_layer, where in touched:
        index = method.slot(*kind_layer)
        if kind_layer[0] != "weight":
            fill_masked(method, index, where, counts, resample=False)  # bias 0, LN gain 1 / bias 0
        method.reset_optimizer_state(index, where)
