"""Continual backpropagation: generate-and-test on the hidden units (Dohare et al. 2024).

``utility_average="instantaneous"`` (the default) is the variant of the SWR paper's code
(reference_code.md §3.1-§3.2), the one its tuned values (§5.1) belong to and so what every
permuted-MNIST finding of that paper compares; ``"running"`` is Dohare's algorithm (peer_code.md
§2.2), what the online permuted MNIST of the Nature paper (finding D1) uses.
"""

from __future__ import annotations

import heapq

import numpy as np
import torch

from lop_core.methods.base import Method, check, check_choice, check_state_reset, lowest_first, take_first
from lop_core.methods.units import UNIT_UTILITIES, layer_output_mean, reset_units, unit_utility

AVERAGES = ("running", "instantaneous")


class CBP(Method):
    """Replace a small share of the mature, least useful units of every hidden layer every step.

    Per step, run and hidden layer (peer_code.md §2.2):

    1. Every unit ages by one step; units older than ``maturity_threshold`` m are *eligible*.
    2. ``running``: running averages with decay eta (``decay_rate``) of the unit's activation
       f and of its utility u, both bias-corrected by the unit's age a: f / (1 - eta^a). The
       ``contribution`` utility is then mean-corrected, mean|W_out[:, j]| * mean_b|h_bj - f_hat_j|.
       ``instantaneous``: the utility of the current batch alone, no average (reference §3.1).
    3. A per-run, per-layer accumulator gains ``replacement_rate`` * #eligible; its integer part
       n is taken out and the n eligible units of lowest (bias-corrected) utility are replaced
       (``units.reset_units``). With ``running`` and ``bias_correction``, the next layer's bias
       absorbs each replaced unit's mean contribution W_out[:, j] * f_hat_j, with layer norm the
       mean of the unit's normalized output: the bias correction Dohare's paper describes
       (§2.2 step 8). His code's ``gnt.py`` zeroes the running mean before it reads it, so there
       the correction adds nothing: ``bias_correction=False`` (the default) is what his code
       does; ``instantaneous`` has no running mean and no correction.

    Differences from the references: the replacement runs after the optimizer step (the SWR
    paper's code runs it inside ``backward``, reference §3.1), so replaced outgoing weights stay
    exactly 0 and the new incoming weights take no stale step; all layers' utilities are taken
    before any layer is reset; incoming weights are redrawn from the model's own initial
    distribution N(0, ``model.stds[k]``) (the reference uses the ReLU gain for every activation,
    §8 bug 7); the optimizer state of replaced entries is reset as ``state_reset`` says (the
    references keep it: ``state_reset="none"``, the default; Dohare's AdamGnT zeroes the moments
    and the per-entry step count of the replaced entries: ``state_reset="all"`` under AdamW).

    Which units are eligible and how many are replaced is decided on the host from the
    replacement history (no device sync per step); only which units, and their new weights, are
    device work.

    Hyperparameters (``cfg.method_args``): ``replacement_rate`` rho, ``maturity_threshold`` m,
    ``decay_rate`` eta (``running`` only), ``utility`` (``contribution``,
    ``adaptable_contribution``, ``activation``, ``gradient``, ``magnitude``; with ``running`` the
    contributions are mean-corrected), ``utility_average``, ``bias_correction`` (``running``
    only), ``state_reset``. The numbers may differ between the runs of a population.

    ``after_step`` returns ``reset_units`` [R] and ``reset_weights`` [R], the replaced units and
    their incoming plus outgoing weights (biases not counted), as the reference logs them (§1.3).
    """

    name = "cbp"
    reinitializes_units = True  # needs one weight row and one feature per unit
    defaults = {
        "replacement_rate": 1e-4,
        "maturity_threshold": 100,
        "decay_rate": 0.99,
        "utility": "contribution",
        "utility_average": "instantaneous",
        "bias_correction": False,
        "state_reset": "none",
    }

    @classmethod
    def validate(cls, cfg) -> None:
        a = cfg.method_args
        check(
            0 <= a["replacement_rate"] <= 1,
            f"cbp: replacement_rate must be in [0, 1], got {a['replacement_rate']}",
        )
        check(
            a["maturity_threshold"] >= 0,
            f"cbp: maturity_threshold must be >= 0 steps, got {a['maturity_threshold']}",
        )
        check(0 <= a["decay_rate"] < 1, f"cbp: decay_rate must be in [0, 1), got {a['decay_rate']}")
        check_choice(cfg, "utility", UNIT_UTILITIES)
        check_choice(cfg, "utility_average", AVERAGES)
        check(
            not a["bias_correction"] or a["utility_average"] == "running",
            "cbp: bias_correction needs the running mean of utility_average='running'",
        )
        check_state_reset(cfg)

    def __init__(self, model, optimizer, cfgs, generators):
        super().__init__(model, optimizer, cfgs, generators)
        self.shared_arg("state_reset")
        self.utility = self.shared_arg("utility")
        self.running = self.shared_arg("utility_average") == "running"
        self.bias_correction = self.shared_arg("bias_correction")
        like, r, depth, width = model.biases[0], self.num_runs, model.depth, model.width
        self.rate = np.array(self.host_args("replacement_rate"), dtype=np.float64)[:, None]  # [R, 1]
        self.maturity = np.array(self.host_args("maturity_threshold"), dtype=np.int64)  # [R]
        self.maturity_t = torch.tensor(self.maturity, device=like.device).unsqueeze(-1)  # [R, 1]
        self.eta = self.per_run("decay_rate", like).unsqueeze(-1)  # [R, 1]
        self.per_unit = [model.weights[k].shape[-1] + model.weights[k + 1].shape[1] for k in range(depth)]
        self.none = self.counts([0] * r, like)
        # state: steps so far; step of every unit's last replacement (0: initial unit), [depth, R, width]
        self.t = 0
        self.born = torch.zeros(depth, r, width, dtype=torch.long, device=like.device)
        zeros = torch.zeros(depth, r, width, device=like.device)
        self.mean_act = zeros.clone()  # running mean activation f (running only)
        self.util = zeros.clone()  # running utility u (running only)
        self.mean_out = zeros.clone()  # running mean of the LN output (running with layer norm only)
        # host bookkeeping: fractional accumulators, young units, and when they mature
        self.acc = np.zeros((r, depth))
        self.young = np.zeros((r, depth), dtype=np.int64)  # replaced units not yet eligible
        self.maturing: list[tuple[int, int, int, int]] = []  # heap of (eligible from step, run, layer, n)

    def _update_averages(self) -> None:
        """Step 2 of the running variant: the bias-corrected running averages of every layer."""
        eta = self.eta
        for k in range(self.model.depth):
            correction = 1 - eta ** (self.t - self.born[k])  # [R, width]; age >= 1 here
            h = self.model.features[k].detach()  # [R, B, width]
            self.mean_act[k].mul_(eta).add_((1 - eta) * h.mean(dim=1))
            centre = self.mean_act[k] / correction if "contribution" in self.utility else None
            self.util[k].mul_(eta).add_((1 - eta) * unit_utility(self.utility, self.model, k, centre))
            if self.model.layer_norm:
                self.mean_out[k].mul_(eta).add_((1 - eta) * layer_output_mean(self.model, k))

    def _how_many(self) -> np.ndarray:
        """Step 3 on the host: units to replace now per run and layer, [R, depth] ints."""
        while self.maturing and self.maturing[0][0] <= self.t:
            _, r, k, n = heapq.heappop(self.maturing)
            self.young[r, k] -= n
        mature = (self.t > self.maturity)[:, None]  # [R, 1]: the initial units are old enough
        eligible = np.where(mature, self.model.width - self.young, 0)  # [R, depth]
        self.acc += self.rate * eligible
        n = np.floor(self.acc).astype(np.int64)
        self.acc -= n
        return n

    @torch.no_grad()
    def after_step(self, step: int) -> dict[str, torch.Tensor]:
        """One generate-and-test step on every hidden layer of every run."""
        self.t += 1
        if self.running:
            self._update_averages()
        n = self._how_many()
        if not n.any():
            return {"reset_units": self.none, "reset_weights": self.none}
        plans = []
        for k in np.flatnonzero(n.any(axis=0)):  # every utility before any reset
            age = self.t - self.born[k]  # [R, width]
            if self.running:
                correction = 1 - self.eta**age
                utility = self.util[k] / correction
                shown = self.mean_out[k] if self.model.layer_norm else self.mean_act[k]
                output_mean = shown / correction if self.bias_correction else None
            else:
                utility, output_mean = unit_utility(self.utility, self.model, k), None
            counts = torch.from_numpy(np.ascontiguousarray(n[:, k]))
            mask = take_first(lowest_first(utility, age > self.maturity_t), counts)  # [R, width]
            plans.append((k, mask, output_mean))
        for k, mask, output_mean in plans:
            reset_units(self, k, mask, n[:, k].tolist(), output_mean)
            self.born[k].masked_fill_(mask, self.t)
            for state in (self.mean_act, self.util, self.mean_out):
                state[k].masked_fill_(mask, 0.0)
            for r in np.flatnonzero(n[:, k]):
                self.young[r, k] += n[r, k]
                heapq.heappush(
                    self.maturing, (self.t + int(self.maturity[r]) + 1, int(r), int(k), int(n[r, k]))
                )
        like = self.none
        return {
            "reset_units": self.counts(n.sum(axis=1), like),
            "reset_weights": self.counts(n @ np.array(self.per_unit), like),
        }

    def state_dict(self) -> dict:
        return {
            "t": self.t,
            "born": self.born.clone(),
            "mean_act": self.mean_act.clone(),
            "util": self.util.clone(),
            "mean_out": self.mean_out.clone(),
            "acc": self.acc.tolist(),
            "young": self.young.tolist(),
            "maturing": [list(e) for e in self.maturing],
        }

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        for name in ("born", "mean_act", "util", "mean_out"):
            getattr(self, name).copy_(state[name])
        self.acc = np.array(state["acc"], dtype=np.float64)
        self.young = np.array(state["young"], dtype=np.int64)
        self.maturing = [tuple(int(x) for x in e) for e in state["maturing"]]
        heapq.heapify(self.maturing)
