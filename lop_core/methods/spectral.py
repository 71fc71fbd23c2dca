"""Spectral regularization (Lewandowski, Bortkiewicz, Kumar, György, Schuurmans, Ostaszewski and
Machado, ICLR 2025)."""

from __future__ import annotations

import torch

from lop_core.methods.base import Method, check_at_least


class Spectral(Method):
    """Keep the largest singular value of every layer close to one.

    The paper ("Learning continually by spectral regularization") adds
    lambda * sum_l (sigma_max(A_l)^k - 1)^2 to the loss, with A_l = [W_l | b_l] the layer's weights
    with its bias as an extra column and k = 2 by default: initialization puts the singular values
    near one, and keeping the largest there keeps gradients diverse as tasks change, without
    pulling the weights towards their initial values. sigma_max is estimated by one power iteration
    per step from the previous step's singular vectors (as spectral normalization does), and the
    penalty's gradient, lambda * 2 (sigma^k - 1) * k sigma^(k-1) * u v^T, is added to the gradients
    of W_l and b_l before the optimizer's step (``before_step``), so the optimizer treats it as part
    of the loss. Every layer is regularized, the output layer included (the paper: "each layer").

    Hyperparameters: ``spectral_lambda`` >= 0 (may differ between runs), ``spectral_k`` >= 1.
    """

    name = "spectral"
    defaults = {"spectral_lambda": 1e-4, "spectral_k": 2.0}

    @classmethod
    def validate(cls, cfg) -> None:
        check_at_least(cfg, "spectral_lambda", 0)
        check_at_least(cfg, "spectral_k", 1)

    def __init__(self, model, optimizer, cfgs, generators):
        super().__init__(model, optimizer, cfgs, generators)
        like = self.params[0]
        self.lam = self.per_run("spectral_lambda", like)
        self.k = self.per_run("spectral_k", like)
        self.layers = []  # (weight index, bias index)
        for i, (kind, layer) in enumerate(self.slots):
            if kind == "weight":
                self.layers.append((i, self.slot("bias", layer)))
        self.v = []  # per layer: the right singular vector estimate [R, in + 1], each run's own draw
        for w_index, _ in self.layers:
            cols = self.params[w_index].shape[-1] + 1
            draws = torch.stack([self.draw_normal(r, (cols,), 0.0, 1.0) for r in range(self.num_runs)])
            self.v.append(torch.nn.functional.normalize(draws.to(like), dim=-1))

    def _matrix(self, w_index: int, b_index: int) -> torch.Tensor:
        return torch.cat([self.params[w_index], self.params[b_index].unsqueeze(-1)], dim=-1)  # [R, out, in+1]

    @torch.no_grad()
    def sigma(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One power iteration for layer ``layer``: (sigma [R], u [R, out], v [R, in + 1])."""
        a = self._matrix(*self.layers[layer])
        u = torch.nn.functional.normalize(torch.einsum("roi,ri->ro", a, self.v[layer]), dim=-1)
        v = torch.nn.functional.normalize(torch.einsum("roi,ro->ri", a, u), dim=-1)
        self.v[layer] = v
        return torch.einsum("ro,roi,ri->r", u, a, v), u, v

    @torch.no_grad()
    def before_step(self, step: int) -> None:
        for layer, (w_index, b_index) in enumerate(self.layers):
            sigma, u, v = self.sigma(layer)
            scale = self.lam * 2 * (sigma.pow(self.k) - 1) * self.k * sigma.pow(self.k - 1)  # [R]
            grad = scale.view(-1, 1, 1) * u.unsqueeze(-1) * v.unsqueeze(-2)  # [R, out, in + 1]
            w, b = self.params[w_index], self.params[b_index]
            if w.grad is not None:
                w.grad.add_(grad[..., :-1])
            if b.grad is not None:
                b.grad.add_(grad[..., -1])
        return None

    def state_dict(self) -> dict:
        return {"v": [v.clone() for v in self.v]}

    def load_state_dict(self, state: dict) -> None:
        self.v = [v.clone() for v in state["v"]]
