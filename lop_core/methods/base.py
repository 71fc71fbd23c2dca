"""The common interface of every plasticity method.

A method is one object per population, built from the model, the optimizer and the configs of
the population's runs. The training loop calls its hooks at fixed points; a hook edits weights
*and* the matching optimizer state in place and returns a small dict of what it did (for example
counts of reset units per layer) for logging. The plain learner ("base") is this class itself:
every hook does nothing.

Below the class are the small primitives the resetting methods share: argument checks, the
choice of the lowest-utility entries, and reinitialization of masked entries from a parameter's
initial distribution with every run drawing from its own generator.
"""

from __future__ import annotations

from typing import Any

import torch

from lop_core.errors import ConfigError
from lop_core.optim import MOMENTS_UNDER_ADAM, STATE_RESETS


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
        #: (kind, layer) of every parameter in ``optimizer.params`` order (see ``init_dist``).
        self.slots: list[tuple[str, int]] = []
        if model is not None and optimizer is not None:
            groups = model.parameter_groups()
            if [id(p) for _, p in groups] != [id(p) for p in optimizer.params]:
                raise ValueError("the optimizer must hold model.parameter_groups(), in that order")
            seen: dict[str, int] = {}
            for kind, _ in groups:
                self.slots.append((kind, seen.get(kind, 0)))
                seen[kind] = seen.get(kind, 0) + 1

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

    def before_step(self, step: int) -> dict[str, Any] | None:
        """Called after the backward pass and before the optimizer's step (``step`` counts from 1):
        a method that adds a penalty's gradient to ``.grad`` does it here, so that the optimizer
        treats the penalty as part of the loss."""
        return None

    def after_step(self, step: int) -> dict[str, Any] | None:
        """Called after every optimizer step; ``step`` counts from 1."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # ---- helpers for the methods ---------------------------------------------------------------

    @property
    def num_runs(self) -> int:
        return len(self.cfgs)

    @property
    def params(self) -> list[torch.Tensor]:
        """Every parameter in ``optimizer.params`` order: index i is the optimizer's slot i."""
        return self.optimizer.params

    def host_args(self, name: str) -> list:
        """The hyperparameter ``name`` of every run as Python values (no device round trip)."""
        return [cfg.method_args[name] for cfg in self.cfgs]

    def shared_arg(self, name: str):
        """A hyperparameter all runs of the population must share (the string choices)."""
        values = set(self.host_args(name))
        if len(values) != 1:
            raise ValueError(f"the runs of one population must share {name!r}; got {sorted(values)}")
        return values.pop()

    def slot(self, kind: str, layer: int) -> int:
        """Index in ``optimizer.params`` of the ``layer``-th parameter of ``kind`` (e.g. "bias", 2)."""
        return self.slots.index((kind, layer))

    def init_dist(self, index: int) -> tuple[float, float]:
        """(mean, std) of the initial normal distribution of parameter ``index``.

        Weights of layer k: N(0, ``model.stds[k]``), or U(-b, b) with b = ``model.stds[k]`` for a
        model with ``uniform_init`` (the spread is then the bound); biases and layer-norm biases:
        0; layer-norm gains: 1 (reference_code.md §1.4 and §2.2).
        """
        kind, layer = self.slots[index]
        if kind == "weight":
            return 0.0, self.model.stds[layer]
        return (1.0, 0.0) if kind == "ln_gain" else (0.0, 0.0)

    def gradient(self, index: int) -> torch.Tensor | None:
        """The gradient of parameter ``index`` from the last backward pass (None if it has none)."""
        return self.params[index].grad

    def draw_init(self, run: int, index: int, count: int) -> torch.Tensor:
        """``count`` fresh values of parameter ``index``'s initial distribution for run ``run`` (CPU).

        Here N(``init_dist(index)``), or U(-b, b) for the weights of a model with ``uniform_init``;
        a model with other initial distributions (the ViT's) overrides this with ``init_dist``.
        """
        mean, spread = self.init_dist(index)
        if self.slots[index][0] == "weight" and getattr(self.model, "uniform_init", False):
            return torch.empty(count).uniform_(-spread, spread, generator=self.generators[run])
        return self.draw_normal(run, (count,), mean, spread)

    def draw_normal(self, run: int, shape, mean: float, std: float) -> torch.Tensor:
        """N(mean, std) float32 values from run ``run``'s own generator, on the CPU.

        Every draw of run r comes from its own CPU generator, so run r draws exactly what it
        would draw alone, whatever the population and the device.
        """
        out = torch.empty(shape)
        return out.normal_(mean, std, generator=self.generators[run]) if std > 0 else out.fill_(mean)

    def reset_optimizer_state(self, index: int, mask: torch.Tensor) -> None:
        """Forget the optimizer state of the reinitialized entries ``mask`` of parameter ``index``,
        as the method's ``state_reset`` says (``none`` is the reference's behaviour, §8 bug 6)."""
        self.optimizer.reset_state(index, mask.expand_as(self.params[index]), self.shared_arg("state_reset"))

    @staticmethod
    def counts(values, like: torch.Tensor) -> torch.Tensor:
        """Per-run counts [R] for the loop's metrics: float32 on ``like``'s device."""
        return to_device(torch.as_tensor(values, dtype=torch.float32), like)


def to_device(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Copy the host tensor ``t`` to ``like``'s device without making the host wait for the GPU.

    On CUDA the copy goes through pinned memory with ``non_blocking=True`` (PyTorch's caching host
    allocator keeps the pinned buffer alive until the copy is done), so the queued GPU work is not
    drained; elsewhere it is a plain ``.to``.
    """
    if like.device.type == "cuda":
        return t.pin_memory().to(like.device, non_blocking=True)
    return t.to(like.device)


# ---- argument checks -----------------------------------------------------------------------------


def check(ok: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def check_at_least(cfg, name: str, low: float, note: str = "") -> None:
    """The number hyperparameter ``name`` of ``cfg`` must be at least ``low`` (``note``: why, in words)."""
    value = cfg.method_args[name]
    check(value >= low, f"{cfg.method}: {name} must be >= {low:g}{note}, got {value}")


def check_choice(cfg, name: str, choices) -> None:
    """The string hyperparameter ``name`` of ``cfg`` must be one of ``choices``."""
    value = cfg.method_args[name]
    check(value in choices, f"{cfg.method}: {name} {value!r} is unknown; choose one of {list(choices)}")


def check_state_reset(cfg) -> None:
    """``state_reset`` is a known choice, and not ``moments`` under AdamW (``optim.MOMENTS_UNDER_ADAM``)."""
    check_choice(cfg, "state_reset", STATE_RESETS)
    moments = cfg.method_args["state_reset"] == "moments"
    check(not (moments and getattr(cfg, "optimizer", None) == "adamw"), f"{cfg.method}: {MOMENTS_UNDER_ADAM}")


# ---- selection and reinitialization primitives ---------------------------------------------------


def lowest_first(utility: torch.Tensor, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """Indices that sort every row of ``utility`` [R, N] ascending, ineligible entries last.

    The sort is stable, so ties (many zero utilities, say) go to the lowest index, in a
    population exactly as alone.
    """
    if eligible is not None:
        utility = utility.masked_fill(~eligible, float("inf"))
    return torch.argsort(utility, dim=-1, stable=True)


def take_first(order: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Bool mask [R, N]: True at the first ``counts[r]`` entries of ``order[r]`` (no host sync)."""
    ranks = torch.arange(order.shape[-1], device=order.device)
    chosen = ranks < to_device(counts, order).unsqueeze(-1)  # [R, N]: True for ranks < counts[r]
    return torch.zeros_like(chosen).scatter_(-1, order, chosen)


@torch.no_grad()
def fill_masked(method: Method, index: int, mask: torch.Tensor, counts: list[int], resample: bool = True):
    """Reinitialize the entries ``mask`` of parameter ``index`` from its initial distribution.

    Args:
        method: gives the run generators and the parameter's initial distribution.
        index: slot of the parameter in ``optimizer.params``.
        mask: bool, broadcastable to the parameter; True where an entry is reinitialized.
        counts: the number of True entries of every run (host ints): run r draws exactly that many.
        resample: draw fresh values (``method.draw_init``); ``False`` sets the distribution's mean
            (SWR's ``mean``), as does a distribution of zero spread.
    """
    p = method.params[index]
    mean, spread = method.init_dist(index)
    mask = mask.expand_as(p)
    if not resample or spread == 0:
        p.masked_fill_(mask, mean)
        return
    draws = [method.draw_init(r, index, c) for r, c in enumerate(counts) if c]
    if draws:
        # masked_scatter_ fills the True entries in row-major order: run 0's first, then run 1's...
        p.masked_scatter_(mask, to_device(torch.cat(draws), p).to(p.dtype))
