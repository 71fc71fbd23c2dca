"""A contiguous block of a population's runs, seen as a population of its own.

A population may mix methods (and their string choices): runs ``start:stop`` of one method get one
method object, built on a ``RunSlice`` whose model and optimizer present views ``[start:stop]`` of
every parameter, gradient, feature and optimizer-state tensor. A method edits its runs' entries in
place through the views and never sees another method's runs, so each run computes what it would
compute alone (to float rounding, as in any population).
"""

from __future__ import annotations

import torch


class _SliceModel:
    """The parts of ``PopulationMLP`` a method reads, restricted to runs ``start:stop``."""

    def __init__(self, model, views: dict[str, list[torch.Tensor]], start: int, stop: int):
        self._model, self._start, self._stop = model, start, stop
        self.weights, self.biases = views["weight"], views["bias"]
        self.ln_gains, self.ln_biases = views["ln_gain"], views["ln_bias"]
        self.num_runs = stop - start
        for name in ("width", "depth", "layer_norm", "activation", "stds", "crelu", "skip_connections"):
            setattr(self, name, getattr(model, name))
        self.uniform_init = getattr(model, "uniform_init", False)

    @property
    def features(self) -> list[torch.Tensor]:
        """The last forward pass's hidden features of these runs, each [runs, B, width]."""
        return [h[self._start : self._stop] for h in self._model.features]

    def parameter_groups(self) -> list[tuple[str, torch.Tensor]]:
        out = [("weight", w) for w in self.weights] + [("bias", b) for b in self.biases]
        return out + [("ln_gain", g) for g in self.ln_gains] + [("ln_bias", b) for b in self.ln_biases]


class _SliceOptimizer:
    """The parts of a population optimizer a method uses, restricted to runs ``start:stop``."""

    def __init__(self, optimizer, params: list[torch.Tensor], start: int, stop: int):
        self._optimizer, self._start, self._stop = optimizer, start, stop
        self.params = params
        self.moments_reset_ok = optimizer.moments_reset_ok

    @property
    def state(self) -> list[dict[str, torch.Tensor]]:
        """Views of the parent's per-entry state (empty before the parent's first step)."""
        return [{k: v[self._start : self._stop] for k, v in s.items()} for s in self._optimizer.state]

    def reset_state(self, index: int, mask: torch.Tensor, what: str = "moments") -> None:
        """``PopulationOptimizer.reset_state`` for these runs: ``mask`` covers them alone."""
        full = torch.zeros_like(self._optimizer.params[index], dtype=torch.bool)
        full[self._start : self._stop] = mask
        self._optimizer.reset_state(index, full, what)


class RunSlice:
    """Runs ``start:stop`` of a population: ``model`` and ``optimizer`` views for one method.

    Call ``refresh()`` after every backward pass: it points the views' ``.grad`` at the slices of
    the new gradients (a backward pass makes new gradient tensors).
    """

    def __init__(self, model, optimizer, start: int, stop: int):
        self.start, self.stop = start, stop
        groups = model.parameter_groups()
        self._parents = [p for _, p in groups]
        self._views = [p.detach()[start:stop] for p in self._parents]
        by_kind: dict[str, list[torch.Tensor]] = {"weight": [], "bias": [], "ln_gain": [], "ln_bias": []}
        for (kind, _), view in zip(groups, self._views, strict=True):
            by_kind[kind].append(view)
        self.model = _SliceModel(model, by_kind, start, stop)
        self.optimizer = _SliceOptimizer(optimizer, self._views, start, stop)

    def refresh(self) -> None:
        for parent, view in zip(self._parents, self._views, strict=True):
            view.grad = None if parent.grad is None else parent.grad[self.start : self.stop]
