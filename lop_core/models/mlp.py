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
#: Activations only the population MLP offers: CReLU [relu(z), relu(-z)] doubles each layer's width.
MLP_ONLY_ACTIVATIONS = ("crelu",)
_KAIMING_GAIN = {
    "relu": math.sqrt(2.0),
    "crelu": math.sqrt(2.0),
    "leaky_relu": math.sqrt(2.0 / (1 + 0.01**2)),
    "tanh": 5.0 / 3.0,
    "sigmoid": 1.0,
}


#: Initializations: ``kaiming_normal`` the SWR paper's code (every layer, the output included, with the
#: activation's gain; reference_code.md §1.4); ``kaiming_uniform`` Dohare's ``deep_ffnn``
#: (U(-b, b), b = gain * sqrt(3 / fan_in), the activation's gain in the hidden layers and the linear
#: gain 1 at the output; peer_code.md §3.1).
INITS = ("kaiming_normal", "kaiming_uniform")


def init_bound(activation: str, fan_in: int, output: bool) -> float:
    """Bound b of Dohare's Kaiming-uniform init U(-b, b): gain * sqrt(3 / fan_in), gain 1 at the output."""
    gain = 1.0 if output else _KAIMING_GAIN.get(activation, 1.0)
    return gain * math.sqrt(3.0 / fan_in)


def init_std(activation: str, fan_in: int, fan_out: int) -> float:
    """Std of the reference's normal init (reference_code.md §1.4).

    Kaiming-normal (fan_in mode) with the activation's gain for relu (and CReLU), leaky relu, tanh
    and sigmoid; Xavier-normal for gelu and silu.
    """
    if activation in _KAIMING_GAIN:
        return _KAIMING_GAIN[activation] / math.sqrt(fan_in)
    return math.sqrt(2.0 / (fan_in + fan_out))


class PopulationMLP(nn.Module):
    """R MLPs ``in -> width x depth -> out`` with optional post-activation layer norm and skips.

    Args:
        generators: one generator per run; run r's initial weights are drawn from ``generators[r]``.
        in_features, width, depth, out_features: the architecture (784, h, 3, 10 in the paper).
        activation: hidden nonlinearity (a key of ``_ACTIVATIONS``, or ``crelu``: each layer then
            has width/2 pre-activations z and outputs the width features [relu(z), relu(-z)], as in
            the reference, reference_code.md §1.4).
        layer_norm: apply ``LN(act(Wx + b))`` in every hidden layer (gain 1, bias 0 at init).
        skip_connections: post-activation skip connections from the second hidden layer on: a
            layer's output is ``act(W y + b) + y``, y its input (layer norm, when on, comes after
            the sum), as in the reference's final runs.
        device: where the parameters live.
        init: ``kaiming_normal`` (default, the SWR paper's code) or ``kaiming_uniform`` (Dohare's);
            see ``INITS``. Resetting methods redraw weights from the same distribution.

    Attributes:
        features: after a forward pass, the post-activation output of every hidden layer (before
            the skip sum and layer norm), each [R, B, width]; the unit methods and the correlates
            read them.
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
        skip_connections: bool = False,
        init: str = "kaiming_normal",
    ):
        super().__init__()
        known = sorted([*_ACTIVATIONS, *MLP_ONLY_ACTIVATIONS])
        if activation not in known:
            raise ValueError(f"unknown activation {activation!r}; choose one of {known}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {list(INITS)}")
        self.uniform_init = init == "kaiming_uniform"
        self.crelu = activation == "crelu"
        if self.crelu and width % 2:
            raise ValueError(f"crelu needs an even width (width/2 pre-activations per layer), got {width}")
        self.num_runs = len(generators)
        self.activation = activation
        self.act = _crelu if self.crelu else _ACTIVATIONS[activation]
        self.width, self.depth, self.layer_norm = width, depth, layer_norm
        self.skip_connections = skip_connections
        # rows of each layer's weight: its pre-activations (half the features with CReLU)
        rows = [width // 2 if self.crelu else width] * depth + [out_features]
        fans_in = [in_features] + [width] * depth
        r = self.num_runs
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        #: spread of each weight matrix's init, for reinitialization: the std of the normal init,
        #: or the bound b of the uniform one (``uniform_init``)
        self.stds: list[float] = []
        for k, (fan_in, fan_out) in enumerate(zip(fans_in, rows, strict=True)):
            w = torch.empty(r, fan_out, fan_in)
            if self.uniform_init:
                std = init_bound(activation, fan_in, output=k == depth)
                for run, g in enumerate(generators):
                    w[run].uniform_(-std, std, generator=g)
            else:
                std = init_std(activation, fan_in, fan_out)
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
            if self.skip_connections and k > 0:
                a = a + h
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


def _crelu(z: torch.Tensor) -> torch.Tensor:
    """CReLU of feature-major pre-activations [R, units, B]: [relu(z), relu(-z)], [R, 2 units, B]."""
    return torch.cat([torch.relu(z), torch.relu(-z)], dim=1)
