"""L2 regularization as the SWR paper means it: decoupled weight decay (reference §1.6, §3.7)."""

from __future__ import annotations

from lop_core.methods.base import Method, check


class L2(Method):
    """The base learner with the optimizer's decoupled decay, theta <- (1 - lambda) theta per step.

    The decay is ``cfg.l2_factor`` (lambda), applied by SGDW/AdamW to every parameter before the
    gradient step; this class only checks that it is on. It has no hooks and no hyperparameters.
    """

    name = "l2"
    defaults: dict = {}

    @classmethod
    def validate(cls, cfg) -> None:
        check(cfg.l2_factor > 0, f"l2: set l2_factor > 0 (e.g. 1e-4), got {cfg.l2_factor}")
