"""Shrink-and-perturb (Ash and Adams 2020), as the SWR paper uses it (reference §3.6)."""

from __future__ import annotations

import torch

from lop_core.methods.base import Method, check, to_device


class ShrinkPerturb(Method):
    """Shrink every parameter and add Gaussian noise to it after every step.

    The *shrink* is the optimizer's decoupled decay, theta <- (1 - ``l2_factor``) theta before
    every gradient step (``cfg.l2_factor``, reference §1.6), so it must be > 0. The *perturb* is
    this method: after every optimizer step, every parameter (weights, biases, layer-norm gains
    and biases) gets i.i.d. N(0, ``noise_variance``) noise (reference §3.6).

    The noise of run r is drawn from its own generator on the CPU (one draw of all its
    parameters per step) and copied to the device in one transfer for the whole population.

    Hyperparameters: ``noise_variance`` sigma^2 (may differ between runs).
    """

    name = "shrink_perturb"
    # the SWR paper's tuned value for h = 100 without layer norm, with l2_factor 1e-4 (reference §5.1)
    defaults = {"noise_variance": 1e-7}

    @classmethod
    def validate(cls, cfg) -> None:
        var = cfg.method_args["noise_variance"]
        check(var >= 0, f"shrink_perturb: noise_variance must be >= 0, got {var}")
        check(
            cfg.l2_factor > 0,
            "shrink_perturb shrinks with the optimizer's decoupled decay: set l2_factor > 0 "
            f"(e.g. 1e-4), got {cfg.l2_factor}",
        )

    def __init__(self, model, optimizer, cfgs, generators):
        super().__init__(model, optimizer, cfgs, generators)
        like = self.params[0]
        self.std = self.per_run("noise_variance", like).sqrt().unsqueeze(-1)  # [R, 1]
        self.sizes = [p[0].numel() for p in self.params]  # entries per run of every parameter

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """theta <- theta + sigma * eps, eps ~ N(0, 1), for every parameter of every run."""
        total = sum(self.sizes)
        noise = torch.stack([torch.randn(total, generator=g) for g in self.generators])  # [R, P]
        noise = to_device(noise, self.std).mul_(self.std)
        for p, chunk in zip(self.params, noise.split(self.sizes, dim=-1), strict=True):
            p.add_(chunk.view_as(p))  # [R, size] -> the parameter's [R, ...]
        return None
