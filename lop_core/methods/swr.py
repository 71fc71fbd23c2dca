"""Selective weight reinitialization (Hernandez-Garcia, Dohare, Luo and Sutton 2025; reference §2)."""

from __future__ import annotations

import math

import torch

from lop_core.methods.base import (
    Method,
    check,
    check_choice,
    check_state_reset,
    fill_masked,
    lowest_first,
    take_first,
    to_device,
)

UTILITIES = ("gradient", "magnitude", "random")
PRUNINGS = ("threshold", "proportional")
REINITS = ("resample", "mean")


class SWR(Method):
    """Every ``reinit_freq`` steps, reinitialize the least useful entries of every parameter tensor.

    Algorithm (reference_code.md §2.1), for every parameter tensor (weights, biases, layer-norm
    gains and biases) and every run separately:

    1. Utility of every entry: ``gradient`` |g * theta| (g the current batch's gradient, theta the
       parameter after the optimizer step: a first-order estimate of the loss change from removing
       the entry), ``magnitude`` |theta|, or ``random`` U(0, 1). With ``decay_rate`` d > 0 the
       utility is a per-entry running average, u <- d u + (1 - d) u_now, updated every step (the
       reference fixes d = 0); the averages of reinitialized entries restart from 0.
    2. Selection (f = ``reinit_factor``): ``threshold`` takes every entry with
       u <= f * mean(u) (so entries of utility 0 always go); ``proportional`` takes the
       n = floor(N f) + Bernoulli(frac(N f)) entries of lowest utility, N the tensor's size (ties
       go to the lowest index).
    3. Reinitialization from the tensor's initial distribution (§2.2): ``resample`` draws afresh,
       ``mean`` sets the distribution's mean. Weights of layer k: N(0, ``model.stds[k]``), the
       model's own init; the reference uses the ReLU-gain std for every activation (§8 bug 9), we
       use the intent. Biases and layer-norm biases: 0. Layer-norm gains: 1.

    SWR runs after the optimizer step, as in the reference. The optimizer state of reinitialized
    entries is reset as ``state_reset`` says; the default ``none`` is the reference's behaviour
    (it never resets optimizer state), ``moments`` (SGD momentum) and ``all`` are options.

    Hyperparameters (``cfg.method_args``): ``utility``, ``pruning``, ``reinit``, ``reinit_freq``
    (steps), ``reinit_factor``, ``decay_rate``, ``state_reset``. The numbers may differ between the
    runs of a population.

    ``after_step`` returns ``reset_weights`` [R]: the entries reinitialized at that step, over all
    tensors (biases and layer norm included).
    """

    name = "swr"
    # the paper's main setting for h = 100 (reference §2.3, §5.1)
    defaults = {
        "utility": "gradient",
        "pruning": "threshold",
        "reinit": "resample",
        "reinit_freq": 2048,
        "reinit_factor": 1e-5,
        "decay_rate": 0.0,
        "state_reset": "none",
    }

    @classmethod
    def validate(cls, cfg) -> None:
        a = cfg.method_args
        check_choice(cfg, "utility", UTILITIES)
        check_choice(cfg, "pruning", PRUNINGS)
        check_choice(cfg, "reinit", REINITS)
        check_state_reset(cfg)
        check(a["reinit_freq"] >= 1, f"swr: reinit_freq must be >= 1 step, got {a['reinit_freq']}")
        check(a["reinit_factor"] >= 0, f"swr: reinit_factor must be >= 0, got {a['reinit_factor']}")
        check(
            a["pruning"] != "proportional" or a["reinit_factor"] <= 1,
            f"swr: proportional pruning reinitializes a share reinit_factor of every tensor, which "
            f"must be in [0, 1]; got {a['reinit_factor']}",
        )
        check(0 <= a["decay_rate"] < 1, f"swr: decay_rate must be in [0, 1), got {a['decay_rate']}")

    def __init__(self, model, optimizer, cfgs, generators):
        super().__init__(model, optimizer, cfgs, generators)
        self.shared_arg("state_reset")
        self.utility = self.shared_arg("utility")
        self.pruning = self.shared_arg("pruning")
        self.resample = self.shared_arg("reinit") == "resample"
        like = self.params[0]
        self.freq = self.host_args("reinit_freq")
        self.factor_host = self.host_args("reinit_factor")
        self.factor = self.per_run("reinit_factor", like).unsqueeze(-1)  # [R, 1]
        self.decay_host = self.host_args("decay_rate")
        self.decay = self.per_run("decay_rate", like)  # [R]
        self.averaging = any(d > 0 for d in self.decay_host)
        self.avg = [torch.zeros_like(p) for p in self.params] if self.averaging else []
        self.none = self.counts([0] * self.num_runs, like)

    def _utility(self, index: int, runs: list[bool]) -> torch.Tensor | None:
        """Per-entry utility of parameter ``index`` (shaped like it); ``runs``: who needs it now.

        None for the gradient utility of a tensor without a gradient (it took no part in the last
        backward pass): its utility is unknown, not 0, and it is left alone.
        """
        p = self.params[index]
        if self.utility == "gradient":
            g = self.gradient(index)
            return None if g is None else (g * p.detach()).abs()
        if self.utility == "magnitude":
            return p.detach().abs()
        u = torch.zeros(p.shape)  # random: drawn only for the runs that use it, each from its own generator
        for r, needed in enumerate(runs):
            if needed:
                u[r].uniform_(0.0, 1.0, generator=self.generators[r])
        return to_device(u, p)

    def _proportional_counts(self, numel: int, due: list[bool]) -> list[int]:
        """n = floor(N f) + Bernoulli(frac(N f)) for every due run (0 for the others)."""
        out = []
        for r, is_due in enumerate(due):
            if not is_due:
                out.append(0)
                continue
            x = numel * self.factor_host[r]
            whole = math.floor(x)
            coin = torch.rand(1, generator=self.generators[r]).item()
            out.append(whole + int(coin < x - whole))
        return out

    @torch.no_grad()
    def after_step(self, step: int) -> dict[str, torch.Tensor]:
        """Update the utility averages; reinitialize the runs whose ``reinit_freq`` divides ``step``."""
        due = [step % f == 0 for f in self.freq]
        if not any(due) and not self.averaging:
            return {"reset_weights": self.none}
        needed = [d or a > 0 for d, a in zip(due, self.decay_host, strict=True)]
        utils = []
        for i in range(len(self.params)):
            u = self._utility(i, needed)
            if u is None:
                utils.append(None)
                continue
            if self.averaging:
                d = self.decay.view(-1, *[1] * (u.dim() - 1))  # [R, 1, ...]
                u = self.avg[i].mul_(d).add_((1 - d) * u)
            utils.append(u)
        if not any(due):
            return {"reset_weights": self.none}
        due_t = to_device(torch.tensor(due), self.factor).unsqueeze(-1)  # [R, 1]
        masks, counts = [], []
        for u in utils:
            if u is None:  # no gradient: nothing is known about this tensor, nothing is taken
                masks.append(None)
                counts.append([0] * self.num_runs)
                continue
            flat = u.reshape(self.num_runs, -1)  # [R, N]
            if self.pruning == "threshold":
                masks.append((flat <= self.factor * flat.mean(dim=-1, keepdim=True)) & due_t)
                counts.append(None)  # counted below, all tensors at once
            else:
                n = self._proportional_counts(flat.shape[-1], due)
                masks.append(take_first(lowest_first(flat), torch.tensor(n)))
                counts.append(n)
        if self.pruning == "threshold":
            live = [i for i, m in enumerate(masks) if m is not None]
            if live:
                sums = torch.stack(
                    [masks[i].sum(dim=-1) for i in live]
                ).tolist()  # [tensors][R]: the one sync
                for i, n in zip(live, sums, strict=True):
                    counts[i] = n
        total = [0] * self.num_runs
        for i, (mask, n) in enumerate(zip(masks, counts, strict=True)):
            if not any(n):
                continue
            mask = mask.view_as(self.params[i])
            fill_masked(self, i, mask, n, resample=self.resample)
            self.reset_optimizer_state(i, mask)
            if self.averaging:
                self.avg[i].masked_fill_(mask, 0.0)
            total = [a + b for a, b in zip(total, n, strict=True)]
        return {"reset_weights": self.counts(total, self.none)}

    def state_dict(self) -> dict:
        return {"avg": [a.clone() for a in self.avg]}

    def load_state_dict(self, state: dict) -> None:
        for a, saved in zip(self.avg, state["avg"], strict=True):
            a.copy_(saved)
