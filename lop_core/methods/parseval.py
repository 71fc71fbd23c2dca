"""Parseval regularization (Chung, Cherif, Meger and Precup 2024)."""

from __future__ import annotations

import torch

from lop_core.methods.base import Method, check_at_least


class Parseval(Method):
    """Keep every hidden layer's weight matrix close to a scaled orthogonal one.

    The paper ("Parseval regularization for continual reinforcement learning", NeurIPS 2024) adds
    lambda * ||W W^T - s I||_F^2 to the loss for every regularized layer's weights W [out, in],
    so that the rows stay near-orthogonal with squared norms s and the layer keeps well-conditioned
    gradients across task changes. Its gradient, 4 lambda (W W^T - s I) W, is added to W's gradient
    after the backward pass and before the optimizer's step (``before_step``), so that the optimizer,
    SGD or Adam, treats it as part of the loss, as in the paper.

    Choices of ours, kept as parameters: the hidden layers are regularized and the output layer is
    left free (``parseval_output``: also the output layer); ``parseval_s`` = 0 takes for s each
    layer's mean squared row norm at initialization (2 for a Kaiming-normal ReLU layer), so that
    the penalty starts from the initial scale; a positive value is that s for every layer.

    Hyperparameters: ``parseval_lambda`` >= 0 (may differ between runs), ``parseval_s`` >= 0,
    ``parseval_output`` (bool, shared by the runs of a population).
    """

    name = "parseval"
    defaults = {"parseval_lambda": 1e-3, "parseval_s": 0.0, "parseval_output": False}

    @classmethod
    def validate(cls, cfg) -> None:
        check_at_least(cfg, "parseval_lambda", 0)
        check_at_least(cfg, "parseval_s", 0, " (0: each layer's initial scale)")

    def __init__(self, model, optimizer, cfgs, generators):
        super().__init__(model, optimizer, cfgs, generators)
        weights = [i for i, (kind, _) in enumerate(self.slots) if kind == "weight"]
        output = self.shared_arg("parseval_output")
        self.layers = weights if output else weights[:-1]  # parameter indices regularized
        lam = self.per_run("parseval_lambda", self.params[0]).view(-1, 1, 1)
        fixed = self.per_run("parseval_s", self.params[0]).view(-1, 1, 1)
        self.lam4 = 4.0 * lam
        self.scales = {}  # parameter index -> s [R, 1, 1]
        for i in self.layers:
            initial = self.params[i].detach().pow(2).sum(-1).mean(-1).view(-1, 1, 1)
            self.scales[i] = torch.where(fixed > 0, fixed, initial)

    @torch.no_grad()
    def before_step(self, step: int) -> None:
        for i in self.layers:
            w, grad = self.params[i], self.params[i].grad
            if grad is None:
                continue
            gram = w @ w.transpose(-1, -2)  # [R, out, out]
            gram.diagonal(dim1=-2, dim2=-1).sub_(self.scales[i].view(-1, 1))
            grad.add_(self.lam4 * (gram @ w))
        return None

    def state_dict(self) -> dict:
        return {"scales": {str(i): s.clone() for i, s in self.scales.items()}}

    def load_state_dict(self, state: dict) -> None:
        for i, s in self.scales.items():
            s.copy_(state["scales"][str(i)])
