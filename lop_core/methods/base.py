"""The common interface of every plasticity method.

A method is one object per population, built from the model, the optimizer and the configs of
the population's runs. The training loop calls its hooks at fixed points; a hook edits weights
*and* the matching optimizer state in place and returns a small dict of what it did (for example
counts of reset units per layer) for logging. The plain learner ("base") is this class itself:
every hook does nothing.
"""

from __future__ import annotations

from typing import Any

import torch


class Method:
    """No plasticity intervention: plain training (the paper's "base system").

    Args:
        model: the population model (``lop_core.models.PopulationMLP``).
        optimizer: its population optimizer (``lop_core.optim``).
        cfgs: the configs of the population's runs, in population order.
        generators: one ``torch.Generator`` per run for the method's random choices, so that a
            run in a population draws exactly what it would draw alone.
    """

    name = "base"
    #: Paper-named hyperparameters and their defaults (the type of a default is the type).
    defaults: dict[str, Any] = {}

    def __init__(self, model, optimizer, cfgs, generators: list[torch.Generator]):
        self.model = model
        self.optimizer = optimizer
        self.cfgs = cfgs
        self.generators = generators

    @classmethod
    def validate(cls, cfg) -> None:
        """Raise ``ConfigError`` for hyperparameter values no run can use."""

    def per_run(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The hyperparameter ``name`` of every run, shape [R] on ``like``'s device."""
        values = [cfg.method_args[name] for cfg in self.cfgs]
        return torch.tensor(values, dtype=like.dtype, device=like.device)

    def on_task_start(self, task: int) -> dict[str, Any] | None:
        """Called before the first step of every task (task 0 included)."""
        return None

    def after_step(self, step: int) -> dict[str, Any] | None:
        """Called after every optimizer step; ``step`` counts from 1."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
