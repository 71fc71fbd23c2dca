"""Resetting the optimizer's state at every task boundary (Asadi, Fakoor and Sojoudi 2023)."""

from __future__ import annotations

import torch

from lop_core.methods.base import Method, check_state_reset


class OptimizerReset(Method):
    """At the start of every task but the first, forget the optimizer's state of every parameter.

    The paper ("Resetting the optimizer in deep RL: an empirical study", NeurIPS 2023) resets
    Adam's moments whenever the learner's target changes (a target-network update in deep RL),
    because moments estimated for the old target mislead the first updates on the new one. In a
    stream of supervised tasks the target changes at the task boundary, so that is where the reset
    goes here (our reading; the book's tasks announce themselves). ``state_reset`` says what is
    forgotten: ``all`` (the default: Adam's moments and step count, so its bias correction starts
    afresh; SGD's momentum) or ``moments`` (momentum only; refused under AdamW, as for every
    method). Plain SGD without momentum has no state: the method then does nothing.

    ``on_task_start`` returns ``reset_optimizer`` [R]: 1 at every task where the state was reset.
    """

    name = "optimizer_reset"
    defaults = {"state_reset": "all"}

    @classmethod
    def validate(cls, cfg) -> None:
        check_state_reset(cfg)

    @torch.no_grad()
    def on_task_start(self, task: int) -> dict | None:
        if task == 0:
            return None
        for index, p in enumerate(self.params):
            self.reset_optimizer_state(index, torch.ones_like(p, dtype=torch.bool))
        return {"reset_optimizer": torch.ones(self.num_runs, device=self.params[0].device)}
