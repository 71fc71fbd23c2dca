"""L2 toward the initial parameters ("L2 Init", Kumar, Marklund and Van Roy 2023)."""

from __future__ import annotations

import torch

from lop_core.methods.base import Method, check


class L2Init(Method):
    """After every step, pull every parameter toward its initial value.

    theta <- theta - ``l2_init_factor`` * (theta - theta_0), with theta_0 the parameters when the
    method is built (the run's initialization). It is the decoupled form of Kumar et al.'s penalty
    lambda ||theta - theta_0||^2, in the same spirit as the engine's decoupled L2 (reference
    §1.6): a fixed share of the distance to theta_0 per step, whatever the step size. It can be
    combined with ``cfg.l2_factor``, which still shrinks toward 0.

    Hyperparameters: ``l2_init_factor`` in [0, 1] (may differ between runs).
    """

    name = "l2_init"
    defaults = {"l2_init_factor": 1e-4}

    @classmethod
    def validate(cls, cfg) -> None:
        f = cfg.method_args["l2_init_factor"]
        check(0 <= f <= 1, f"l2_init: l2_init_factor must be in [0, 1], got {f}")

    def __init__(self, model, optimizer, cfgs, generators):
        super().__init__(model, optimizer, cfgs, generators)
        self.anchors = [p.detach().clone() for p in self.params]
        factor = self.per_run("l2_init_factor", self.params[0])
        self.factors = [factor.view(-1, *[1] * (p.dim() - 1)) for p in self.params]  # [R, 1, ...]

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        for p, anchor, factor in zip(self.params, self.anchors, self.factors, strict=True):
            p.lerp_(anchor, factor)  # p + factor * (anchor - p)
        return None

    def state_dict(self) -> dict:
        return {"anchors": [a.clone() for a in self.anchors]}

    def load_state_dict(self, state: dict) -> None:
        for a, saved in zip(self.anchors, state["anchors"], strict=True):
            a.copy_(saved)
