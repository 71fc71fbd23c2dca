"""Population optimizers: SGDW and AdamW with per-run hyperparameters and per-entry state.

Every parameter has a leading run dimension R, and every hyperparameter is a tensor [R], so one
population can mix step sizes or decay factors. Weight decay is the reference's *decoupled,
multiplicative* shrink (reference_code.md §1.6): before the gradient step,
``theta <- (1 - l2_factor) * theta``, whatever the step size. State is kept per entry (Adam's step
count too), so a method can reset exactly the entries it reinitializes.
"""

from __future__ import annotations

import torch

STATE_RESETS = ("none", "moments", "all")
#: Why AdamW refuses ``moments``: zeroed moments under an old per-entry step count are never
#: debiased again, so a reset entry's steps grow to about 6.5 x the learning rate some 10 steps
#: later (a constant gradient, betas 0.9 and 0.999); ``all`` restarts the count (Dohare's AdamGnT).
MOMENTS_UNDER_ADAM = (
    "state_reset 'moments' under AdamW zeroes the moments but keeps the entries' step count, so "
    "their bias correction is off (steps up to ~6.5 x the learning rate); use 'all' (moments and "
    "step count, as Dohare's AdamGnT) or 'none' (the SWR paper's code)"
)


#: Per-entry state that counts steps (Adam's step count and its powers b1^t, b2^t, which restart
#: at 1 with the count): reset only with ``all``, never zeroed when a run is frozen.
POWERS = ("c1", "c2")
COUNTS = ("step", *POWERS)


def _per_run(values, like: torch.Tensor) -> torch.Tensor:
    """[R] values reshaped to broadcast against ``like`` [R, ...]."""
    t = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return t.view(-1, *([1] * (like.dim() - 1)))


class PopulationOptimizer:
    """Shared bookkeeping: parameters, per-run hyperparameters, per-entry state."""

    def __init__(self, params, lr, l2_factor):
        self.params = [p for p in params]
        self.lr = [_per_run(lr, p) for p in self.params]
        self.keep = [1.0 - _per_run(l2_factor, p) for p in self.params]
        self.decays = bool(torch.as_tensor(l2_factor).abs().sum() > 0)
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in self.params]
        #: whether ``reset_state(..., "moments")`` is sound (not for AdamW: see MOMENTS_UNDER_ADAM)
        self.moments_reset_ok = True

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def reset_state(self, index: int, mask: torch.Tensor, what: str = "moments") -> None:
        """Forget the optimizer state of the entries ``mask`` of parameter ``index``.

        Args:
            index: position of the parameter in ``self.params``.
            mask: bool tensor of the parameter's shape; True where the entry was reinitialized.
            what: ``none`` (keep everything, the reference's behaviour), ``moments`` (zero the
                momentum; refused by AdamW, see ``MOMENTS_UNDER_ADAM``) or ``all`` (the momentum,
                or Adam's moments and step count, so bias correction starts afresh for those
                entries, as in Dohare's AdamGnT).

        Raises:
            ValueError: an unknown ``what``, or ``moments`` under AdamW.
        """
        if what not in STATE_RESETS:
            raise ValueError(f"unknown state reset {what!r}; choose one of {list(STATE_RESETS)}")
        if what == "none":
            return
        if what == "moments" and not self.moments_reset_ok:
            raise ValueError(MOMENTS_UNDER_ADAM)
        for key, buf in self.state[index].items():
            if key not in COUNTS or what == "all":
                buf.masked_fill_(mask, 1.0 if key in POWERS else 0.0)

    @torch.no_grad()
    def stop_run(self, run: int) -> None:
        """Freeze run ``run`` from now on: step size 0, momenta and moments 0 (a diverged run).

        Adam's step count is kept: a zero count would make its bias correction divide 0 by 0.
        """
        for lr in self.lr:
            lr[run] = 0.0
        for state in self.state:
            for key, buf in state.items():
                if key not in COUNTS:
                    buf[run] = 0.0

    def state_dict(self) -> dict:
        return {"state": [dict(s) for s in self.state]}

    def load_state_dict(self, state: dict) -> None:
        self.state = [dict(s) for s in state["state"]]


class SGDW(PopulationOptimizer):
    """SGD with decoupled multiplicative weight decay and optional momentum (dampening 0).

    Per step and entry: ``theta *= 1 - l2_factor``; ``b = mu * b + g`` (``b = g`` on the first
    step) or ``b = g`` without momentum; ``theta -= lr * b``.
    """

    def __init__(self, params, lr, l2_factor=0.0, momentum=0.0):
        super().__init__(params, lr, l2_factor)
        self.mu = [_per_run(momentum, p) for p in self.params]
        self.uses_momentum = bool(torch.as_tensor(momentum).abs().sum() > 0)

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            if self.decays:
                p.mul_(self.keep[i])
            d = p.grad
            if self.uses_momentum:
                buf = self.state[i].get("momentum")
                if buf is None:
                    buf = self.state[i]["momentum"] = d.clone()
                else:
                    buf.mul_(self.mu[i]).add_(d)
                d = buf
            p.addcmul_(d, self.lr[i], value=-1.0)


class AdamW(PopulationOptimizer):
    """Adam with decoupled multiplicative weight decay and a per-entry step count.

    Per step and entry: ``theta *= 1 - l2_factor``; ``m = b1 m + (1-b1) g``;
    ``v = b2 v + (1-b2) g^2``; ``t += 1``;
    ``theta -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``. With a shared step count
    this is exactly ``torch.optim.AdamW`` with ``weight_decay = l2_factor / lr``.
    """

    def __init__(self, params, lr, l2_factor=0.0, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr, l2_factor)
        self.b1 = [_per_run(betas[0], p) for p in self.params]
        self.b2 = [_per_run(betas[1], p) for p in self.params]
        self.eps = eps
        self.moments_reset_ok = False

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g, s = p.grad, self.state[i]
            if not s:
                s.update(m=torch.zeros_like(p), v=torch.zeros_like(p), step=torch.zeros_like(p))
            if "c1" not in s:  # b1^t and b2^t per entry, kept as running products (a pow per entry
                # and step cost as much as the rest of the step); from the count when resuming an
                # older checkpoint
                s["c1"], s["c2"] = self.b1[i] ** s["step"], self.b2[i] ** s["step"]
            if self.decays:
                p.mul_(self.keep[i])
            b1, b2 = self.b1[i], self.b2[i]
            s["m"].mul_(b1).add_((1 - b1) * g)
            s["v"].mul_(b2).addcmul_(g, g * (1 - b2))
            s["step"].add_(1.0)
            s["c1"].mul_(b1)
            s["c2"].mul_(b2)
            m_hat = s["m"] / (1 - s["c1"])
            v_hat = s["v"] / (1 - s["c2"])
            p.addcdiv_(m_hat * self.lr[i], v_hat.sqrt_().add_(self.eps), value=-1.0)
