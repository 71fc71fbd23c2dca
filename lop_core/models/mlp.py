"""A population of R independent MLPs trained in one batched step.

Every parameter carries a leading run dimension R: a hidden layer's weight is [R, out, in] (rows
are a unit's incoming weights, as in ``nn.Linear``), its bias [R, out]. The forward pass is one
``baddbmm`` per layer for all runs, so R runs cost little more than one on a GPU. Run r of a
population computes exactly what the same seed computes alone (up to float rounding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {
    "relu": torch.relu,
    "leaky_relu": F.leaky_relu,  # slope 0.01, torch's default (as in the reference)
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
    "silu": F.silu,
}
_KAIMING_GAIN = {
    "relu": math.sqrt(2.0),
    "leaky_relu": math.sqrt(2.0 / (1 + 0.01**2)),
    "tanh": 5.0 / 3.0,
    "sigmoid": 1.0,
}


def init_std(activation: str, fan_in: int, fan_out: int) -> float:
    """Std of the reference's normal init (reference_code.md §1.4).

    Kaiming-normal (fan_in mode) with the activation's gain for relu, leaky relu, tanh and
    sigmoid; Xavier-normal for gelu and silu.
    """
    if activation in _KAIMING_GAIN:
        return _KAIMING_GAIN[activation] / math.sqrt(fan_in)
    return math.sqrt(2.0 / (fan_in + fan_out))


class PopulationMLP(nn.Module):
    """R MLPs ``in -> width x depth -> out`` with optional post-activation layer norm.

    Args:
        generators: one generator per run; run r's initial weights are drawn from ``generators[r]``.
        in_features, width, depth, out_features: the architecture (784, h, 3, 10 in the paper).
        activation: hidden nonlinearity (a key of ``_ACTIVATIONS``).
        layer_norm: apply ``LN(act(Wx + b))`` in every hidden layer (gain 1, bias 0 at init).
        device: where the parameters live.

    Attributes:
        features: after a forward pass, the post-activation (pre-LN) output of every hidden layer,
            each [R, B, width]; the unit methods and the correlates read them.
    """

    def __init__(
        self,
        generators: list[torch.Generator],
        in_features: int = 784,
        width: int = 100,
        depth: int = 3,
        out_features: int = 10,
        activation: str = "relu",
        layer_norm: bool = False,
        device="cpu",
    ):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(_ACTIVATIONS)}")
        self.num_runs = len(generators)
        self.activation = activation
        self.act = _ACTIVATIONS[activation]
        self.width, self.depth, self.layer_norm = width, depth, layer_norm
        sizes = [in_features] + [width] * depth + [out_features]
        r = self.num_runs
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.stds: list[float] = []  # init std of each weight matrix (for reinitialization)
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            std = init_std(activation, fan_in, fan_out)
            w = torch.empty(r, fan_out, fan_in)
            for run, g in enumerate(generators):
                w[run].normal_(0.0, std, generator=g)
            self.weights.append(nn.Parameter(w.to(device)))
            self.biases.append(nn.Parameter(torch.zeros(r, fan_out, device=device)))
            self.stds.append(std)
        self.ln_gains = nn.ParameterList()
        self.ln_biases = nn.ParameterList()
        if layer_norm:
            for _ in range(depth):
                self.ln_gains.append(nn.Parameter(torch.ones(r, width, device=device)))
                self.ln_biases.append(nn.Parameter(torch.zeros(r, width, device=device)))
        self.features: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [R, B, out] of inputs ``x`` [R, B, in] (run r's batch is ``x[r]``).

        Internally activations are kept feature-major, [R, features, B], and each layer computes
        ``W @ h + b``: the weight gradient ``dz @ h^T`` then comes out in the parameter's own
        [R, out, in] layout, which saves a strided copy per weight per step.
        """
        feats = []
        h = x.mT  # [R, in, B]
        for k in range(self.depth):
            a = self.act(torch.baddbmm(self.biases[k].unsqueeze(-1), self.weights[k], h))  # [R, width, B]
            feats.append(a.mT)  # [R, B, width] views for the methods and the metrics
            if self.layer_norm:
                a = F.layer_norm(a.mT, (self.width,), eps=1e-5)  # [R, B, width]
                a = torch.addcmul(self.ln_biases[k].unsqueeze(1), a, self.ln_gains[k].unsqueeze(1)).mT
            h = a
        self.features = feats
        return torch.baddbmm(self.biases[-1].unsqueeze(-1), self.weights[-1], h).mT  # [R, B, out]

    def parameter_groups(self) -> list[tuple[str, nn.Parameter]]:
        """(kind, parameter) for every tensor; kind is ``weight``, ``bias``, ``ln_gain`` or ``ln_bias``."""
        out = [("weight", w) for w in self.weights] + [("bias", b) for b in self.biases]
        out += [("ln_gain", g) for g in self.ln_gains] + [("ln_bias", b) for b in self.ln_biases]
        return out
