"""Normalize-and-project, NaP (Lyle, Zheng, Khetarpal, van Hasselt, Pascanu, Martens and Dabney 2024)."""

from __future__ import annotations

import torch

from lop_core.methods.base import Method, check


class NaP(Method):
    """With normalization layers in the network, keep every weight matrix at its initial norm.

    The paper ("Normalization and effective learning rates in reinforcement learning", NeurIPS
    2024) pairs layer normalization with a projection: after every optimizer step each layer's
    weights are rescaled to the norm they had at initialization, W <- W ||W_0||_F / ||W||_F. With
    normalization a layer's function ignores the scale of the weights before it, so their norm
    would otherwise grow and silently shrink the effective learning rate; the projection keeps it
    fixed. Biases are left alone.

    Choices of ours: the model's layer norm is the one the SWR paper uses (after the activation),
    where the NaP paper normalizes before it, so the method requires ``layer_norm=True`` and says
    which; the output layer is projected too (``nap_output``; the paper's networks normalize every
    layer's input); layer-norm gains and biases are left to the optimizer.

    Hyperparameters: ``nap_output`` (bool, shared by the runs of a population).
    """

    name = "nap"
    defaults = {"nap_output": True}

    @classmethod
    def validate(cls, cfg) -> None:
        check(
            bool(getattr(cfg, "layer_norm", False)),
            "nap: normalize-and-project needs normalization layers; set layer_norm=true",
        )

    def __init__(self, model, optimizer, cfgs, generators):
        super().__init__(model, optimizer, cfgs, generators)
        weights = [i for i, (kind, _) in enumerate(self.slots) if kind == "weight"]
        self.layers = weights if self.shared_arg("nap_output") else weights[:-1]
        self.norms = {i: self._norm(i).clone() for i in self.layers}  # [R, 1, 1] each

    def _norm(self, index: int) -> torch.Tensor:
        return self.params[index].detach().flatten(1).norm(dim=1).view(-1, 1, 1)

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        for i in self.layers:
            self.params[i].mul_(self.norms[i] / self._norm(i).clamp_min(1e-12))
        return None

    def state_dict(self) -> dict:
        return {"norms": {str(i): n.clone() for i, n in self.norms.items()}}

    def load_state_dict(self, state: dict) -> None:
        for i, n in self.norms.items():
            n.copy_(state["norms"][str(i)])
