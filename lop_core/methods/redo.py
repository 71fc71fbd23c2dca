"""ReDo: recycle dormant units (Sokar et al. 2023), as in the SWR paper's code (reference §3.3)."""

from __future__ import annotations

import torch

from lop_core.methods.base import Method, check, check_choice, check_state_reset, to_device
from lop_core.methods.units import UNIT_UTILITIES, reset_units, unit_utility


class ReDo(Method):
    """Every ``reinit_frequency`` steps, replace every tau-dormant unit of every hidden layer.

    Per run and hidden layer, with u_j the utility of unit j on the current batch
    (``units.unit_utility``), every unit with ``u_j <= dormant_threshold * mean_j(u_j)`` is
    replaced (``units.reset_units``: fresh incoming weights from the model's own initial
    distribution, where the reference uses the ReLU gain for every activation (§8 bug 7), zero
    bias, zero outgoing weights, layer-norm gain 1 and bias 0). This is ReDo's normalized score ``s_j = u_j / mean(u) <= tau``.
    As in the reference there is no maturity, no cap and no bias correction, and because the test
    is ``<=`` a layer whose utilities are all 0 is replaced entirely (reference §8 bug 10).

    Differences from the reference: the reset runs after the optimizer step instead of inside
    ``backward`` (reference §3.1), all layers' utilities are taken before any layer is reset, and
    the optimizer state of the replaced entries is reset as ``state_reset`` says (default ``none``:
    the reference keeps it).

    Hyperparameters (``cfg.method_args``): ``reinit_frequency`` F (steps), ``dormant_threshold``
    tau, ``utility`` (``activation``, the default, ``contribution``, ``gradient``, ``magnitude``),
    ``state_reset``. F and tau may differ between the runs of a population.

    ``after_step`` returns ``reset_units`` [R] and ``reset_weights`` [R] (incoming plus outgoing
    weights of the replaced units, as the reference counts them, §1.3).
    """

    name = "redo"
    reinitializes_units = True  # needs one weight row and one feature per unit
    # the SWR paper's tuned values for h = 100 without layer norm (reference §5.1)
    defaults = {
        "reinit_frequency": 16,
        "dormant_threshold": 1e-4,
        "utility": "activation",
        "state_reset": "none",
    }

    @classmethod
    def validate(cls, cfg) -> None:
        args = cfg.method_args
        check(
            args["reinit_frequency"] >= 1,
            f"redo: reinit_frequency must be >= 1 step, got {args['reinit_frequency']}",
        )
        check(
            args["dormant_threshold"] >= 0,
            f"redo: dormant_threshold must be >= 0, got {args['dormant_threshold']}",
        )
        check_choice(cfg, "utility", UNIT_UTILITIES)
        check_state_reset(cfg)

    def __init__(self, model, optimizer, cfgs, generators):
        super().__init__(model, optimizer, cfgs, generators)
        self.utility = self.shared_arg("utility")
        self.shared_arg("state_reset")
        self.frequency = self.host_args("reinit_frequency")
        self.tau = self.per_run("dormant_threshold", model.biases[0]).unsqueeze(-1)  # [R, 1]
        self.none = self.counts([0] * self.num_runs, model.biases[0])

    @torch.no_grad()
    def after_step(self, step: int) -> dict[str, torch.Tensor]:
        """Replace the dormant units of the runs whose ``reinit_frequency`` divides ``step``."""
        due = [step % f == 0 for f in self.frequency]
        if not any(due):
            return {"reset_units": self.none, "reset_weights": self.none}
        due_t = to_device(torch.tensor(due), self.tau).unsqueeze(-1)  # [R, 1]
        masks = []
        for k in range(self.model.depth):  # every utility before any reset
            u = unit_utility(self.utility, self.model, k)  # [R, width]
            masks.append((u <= self.tau * u.mean(dim=-1, keepdim=True)) & due_t)
        counts = torch.stack([m.sum(dim=-1) for m in masks]).tolist()  # [depth][R]; the one sync
        units, weights = [0] * self.num_runs, [0] * self.num_runs
        for k, (mask, n) in enumerate(zip(masks, counts, strict=True)):
            if any(n):
                reset_units(self, k, mask, n)
            per_unit = self.model.weights[k].shape[-1] + self.model.weights[k + 1].shape[1]
            for r, c in enumerate(n):
                units[r] += c
                weights[r] += c * per_unit
        like = self.tau
        return {"reset_units": self.counts(units, like), "reset_weights": self.counts(weights, like)}
