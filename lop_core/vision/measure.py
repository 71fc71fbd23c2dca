"""What the ViT trainer measures besides accuracy: parameter magnitudes and the MLP hidden units.

``magnitudes`` is recorded every epoch: mean |theta| over all parameters and per group (attention,
MLP, patch embedding, class token and positional embedding, head; reference §4.5), and the
layer-norm gain. For the gain two numbers: ``effective`` is mean |gain| as the network applies it
(g, or 1 + w with reparameterized layer norm), comparable across both kinds; ``parameter`` is
mean |parameter| (|g| or |w|), the reference's ``ln_weight_magnitude``, which is not (§8 bug 14).

``hidden_units`` is recorded at every task's end, on un-augmented training images of the seen
classes, for the weights carried forward: the share of dormant MLP units per block (GELU output
h <= 0.01 on every token of every probe image, negative outputs included: the reference's post-run
rule, and the rule permuted MNIST applies to GELU, ``metrics.FROZEN_BOUNDS``) and the rank of the
last block's MLP units at the class token (the reference's post-run "stable rank" and two more).
"""

from __future__ import annotations

import torch

from lop_core import metrics
from lop_core.models.vit import ViT

#: A GELU unit is dormant when h <= low + DORMANT_EPS on every input, low = 0 (``metrics.FROZEN_BOUNDS``).
DORMANT_EPS = 0.01
DORMANT_AT_MOST = metrics.FROZEN_BOUNDS["gelu"][0] + DORMANT_EPS


@torch.no_grad()
def magnitudes(model: ViT) -> dict[tuple[str, str], float]:
    """(metric, layer) -> value: ``weight_magnitude`` per group and ``all``, ``ln_gain_magnitude``."""
    named = dict(model.named_parameters())
    out = {("weight_magnitude", "all"): float(metrics.mean_abs(list(named.values()), run_dims=0))}
    for group, names in model.groups().items():
        tensors = [named[n] for n in names]
        if group == "ln_gain":
            effective = [t + 1.0 if model.ln_kind == "reparam" else t for t in tensors]
            out[("ln_gain_magnitude", "effective")] = float(metrics.mean_abs(effective, run_dims=0))
            out[("ln_gain_magnitude", "parameter")] = float(metrics.mean_abs(tensors, run_dims=0))
        else:
            out[("weight_magnitude", group)] = float(metrics.mean_abs(tensors, run_dims=0))
    return out


@torch.no_grad()
def hidden_units(model: ViT, batches) -> dict[tuple[str, str], float]:
    """Dormant shares (per block and ``all``) and ranks of the last block's class-token units.

    Args:
        model: the ViT.
        batches: normalized images, an iterable of [B, 3, H, W] (so the probe never sits whole in memory).
    """
    peak, last = None, []
    for x in batches:
        feats = model.hidden_units(x)  # depth x [B, tokens, mlp]
        top = torch.stack([f.float().amax(dim=(0, 1)) for f in feats])  # [depth, mlp]: largest output
        peak = top if peak is None else torch.maximum(peak, top)
        last.append(feats[-1][:, 0].float())  # [B, mlp] at the class token
    dormant = peak <= DORMANT_AT_MOST  # [depth, mlp]: h <= 0.01 on every input
    out = {("dormant_fraction", str(k + 1)): float(d.float().mean()) for k, d in enumerate(dormant)}
    out[("dormant_fraction", "all")] = float(dormant.float().mean())
    h = torch.cat(last)  # [probe, mlp]
    layer = str(model.depth)
    out[("threshold_rank", layer)] = float(metrics.threshold_rank(h))
    out[("effective_rank", layer)] = float(metrics.effective_rank(h))
    out[("stable_rank", layer)] = float(metrics.stable_rank(h))
    return out
