"""Full reset: a fresh network at every task change (the upper baseline of reference §4.6)."""

from __future__ import annotations

import torch

from lop_core.methods.base import Method, check_state_reset, fill_masked


class Reset(Method):
    """At the start of every task but the first, reinitialize every parameter of every run.

    Weights of layer k are drawn afresh from N(0, ``model.stds[k]``) with the run's own generator;
    biases and layer-norm biases are set to 0 and layer-norm gains to 1, the model's initial
    distributions. The optimizer state is then reset as ``state_reset`` says; its default
    ``all`` zeroes all of it, so every task starts exactly like a new run (with other initial
    weights).

    Hyperparameters: ``state_reset`` (``all``, ``moments`` or ``none``).
    """

    name = "reset"
    defaults = {"state_reset": "all"}

    @classmethod
    def validate(cls, cfg) -> None:
        check_state_reset(cfg)

    def __init__(self, model, optimizer, cfgs, generators):
        super().__init__(model, optimizer, cfgs, generators)
        self.state_reset = self.shared_arg("state_reset")

    @torch.no_grad()
    def on_task_start(self, task: int) -> dict[str, torch.Tensor] | None:
        if task == 0:
            return None
        everything = []
        for i, p in enumerate(self.params):
            mask = torch.ones_like(p, dtype=torch.bool)
            fill_masked(self, i, mask, [p[0].numel()] * self.num_runs)
            # ``all`` zeroes every state entry (Adam's step count too): the next step is exactly
            # that of an optimizer that has never stepped
            self.reset_optimizer_state(i, mask)
            everything.append(p[0].numel())
        return {"reset_weights": self.counts([sum(everything)] * self.num_runs, self.params[0])}
