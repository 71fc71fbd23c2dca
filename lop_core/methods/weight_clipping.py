"""Weight clipping (Elsayed, Lan, Lyle and Mahmood 2024)."""

from __future__ import annotations

import math

import torch

from lop_core.methods.base import Method, check_at_least


class WeightClipping(Method):
    """After every step, clip every weight and bias of layer l to [-kappa s_l, kappa s_l].

    The paper's rule ("Weight clipping for deep continual and reinforcement learning", RLC 2024):
    w <- clip(w, -kappa s_l, kappa s_l) after each update, with s_l the bound of layer l's uniform
    initialization U(-s_l, s_l) and kappa >= 1 the clipping factor, so weights stay within a few
    times their initial range and cannot grow without bound. With a Kaiming-uniform model
    (``init="kaiming_uniform"``) s_l is that bound. Choices of ours, where the paper's networks
    differ: with a normal initialization N(0, sigma_l) (this book's default) s_l = sqrt(3)
    sigma_l, the bound of the uniform distribution of the same variance; a layer's biases are
    clipped with its weights' bound; layer-norm gains and biases are left alone.

    Hyperparameters: ``kappa`` >= 1 (may differ between runs; the paper sweeps it, 2 is our
    default). ``after_step`` returns ``clipped_weights`` [R]: the entries clipped at that step.
    """

    name = "weight_clipping"
    defaults = {"kappa": 2.0}

    @classmethod
    def validate(cls, cfg) -> None:
        check_at_least(cfg, "kappa", 1, " (a multiple of the initial range)")

    def __init__(self, model, optimizer, cfgs, generators):
        super().__init__(model, optimizer, cfgs, generators)
        kappa = self.per_run("kappa", self.params[0])
        uniform = getattr(model, "uniform_init", False)
        self.bounds: list[torch.Tensor | None] = []  # per parameter: [R, 1, ...] or None (not clipped)
        for p, (kind, layer) in zip(self.params, self.slots, strict=True):
            if kind not in ("weight", "bias"):
                self.bounds.append(None)
                continue
            s = model.stds[layer] * (1.0 if uniform else math.sqrt(3.0))
            self.bounds.append((kappa * s).view(-1, *[1] * (p.dim() - 1)))

    @torch.no_grad()
    def after_step(self, step: int) -> dict:
        clipped = torch.zeros(self.num_runs, device=self.params[0].device)
        for p, bound in zip(self.params, self.bounds, strict=True):
            if bound is None:
                continue
            clipped += (p.abs() > bound).flatten(1).sum(1)
            torch.clamp(p, -bound, bound, out=p)
        return {"clipped_weights": clipped}
